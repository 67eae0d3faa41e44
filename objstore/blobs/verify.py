"""Reading stored content while checking it against its sha256 and size.

Backends return raw readers (:meth:`BlobBackend.open`); whoever hands bytes to a user wraps them in
:class:`VerifiedReader` so that damaged content raises :class:`~objstore.errors.IntegrityError` instead of
being returned as if it were good.

The expected size is treated as the end of the stream: the reader never returns more than ``size`` bytes,
and as soon as it has returned that many (or the raw stream ends early) it verifies, exactly once. A
consumer that reads until ``b""`` therefore always sees the verdict.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from typing import Any, BinaryIO

from objstore.blobs.fsutil import check_sha256
from objstore.errors import IntegrityError, InvalidValue

__all__ = ["VerifiedReader", "read_verified"]

_CHUNK = 1 << 20


class VerifiedReader(io.RawIOBase):
    """A non-seekable reader over ``raw`` that raises IntegrityError at the end if the bytes are wrong.

    Iterating yields chunks of up to ``chunk_size`` bytes (not lines). Closing closes ``raw``.
    """

    def __init__(self, raw: BinaryIO, *, sha256: str, size: int, what: str, chunk_size: int = _CHUNK) -> None:
        super().__init__()
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidValue(f"expected size of {what} must be a non-negative int, got {size!r}")
        if chunk_size < 1:
            raise InvalidValue(f"chunk_size must be positive, got {chunk_size}")
        self._raw = raw
        self._sha256 = check_sha256(sha256)
        self._size = size
        self._what = what
        self._chunk_size = chunk_size
        self._hasher = hashlib.sha256()
        self._pos = 0
        self._verified = False
        self._error: IntegrityError | None = None
        readinto: Callable[[Any], int | None] | None = getattr(raw, "readinto", None)
        self._raw_readinto = readinto

    # -- io.RawIOBase ----------------------------------------------------------------------------------

    def readable(self) -> bool:
        self._check_open()
        return True

    def seekable(self) -> bool:
        return False

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        self._check_open()
        remaining = self._size - self._pos
        if remaining <= 0:
            self._finish()
            return b""
        if size == 0:
            return b""
        # Read straight from raw into a fresh bytes object: no intermediate buffer, no extra copy.
        data = self._raw.read(size if size < remaining else remaining)
        if data:
            self._hasher.update(data)
            self._pos += len(data)
        if not data or self._pos >= self._size:
            self._finish()
        return data

    def readall(self) -> bytes:
        self._check_open()
        parts: list[bytes] = []
        # One request for everything left: a buffered raw reader fills a single bytes object, so reading
        # 256 MiB is one allocation and one hash update (loops only if raw returns short reads).
        while (remaining := self._size - self._pos) > 0:
            data = self._raw.read(remaining)
            if not data:
                break
            self._hasher.update(data)
            self._pos += len(data)
            parts.append(data)
        self._finish()
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    def readinto(self, buffer: Any) -> int:
        self._check_open()
        view = memoryview(buffer)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        remaining = self._size - self._pos
        if remaining <= 0:
            self._finish()
            return 0
        if not len(view):
            return 0
        if len(view) > remaining:
            view = view[:remaining]
        if self._raw_readinto is not None:
            n = self._raw_readinto(view) or 0
        else:
            data = self._raw.read(len(view))
            n = len(data)
            view[:n] = data
        if n:
            self._hasher.update(view[:n])
            self._pos += n
        if not n or self._pos >= self._size:
            self._finish()
        return n

    def __next__(self) -> bytes:
        chunk = self.read(self._chunk_size)
        if not chunk:
            raise StopIteration
        return chunk

    def close(self) -> None:
        if not self.closed:
            try:
                self._raw.close()
            finally:
                super().close()

    # -- verification ----------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f"I/O operation on closed reader of {self._what}")

    def _finish(self) -> None:
        """Verify once at the logical end; later calls repeat the verdict without re-checking."""
        if self._error is not None:
            raise self._error
        if self._verified:
            return
        problem: str | None = None
        if self._pos < self._size:
            problem = f"it ends after {self._pos} bytes, {self._size} expected"
        elif self._pos > self._size or self._raw.read(1):
            problem = f"it is longer than the {self._size} bytes expected"
        else:
            actual = self._hasher.hexdigest()
            if actual != self._sha256:
                problem = f"its {self._size} bytes hash to {actual}"
        if problem is None:
            self._verified = True
            return
        self._error = IntegrityError(
            f"stored content of {self._what} does not match its sha256 {self._sha256}: {problem}; "
            "run `objstore check` to find damaged content"
        )
        raise self._error


def read_verified(raw: BinaryIO, sha256: str, size: int, what: str) -> bytes:
    """Read all of ``raw`` (closing it), verified against ``sha256`` and ``size``; one hash pass."""
    try:
        reader = VerifiedReader(raw, sha256=sha256, size=size, what=what)
    except BaseException:
        raw.close()
        raise
    with reader:
        return reader.readall()
