"""What the blob server and its client agree on: headers, sizes, tokens, and byte ranges."""

from __future__ import annotations

import ipaddress
import re

from objstore.errors import ConfigError

__all__ = [
    "CHUNK",
    "LIMIT_HEADER",
    "LIST_DEFAULT",
    "LIST_MAX",
    "MARKER_HEADER",
    "MODIFIED_HEADER",
    "Unsatisfiable",
    "check_token",
    "is_loopback",
    "parse_range",
]

CHUNK = 1 << 20  # bytes per read or write of a body: bounds memory per request
#: On every answer of a blob server, so a client pointed at another web server does not take its 404 for
#: "not stored" (which `objstore check --fix` would act on).
MARKER_HEADER = "X-Objstore-Blobs"
LIMIT_HEADER = "X-Max-Blob-Size"  # the server's upload limit, so a client can refuse before sending
MODIFIED_HEADER = "X-Modified-At"  # ISO 8601 with microseconds (Last-Modified only has seconds)
LIST_DEFAULT = 1000
LIST_MAX = 10_000

MIN_TOKEN = 16
_TOKEN = re.compile(r"[\x21-\x7e]+")  # what fits in a header after "Bearer "
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (where only local users can connect)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_token(token: object) -> bytes:
    """The token as bytes, or ConfigError if it is too short or does not fit in a header."""
    if not isinstance(token, str) or _TOKEN.fullmatch(token) is None or len(token) < MIN_TOKEN:
        raise ConfigError(
            f"the blob server token must be at least {MIN_TOKEN} printable ASCII characters without "
            "spaces; make one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    return token.encode("ascii")


class Unsatisfiable(Exception):
    """The range asked for starts after the end of the content."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One ``bytes=a-b`` range as (first, last), or None to send everything (RFC 9110 lets a server
    ignore ranges it does not support, such as several at once); raises :class:`Unsatisfiable`."""
    match = _RANGE.fullmatch(header.strip()) if header else None
    if match is None or match.group(0) == "bytes=-":
        return None
    first, last = match.groups()
    if not first:  # the last N bytes
        count = int(last)
        if not count or not size:
            raise Unsatisfiable
        return max(size - count, 0), size - 1
    start, end = int(first), int(last) if last else size - 1
    if start >= size:
        raise Unsatisfiable
    if end < start:
        return None
    return start, min(end, size - 1)
