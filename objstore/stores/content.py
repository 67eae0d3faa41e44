"""Where an object's bytes live: inline in its row when small, in the blob store when large.

Reading the caller's data happens here, before any transaction: the first ``threshold + 1`` bytes decide
inline or blob; a large value streams on into the blob backend's staging area in bounded memory.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from objstore.blobs.base import BlobBackend, StagedBlob
from objstore.blobs.verify import VerifiedReader
from objstore.errors import IntegrityError, InvalidValue

__all__ = ["Content", "ContentStore", "Readable", "Source"]

CHUNK_SIZE = 1 << 20


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


Source = bytes | bytearray | memoryview | Readable


@dataclass(slots=True)
class Content:
    """A value ready to be committed: inline bytes, or a staged blob."""

    sha256: str
    size: int
    inline: bytes | None
    staged: StagedBlob | None


def _read_exactly(source: Readable, limit: int) -> bytes:
    """Up to ``limit`` bytes: short reads (pipes, sockets) are repeated until EOF or the limit."""
    parts: list[bytes] = []
    wanted = limit
    while wanted > 0:
        chunk = source.read(min(wanted, CHUNK_SIZE))
        if not chunk:
            break
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise InvalidValue(
                f"the file object returned {type(chunk).__name__}, not bytes: open it in binary mode ('rb')"
            )
        parts.append(bytes(chunk))
        wanted -= len(chunk)
    return b"".join(parts)


def _chunks_after(first: bytes, source: Readable) -> Iterator[bytes]:
    yield first
    while True:
        chunk = source.read(CHUNK_SIZE)
        if not chunk:
            return
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise InvalidValue(
                f"the file object returned {type(chunk).__name__}, not bytes: open it in binary mode ('rb')"
            )
        yield chunk


def _slices(view: memoryview) -> Iterator[bytes]:
    for start in range(0, len(view), CHUNK_SIZE):
        yield view[start : start + CHUNK_SIZE].tobytes()


class ContentStore:
    """Inline-or-blob placement, blob publishing, and verified reading."""

    def __init__(self, backend: BlobBackend, *, threshold: int) -> None:
        self.backend = backend
        self.threshold = threshold

    def ingest(self, source: Source) -> Content:
        """Take the caller's value (bytes or a binary file object) and make it ready to commit."""
        if isinstance(source, bytes):
            if len(source) <= self.threshold:
                return Content(hashlib.sha256(source).hexdigest(), len(source), source, None)
            return self._stage(_slices(memoryview(source)))
        if isinstance(source, bytearray | memoryview):
            return self.ingest(bytes(source))
        if isinstance(source, str):
            raise InvalidValue("object values are bytes or a binary file object; encode text first")
        read = getattr(source, "read", None)
        if read is None:
            raise InvalidValue(f"cannot store a {type(source).__name__}: pass bytes or a binary file object")
        first = _read_exactly(source, self.threshold + 1)
        if len(first) <= self.threshold:
            return Content(hashlib.sha256(first).hexdigest(), len(first), first, None)
        return self._stage(_chunks_after(first, source))

    def _stage(self, chunks: Iterator[bytes]) -> Content:
        staged = self.backend.stage(chunks)
        return Content(staged.sha256, staged.size, None, staged)

    def publish(self, content: Content) -> None:
        """Make a staged value visible under its address (outside any transaction: it may fsync)."""
        if content.staged is not None:
            self.backend.publish(content.staged)

    def ensure_published(self, content: Content) -> None:
        """Inside the committing transaction: re-publish if a garbage collection removed the content."""
        if content.staged is not None and not self.backend.exists(content.sha256):
            self.backend.publish(content.staged)

    def release(self, content: Content) -> None:
        """Remove staging leftovers; always called once the put is over, committed or not."""
        if content.staged is not None:
            self.backend.discard(content.staged)

    def open(self, sha256: str, size: int, inline: bytes | None, what: str) -> BinaryIO:
        """A reader over the stored value that raises IntegrityError at EOF if it does not match."""
        raw: BinaryIO = io.BytesIO(inline) if inline is not None else self.backend.open(sha256)
        return VerifiedReader(raw, sha256=sha256, size=size, what=what)  # type: ignore[return-value]

    def read(self, sha256: str, size: int, inline: bytes | None, what: str) -> bytes:
        """The whole stored value, verified against its sha256 and size."""
        if inline is not None:
            if len(inline) != size or hashlib.sha256(inline).hexdigest() != sha256:
                raise IntegrityError(
                    f"stored content of {what} does not match its sha256 {sha256}; "
                    "run `objstore check` to find damaged objects"
                )
            return inline
        with self.open(sha256, size, None, what) as reader:
            return reader.read()
