"""The interface every blob backend implements.

Content is addressed by its sha256 (lower-case hex). A write goes in two steps so that the object store
can keep its promise "a committed row never points at missing content":

1. :meth:`BlobBackend.stage` streams the caller's chunks into a private, durable staging place while
   hashing them. Nothing is visible under the content address yet.
2. :meth:`BlobBackend.publish` makes the staged bytes visible under their sha256 (idempotent: content that
   is already there is kept). The object store calls it inside the database transaction that commits the
   row, after re-checking, so a concurrent garbage collection cannot remove the content in between.
3. :meth:`BlobBackend.discard` removes what staging left behind (always called, after commit or failure).

Backends translate their own driver errors (OS, S3, HTTP) into :mod:`objstore.errors`: a missing blob is
:class:`BlobMissing`, anything else a :class:`~objstore.errors.StorageError` whose message says what to do.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

from objstore.errors import IntegrityError

__all__ = ["BlobBackend", "BlobMissing", "BlobStat", "StagedBlob"]


class BlobMissing(IntegrityError):
    """The content asked for is not in this blob store."""


@dataclass(frozen=True, slots=True)
class StagedBlob:
    """Bytes written to a backend's staging place, not yet visible under their content address."""

    sha256: str
    size: int
    token: str  # backend-private handle, e.g. the temp file's path


@dataclass(frozen=True, slots=True)
class BlobStat:
    """One stored blob as seen when listing a backend."""

    sha256: str
    size: int
    modified_at: datetime  # aware UTC; garbage collection keeps blobs younger than its grace period


class BlobBackend(ABC):
    """A content-addressed store of immutable byte strings."""

    #: Short human-readable description used in messages, e.g. ``filesystem:/var/lib/objstore/blobs``.
    name: str

    @abstractmethod
    def stage(self, chunks: Iterable[bytes]) -> StagedBlob:
        """Write ``chunks`` durably to a staging place, hashing as they stream; nothing becomes visible.

        Memory use is bounded by the chunk size. On any failure the staging place is cleaned up and an
        :class:`~objstore.errors.ObjStoreError` raised (exceptions raised by the iterator itself propagate
        unchanged after clean-up).
        """

    @abstractmethod
    def publish(self, staged: StagedBlob) -> None:
        """Make staged bytes readable under ``staged.sha256``; durable on return; no-op if already present.

        Publishing the same staged blob twice is allowed (the object store re-publishes if a garbage
        collection removed the content between the first publish and its transaction).
        """

    @abstractmethod
    def discard(self, staged: StagedBlob) -> None:
        """Remove the staging leftovers of ``staged``; harmless if already gone."""

    @abstractmethod
    def exists(self, sha256: str) -> bool:
        """True if content with this address is stored."""

    @abstractmethod
    def open(self, sha256: str) -> BinaryIO:
        """A raw reader over the stored bytes (not verified: see ``objstore.blobs.verify``).

        Raises :class:`BlobMissing` if the content is not stored.
        """

    @abstractmethod
    def delete(self, sha256: str) -> bool:
        """Remove the content; True if something was removed, False if it was not there."""

    @abstractmethod
    def stat(self, sha256: str) -> BlobStat | None:
        """The content's size and modification time, or None if it is not stored."""

    @abstractmethod
    def iter_blobs(self) -> Iterator[BlobStat]:
        """Every stored blob (order unspecified); staging leftovers are not included."""

    @abstractmethod
    def remove_stale_staging(self, older_than: datetime) -> int:
        """Remove staging leftovers (from crashed writers) last modified before ``older_than``; count them."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release held resources (connections, pools). Called once when the store closes."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
