"""Database URLs for people: the password never shown."""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["mask_password"]


def mask_password(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``; ``***`` for a URL that cannot be parsed
    (it might be a password pasted in the wrong place)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        return url.replace(f":{parts.password}@", ":***@", 1)
    except ValueError:
        return "***"
