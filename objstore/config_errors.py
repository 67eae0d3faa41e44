"""Turning pydantic's validation errors about settings into one-line :class:`ConfigError` messages.

Each message names the setting (``blobs.stores[0].bucket``), where its value came from (the file, an
environment variable, an argument to ``Settings.load`` or the default) and what to do about it. The
settings models live in :mod:`objstore.config`, which imports this module: what is needed of them is passed
in.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

__all__ = ["ARGUMENT", "ENVIRONMENT", "LocatedError", "join_problems", "validation_problems"]

# Labels of the sources given to validation_problems() that are worded from the data, not the label.
ARGUMENT = "argument"
ENVIRONMENT = "env"


class LocatedError(ValueError):
    """A validator's error about a key below the model that raised it (pydantic would report the model)."""

    def __init__(self, loc: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


def validation_problems(
    exc: ValidationError,
    sources: tuple[tuple[Mapping[str, Any], str], ...],
    env_vars: Mapping[tuple[str, ...], str],
    store_tags: Collection[str],
) -> list[str]:
    """One line per error in ``exc``.

    ``sources`` are the data each source contributed with its label (:data:`ARGUMENT`, :data:`ENVIRONMENT`
    or a description such as ``"in /etc/objstore.toml"``), highest precedence first; ``env_vars`` names the
    variable that set each setting path; ``store_tags`` are the ``type`` values of the blob store union.
    """
    return [_describe(error, sources, env_vars, store_tags) for error in exc.errors(include_url=False)]


def join_problems(problems: list[str]) -> str:
    """The text of one ConfigError reporting all of ``problems``."""
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} configuration problems:\n" + "\n".join(f"  {p}" for p in problems)


def _depth(data: Any, loc: tuple[str | int, ...]) -> int:
    """How many leading parts of ``loc`` exist in ``data``."""
    for depth, part in enumerate(loc):
        in_table = isinstance(data, Mapping) and isinstance(part, str) and part in data
        in_list = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if not (in_table or in_list):
            return depth
        data = data[part]
    return len(loc)


def _describe(
    error: ErrorDetails,
    sources: tuple[tuple[Mapping[str, Any], str], ...],
    env_vars: Mapping[tuple[str, ...], str],
    store_tags: Collection[str],
) -> str:
    loc: tuple[str | int, ...] = tuple(error["loc"])
    message: str = error["msg"]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, LocatedError):
        loc, message = (*loc, *cause.loc), str(cause)
    elif error["type"] == "value_error":
        message = message.removeprefix("Value error, ")
    elif error["type"] == "missing":
        message = "is required but not set; add it"
    else:
        message = f"{message}; correct the value"
    # Drop the union tag pydantic puts after a list index: blobs.stores[0].s3.bucket -> blobs.stores[0].bucket
    loc = tuple(p for i, p in enumerate(loc) if not (i and isinstance(loc[i - 1], int) and p in store_tags))
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "settings"
    # The source that set the deepest part of the location; ties go to the higher precedence.
    best, origin = 0, "default value"
    for data, label in sources:
        depth = _depth(data, loc)
        if depth > best:
            best, origin = depth, label
    if origin == ARGUMENT:
        origin = "argument to Settings.load"
    elif origin == ENVIRONMENT:
        named = [name for path, name in env_vars.items() if tuple(loc[: len(path)]) == path]
        origin = f"environment variable {named[-1]}" if named else "environment"
    return f"{key} ({origin}): {message}"
