"""Several blob stores as one: the first is written to, the others are read in turn when content is missing.

This is how a team moves its content to a new store without a flag day: configure the new store first and
keep the old one after it; reads find old content where it is, ``objstore blobs migrate`` copies it over,
then the old store can go. A store that fails with anything but "not there" is logged and the next one
tried, so one unreachable legacy store does not stop reads that another can serve.

Garbage collection and ``check --fix`` delete content that no row of this database refers to, so they
look only at the stores this database owns: a store shared with other databases (an HTTP store serves
another objstore's content; a bucket may be shared by separate deployments) is read and written, never
swept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import BinaryIO, TypeVar

from objstore.blobs.base import BlobBackend, BlobMissing, BlobStat, StagedBlob
from objstore.errors import InvalidValue, StorageError

__all__ = ["BlobChain"]

_log = logging.getLogger("objstore.blobs")
T = TypeVar("T")


class BlobChain(BlobBackend):
    """``stores[0]`` takes every write; reads try each store in order."""

    def __init__(self, stores: Sequence[BlobBackend], *, swept: Sequence[bool] | None = None) -> None:
        """``swept[i]``: whether garbage collection may delete unreferenced content from ``stores[i]``
        (default: from every store)."""
        if not stores:
            raise InvalidValue("a blob chain needs at least one store")
        if swept is not None and len(swept) != len(stores):
            raise InvalidValue(f"{len(swept)} sweep flags for {len(stores)} blob stores")
        self.stores = list(stores)
        self.primary = self.stores[0]
        self.swept = [s for s, flag in zip(self.stores, swept or [True] * len(stores), strict=True) if flag]
        self.name = " then ".join(store.name for store in self.stores)

    # -- writes go to the first store ---------------------------------------------------------------------

    def stage(self, chunks: Iterable[bytes]) -> StagedBlob:
        return self.primary.stage(chunks)

    def publish(self, staged: StagedBlob) -> None:
        self.primary.publish(staged)

    def discard(self, staged: StagedBlob) -> None:
        self.primary.discard(staged)

    # -- reads try each store in turn -----------------------------------------------------------------------

    def _first(self, sha256: str, read: Callable[[BlobBackend], T | None]) -> T:
        """The first answer of ``read`` that is not None, asking each store in turn."""
        failure: StorageError | None = None
        for store in self.stores:
            try:
                answer = read(store)
            except BlobMissing:
                continue
            except StorageError as error:
                _log.warning("blob store %s failed, trying the next one: %s", store.name, error)
                failure = error
                continue
            if answer is not None:
                return answer
        if failure is not None:
            raise failure  # no store had it, and at least one could not say: do not claim it is missing
        raise BlobMissing(f"content {sha256} is in none of the blob stores ({self.name})")

    def exists(self, sha256: str) -> bool:
        try:
            return self._first(sha256, lambda store: True if store.exists(sha256) else None)
        except BlobMissing:
            return False

    def open(self, sha256: str) -> BinaryIO:
        return self._first(sha256, lambda store: store.open(sha256))

    def stat(self, sha256: str) -> BlobStat | None:
        try:
            return self._first(sha256, lambda store: store.stat(sha256))
        except BlobMissing:
            return None

    def where(self, sha256: str) -> list[BlobBackend]:
        """Every store holding the content (for checks and migration)."""
        return [store for store in self.stores if store.exists(sha256)]

    def iter_blobs(self) -> Iterator[BlobStat]:
        """Every blob of the swept stores, each once (the first store's record of it): what garbage
        collection and ``check`` may call unreferenced."""
        seen: set[str] = set()
        for store in self.swept:
            for blob in store.iter_blobs():
                if blob.sha256 not in seen:
                    seen.add(blob.sha256)
                    yield blob

    # -- removal applies to every swept store ---------------------------------------------------------------

    def delete(self, sha256: str) -> bool:
        """Remove the content from every swept store (garbage collection: no object refers to it)."""
        removed = False
        for store in self.swept:
            removed = store.delete(sha256) or removed
        return removed

    def remove_stale_staging(self, older_than: datetime) -> int:
        return sum(store.remove_stale_staging(older_than) for store in self.stores)

    def close(self) -> None:
        for store in self.stores:
            store.close()
