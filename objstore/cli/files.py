"""Local files the commands read and write: input streams, and output files that appear only when complete."""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from objstore.cli.output import regular_file_size
from objstore.errors import ObjStoreError, StorageError

__all__ = ["COPY_CHUNK", "atomic_output", "copy_stream", "input_stream"]

COPY_CHUNK = 1 << 20


@contextlib.contextmanager
def input_stream(name: str) -> Iterator[tuple[BinaryIO, int | None]]:
    """The file ``name`` opened in binary mode, or stdin's binary buffer for ``-``; and its size if known."""
    if name == "-":
        stdin = sys.stdin.buffer
        yield stdin, regular_file_size(stdin)
        return
    try:
        stream = open(name, "rb")  # noqa: SIM115 - closed below, after the caller is done
    except OSError as error:
        raise StorageError(f"cannot read {name}: {error.strerror}") from None
    with stream:
        yield stream, regular_file_size(stream)


def copy_stream(source: BinaryIO, target: BinaryIO, advance: Callable[[int], None] | None = None) -> int:
    """Copy in bounded chunks; ``advance(n)`` (if given) after each chunk. Returns the bytes copied."""
    total = 0
    while True:
        chunk = source.read(COPY_CHUNK)
        if not chunk:
            return total
        target.write(chunk)
        total += len(chunk)
        if advance is not None:
            advance(len(chunk))


def _new_file_mode(path: Path) -> int:
    """The mode a plain ``open(path, "wb")`` would give: an existing file's, else 0666 minus the umask."""
    with contextlib.suppress(OSError):
        return stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[BinaryIO]:
    """A binary file that becomes ``path`` only if the block completes; on any error no file is left.

    The bytes go to a temp file beside ``path`` (same filesystem) that is fsynced and renamed over it.
    """
    folder = path.parent
    try:
        fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=folder)
    except OSError as error:
        raise StorageError(
            f"cannot write {path}: {error.strerror}; check the folder and its permissions"
        ) from None
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fchmod(out.fileno(), _new_file_mode(path))
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            temp.unlink()
        if isinstance(error, OSError) and not isinstance(error, ObjStoreError | BrokenPipeError):
            raise StorageError(f"cannot write {path}: {error.strerror or error}") from None
        raise
