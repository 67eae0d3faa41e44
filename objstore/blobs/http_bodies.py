"""Request bodies on the blob server: Content-Length or chunked framing, a size limit, and what to do with
a body nobody reads (the connection can only serve another request once the body is consumed)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from email.message import Message

from objstore.blobs.http_protocol import CHUNK

__all__ = ["BodyError", "ClientGone", "RequestBody"]

_DRAIN_LIMIT = 1 << 20  # an unread body up to this size is read and dropped to keep the connection


class BodyError(Exception):
    """The body cannot be stored (malformed, too large); raised inside the chunk iterator, so staging
    cleans up, and answered with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ClientGone(Exception):
    """The client disconnected or stalled mid-request: nobody to answer."""


class RequestBody:
    """The body of one request. ``reusable`` turns False when the connection cannot carry another
    request (framing lost or body left unread); ``linger`` when a large unread body is still coming."""

    def __init__(self, rfile: io.BufferedIOBase, headers: Message, limit: int | None) -> None:
        self._rfile = rfile
        self._limit = limit
        self.received = 0
        self.reusable = True
        self.linger = False
        self.chunked = False
        self.length: int | None = None  # declared by Content-Length
        encoding, declared = headers.get("Transfer-Encoding"), headers.get("Content-Length")
        if encoding is not None:
            # Both headers at once is how requests are smuggled past proxies: refuse.
            if declared is not None or encoding.strip().lower() != "chunked":
                self.reusable = False
                raise BodyError(400, "unsupported Transfer-Encoding (only chunked, without Content-Length)")
            self.chunked = True
        elif declared is not None:
            if not declared.strip().isdigit():
                self.reusable = False
                raise BodyError(400, "malformed Content-Length")
            self.length = int(declared)
        self._left = self.length or 0
        self._pending = self.chunked or self._left > 0

    @property
    def missing(self) -> bool:
        """Neither Content-Length nor chunked: nothing says where the body ends."""
        return not self.chunked and self.length is None

    def chunks(self) -> Iterator[bytes]:
        """The body in pieces of up to CHUNK bytes; ClientGone if it ends early, BodyError if malformed."""
        self._pending = False
        if self.chunked:
            yield from self._chunked()
            return
        read = self._rfile.read
        while self._left:
            try:
                data = read(min(CHUNK, self._left))
            except OSError as error:
                self.reusable = False
                raise ClientGone(f"upload stopped after {self.received} bytes: {error}") from None
            if not data:
                self.reusable = False
                raise ClientGone(f"upload ended after {self.received} bytes, before its Content-Length")
            self._left -= len(data)
            self.received += len(data)
            yield data

    def _chunked(self) -> Iterator[bytes]:
        self.reusable = False  # until the whole body has arrived well-formed
        rfile = self._rfile
        try:
            while True:
                line = rfile.readline(1024)
                if not line.endswith(b"\n"):
                    raise ClientGone(f"upload ended after {self.received} bytes, mid chunk header")
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise BodyError(400, "malformed chunked encoding") from None
                if size == 0:
                    while rfile.readline(1024).strip():  # trailers: ignored
                        pass
                    self.reusable = True
                    return
                if self._limit is not None and self.received + size > self._limit:
                    raise BodyError(413, f"the body exceeds the limit of {self._limit} bytes")
                while size:
                    data = rfile.read(min(CHUNK, size))
                    if not data:
                        raise ClientGone(f"upload ended after {self.received} bytes, mid chunk")
                    size -= len(data)
                    self.received += len(data)
                    yield data
                if rfile.read(2) != b"\r\n":
                    raise BodyError(400, "malformed chunked encoding")
        except OSError as error:
            raise ClientGone(f"upload stopped after {self.received} bytes: {error}") from None

    def skip(self) -> None:
        """Before answering without reading the body: drop a small one, else give up the connection."""
        if not self._pending:
            return
        self._pending = False
        left = self._left
        if self.chunked or left > _DRAIN_LIMIT:
            self.reusable = False
            self.linger = True
            return
        try:
            while left and (data := self._rfile.read(min(CHUNK, left))):
                left -= len(data)
        except OSError:
            left = 1
        if left:
            self.reusable = False
