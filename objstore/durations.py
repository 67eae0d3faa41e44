"""Go-style durations ("4380h", "1h30m", "500ms") and integer seconds, as Gofer's configuration has them."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from fractions import Fraction

from objstore.errors import ConfigError

__all__ = ["DURATION_HINT", "format_duration", "parse_duration", "to_timedelta"]

DURATION_HINT = 'write it like "4380h", "3h", "1h30m", "15m", "30s", "500ms", or as whole seconds (e.g. 300)'

# Microseconds per unit; Go's units. Fractions keep "1.5h" or "0.1s" exact before rounding to timedelta's
# microsecond resolution.
_UNITS: dict[str, Fraction] = {
    "ns": Fraction(1, 1000),
    "us": Fraction(1),
    "µs": Fraction(1),  # U+00B5 MICRO SIGN, as Go prints it
    "μs": Fraction(1),  # U+03BC GREEK SMALL LETTER MU
    "ms": Fraction(1000),
    "s": Fraction(1_000_000),
    "m": Fraction(60_000_000),
    "h": Fraction(3_600_000_000),
}
# Longest units first so that "ms" is not read as "m" followed by garbage.
_UNIT_ALTERNATION = "|".join(sorted(_UNITS, key=len, reverse=True))
_PART = re.compile(rf"(\d+(?:\.\d*)?|\.\d+)({_UNIT_ALTERNATION})")
_WHOLE = re.compile(rf"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:{_UNIT_ALTERNATION}))+")


def to_timedelta(value: object) -> timedelta:
    """Convert a duration; raise ``ValueError`` whose message says what was wrong (no location).

    Meant for validators, which add the location themselves; other callers want :func:`parse_duration`.
    """
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise ValueError(f"a negative duration ({format_duration(value)}) is not allowed")
        return value
    # bool is an int subclass; `true` as a duration is a mistake, not 1 second.
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; {DURATION_HINT}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} seconds is negative; {DURATION_HINT}")
        return timedelta(seconds=value)
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{value!r} seconds is not a non-negative number; {DURATION_HINT}")
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise ValueError(f"a {type(value).__name__} is not a duration; {DURATION_HINT}")
    text = value.strip()
    if text.isascii() and text.isdigit():
        return timedelta(seconds=int(text))
    if text.startswith("-"):
        raise ValueError(f"{value!r} is negative; {DURATION_HINT}")
    body = text.removeprefix("+")
    if not _WHOLE.fullmatch(body):
        raise ValueError(f"{value!r} is not a duration; {DURATION_HINT}")
    micros = sum((Fraction(number) * _UNITS[unit] for number, unit in _PART.findall(body)), Fraction(0))
    try:
        return timedelta(microseconds=round(micros))
    except OverflowError:
        raise ValueError(f"{value!r} is too long a duration; {DURATION_HINT}") from None


def parse_duration(value: str | int | float | timedelta, *, what: str) -> timedelta:
    """Parse "4380h", "3h", "15m", "30s", "500ms", "1h30m" or integer seconds (int or digit-only string).

    Raises :class:`ConfigError` naming ``what`` (e.g. ``"api.event_log_retention"``) for a negative or
    unreadable value.
    """
    try:
        return to_timedelta(value)
    except ValueError as exc:
        problem = str(exc)
    raise ConfigError(f"{what}: {problem}")


def format_duration(td: timedelta) -> str:
    """Write a duration in the largest single Go unit that is exact: "4380h", "3h", "15m", "90s", "500ms".

    ``parse_duration(format_duration(td), what=...) == td`` for every non-negative ``td``.
    """
    micros = (td.days * 86_400 + td.seconds) * 1_000_000 + td.microseconds
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    if micros == 0:
        return "0s"
    for unit in ("h", "m", "s", "ms"):
        size = int(_UNITS[unit])
        if micros % size == 0:
            return f"{sign}{micros // size}{unit}"
    return f"{sign}{micros}us"
