"""Validation of namespaces, pipeline ids, object keys and secret names.

Every public entry point validates names before any I/O, so a bad name raises
:class:`~objstore.errors.InvalidName` and changes nothing.
"""

from __future__ import annotations

import re

from objstore.errors import InvalidName, InvalidValue

__all__ = ["validate_id", "validate_key", "validate_run_number", "validate_secret_name"]

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_KEY = re.compile(r"[A-Za-z0-9._/-]{1,255}")
_SECRET = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_BAD_SEGMENTS = frozenset(("", ".", ".."))


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def validate_id(value: object, what: str) -> str:
    """Check a namespace or pipeline id: 1-64 characters of ``[A-Za-z0-9_-]``."""
    if not isinstance(value, str) or _ID.fullmatch(value) is None:
        raise InvalidName(
            f"invalid {what} {_shown(value)}: use 1-64 characters of letters, digits, '_' and '-'"
        )
    return value


def validate_key(value: object) -> str:
    """Check an object key: 1-255 of ``[A-Za-z0-9._/-]``; no leading or trailing '/', and no empty,
    '.' or '..' segment."""
    if not isinstance(value, str) or _KEY.fullmatch(value) is None:
        raise InvalidName(
            f"invalid object key {_shown(value)}: "
            "use 1-255 characters of letters, digits, '.', '_', '-' and '/'"
        )
    # Cheap common case first: no dot and no doubled or edge slash means every segment is fine.
    if "." in value or "//" in value or value[0] == "/" or value[-1] == "/":
        for segment in value.split("/"):
            if segment in _BAD_SEGMENTS:
                raise InvalidName(
                    f"invalid object key {_shown(value)}: no leading or trailing '/', "
                    "and no empty, '.' or '..' path segment"
                )
    return value


def validate_secret_name(value: object) -> str:
    """Check a secret name: 1-128 characters of ``[A-Za-z0-9_.-]``."""
    if not isinstance(value, str) or _SECRET.fullmatch(value) is None:
        raise InvalidName(
            f"invalid secret name {_shown(value)}: use 1-128 characters of letters, digits, '_', '.' and '-'"
        )
    return value


def validate_run_number(value: object) -> int:
    """Check a run number: a positive int (bool is refused); raises InvalidValue."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidValue(f"invalid run number {_shown(value)}: runs are numbered 1, 2, 3, ...")
    return value
