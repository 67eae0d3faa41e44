"""Exit codes of the command line, and the one-line message each error prints.

The table is data so that the documentation, the tests and the handler cannot disagree. An error's code is
found by walking its class's MRO, so subclasses inherit their parent's code (``ObjectNotFound`` -> 4,
``WrongEncryptionKey`` -> 9, ``SchemaError`` -> 12 before ``StorageError`` -> 11).

=====  ===================================================================================
code   meaning
=====  ===================================================================================
0      success
1      ``check`` found problems it did not fix; ``db status --check`` found a database to
       upgrade; any other ``ObjStoreError``
2      usage error (click: unknown option, missing argument, unreadable input file)
3      ``ConfigError``: bad or missing configuration
4      ``NotFound``: object, run or secret not found
5      ``AlreadyExists``: put of an existing key without ``--overwrite``
6      ``InvalidName`` / ``InvalidValue``
7      ``RunExpired``: the run's objects have expired
8      ``IntegrityError``: stored bytes do not match their sha256
9      ``VaultError``: the secret store cannot be used (e.g. wrong encryption key)
10     ``StorageBusy``: the database stayed locked past the retry policy
11     ``StorageError``: database or blob store failure (disk full, permissions, I/O)
12     ``SchemaError``: the database schema is older or newer than this objstore
70     internal error (a bug): an exception outside objstore's error tree
130    interrupted (Ctrl-C)
141    stdout was closed early (broken pipe), e.g. ``objstore objects ls | head -1``
=====  ===================================================================================
"""

from __future__ import annotations

from collections.abc import Mapping

from objstore.errors import (
    AlreadyExists,
    ConfigError,
    IntegrityError,
    InvalidName,
    InvalidValue,
    NotFound,
    ObjStoreError,
    RunExpired,
    SchemaError,
    StorageBusy,
    StorageError,
    VaultError,
)

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_CODES",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OBJSTORE_ERROR",
    "EXIT_PROBLEMS",
    "EXIT_USAGE",
    "exit_code_for",
    "one_line",
]

EXIT_PROBLEMS = 1
EXIT_OBJSTORE_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

EXIT_CODES: Mapping[type[ObjStoreError], int] = {
    ConfigError: 3,
    NotFound: 4,
    AlreadyExists: 5,
    InvalidName: 6,
    InvalidValue: 6,
    RunExpired: 7,
    IntegrityError: 8,
    VaultError: 9,
    StorageBusy: 10,
    StorageError: 11,
    SchemaError: 12,
}


def exit_code_for(error: ObjStoreError) -> int:
    """The exit code of an objstore error: its own class's, else its nearest ancestor's in the table."""
    for cls in type(error).__mro__:
        code = EXIT_CODES.get(cls)
        if code is not None:
            return code
    return EXIT_OBJSTORE_ERROR


def one_line(error: BaseException) -> str:
    """The error's message on one line (a multi-line message, e.g. several config problems, is joined)."""
    parts = [part.strip() for part in str(error).splitlines() if part.strip()]
    if not parts:
        return type(error).__name__
    text = parts[0]
    for part in parts[1:]:
        text += (" " if text.endswith(":") else "; ") + part
    return text
