"""A raw, streaming, file-like reader over one S3 object, resuming after transient network errors.

Memory stays bounded by one chunk of the response (``chunk_size``, default 1 MiB): bytes are pulled from
obstore's response stream as the caller reads. If the connection breaks part-way, the reader asks again
for the rest (a ranged GET from the current offset, ``If-Match`` the ETag it started with, so it never
splices two versions of an object) under the backend's retry policy. It does not verify anything: wrap it
in :class:`objstore.blobs.verify.VerifiedReader`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

from obstore.exceptions import BaseError

from objstore.blobs.s3_retry import Retrier, classify
from objstore.errors import ObjStoreError

__all__ = ["S3Reader"]

# fetch(offset) -> the response body from ``offset`` to the end, as a stream of bytes chunks.
Fetch = Callable[[int], Iterator[bytes]]


class S3Reader(io.RawIOBase):
    """Non-seekable raw reader; ``read(n)`` may return fewer than ``n`` bytes (one chunk at a time)."""

    def __init__(
        self, stream: Iterator[bytes], *, size: int, fetch: Fetch, retrier: Retrier, what: str
    ) -> None:
        super().__init__()
        self._stream: Iterator[bytes] | None = stream
        self._size = size
        self._fetch = fetch
        self._retrier = retrier
        self._what = what
        self._chunk = b""
        self._offset = 0  # into _chunk
        self._pos = 0  # bytes handed to the caller so far

    @property
    def size(self) -> int:
        """The object's size as reported when it was opened."""
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def _fill(self) -> bool:
        """Make ``_chunk[_offset:]`` non-empty; False at the end of the object."""
        if self._offset < len(self._chunk):
            return True
        if self.closed:
            raise ValueError(f"I/O operation on closed reader of {self._what}")
        retry = 0
        while self._stream is not None:
            try:
                chunk = next(self._stream)
            except StopIteration:
                self._stream = None
                break
            except ObjStoreError:
                raise
            except (BaseError, OSError) as exc:
                if self._pos >= self._size:
                    self._stream = None  # every byte arrived; what follows is verified by the caller
                    break
                failure = classify(exc)
                policy = self._retrier.policy
                if failure.kind != "transient" or retry >= policy.max_retries:
                    raise self._retrier.failure_error(f"read {self._what}", exc, retry + 1) from None
                retry += 1
                self._retrier.sleep(policy.wait(retry, self._retrier.rng))
                # The ranged request is itself retried; its failure ends the read with a StorageError.
                self._stream = self._fetch(self._pos)
                continue
            if chunk:
                self._chunk = chunk
                self._offset = 0
                return True
        self._chunk = b""
        self._offset = 0
        return False

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        if size == 0 or not self._fill():
            return b""
        start = self._offset
        end = min(start + size, len(self._chunk))
        # A whole chunk goes out as is (no copy); a part of one is sliced.
        data = self._chunk if start == 0 and end == len(self._chunk) else self._chunk[start:end]
        self._offset = end
        self._pos += end - start
        return data

    def readall(self) -> bytes:
        parts = []
        while self._fill():
            parts.append(self.read(len(self._chunk) - self._offset))
        return b"".join(parts)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if not len(view) or not self._fill():
            return 0
        start = self._offset
        n = min(len(view), len(self._chunk) - start)
        view[:n] = self._chunk[start : start + n]
        self._offset = start + n
        self._pos += n
        return n

    def close(self) -> None:
        if not self.closed:
            self._stream = None  # dropping obstore's stream releases the connection
            self._chunk = b""
        super().close()
