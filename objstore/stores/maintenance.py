"""Keeping the object database and the blob store consistent: garbage collection and checks.

Content is removed only inside a write transaction of the object database, after re-checking that no row
refers to it. A put publishes its content and, inside its own transaction, re-publishes it if it has
gone; the two transactions are serialised, so neither order can leave a row without its content.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from objstore.blobs.base import BlobStat
from objstore.db.database import Connection, Database
from objstore.errors import IntegrityError
from objstore.stores.batches import Checkpoint, no_checkpoint
from objstore.stores.content import ContentStore
from objstore.stores.objects import BLOB_LOCK, blob_lock_key, describe_scope
from objstore.types import CheckReport, GCReport

__all__ = ["Maintenance"]

_GC_BATCH = 256
# A writer keeps touching its staging file while it streams and publishes within moments of finishing,
# so leftovers older than this belong to crashed writers even when blobs are collected with no grace.
MIN_STAGING_AGE = timedelta(minutes=10)


def _batches(items: list[BlobStat], size: int) -> Iterator[list[BlobStat]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Maintenance:
    """Garbage collection of unreferenced blobs, and ``check`` of rows against content."""

    def __init__(self, database: Database, content: ContentStore) -> None:
        self.db = database
        self.content = content
        sql = database.sql
        self._referenced = sql("SELECT 1 FROM objects WHERE sha256 = :sha256 AND data IS NULL LIMIT 1")
        self._blob_rows = sql(
            'SELECT o.id, s.namespace, s.pipeline, o.run, o."key", o.sha256 FROM objects o '
            "JOIN object_pipelines s ON s.id = o.scope_id WHERE o.data IS NULL ORDER BY o.sha256"
        )
        self._all_rows = sql(
            'SELECT o.id, s.namespace, s.pipeline, o.run, o."key", o.size, o.sha256, o.data FROM objects o '
            "JOIN object_pipelines s ON s.id = o.scope_id"
        )
        self._delete_id = sql("DELETE FROM objects WHERE id = :id")

    def collect_garbage(
        self,
        grace: timedelta,
        *,
        staging_grace: timedelta | None = None,
        dry_run: bool = False,
        checkpoint: Checkpoint = no_checkpoint,
        progress: Callable[[int], None] | None = None,
    ) -> GCReport:
        """Remove blobs no row refers to that are older than ``grace``, and stale staging leftovers
        (older than ``staging_grace``, by default ``max(grace, 10 minutes)``: pass zero only when no
        writer is running).

        Ages are measured on the wall clock, because the blob store records them there.
        """
        now = datetime.now(UTC)
        cutoff = now - grace
        staging_cutoff = now - (max(grace, MIN_STAGING_AGE) if staging_grace is None else staging_grace)
        backend = self.content.backend
        candidates = [blob for blob in backend.iter_blobs() if blob.modified_at < cutoff]
        removed: list[BlobStat] = []
        for batch in _batches(candidates, _GC_BATCH):
            checkpoint()

            def collect(conn: Connection, batch: list[BlobStat] = batch) -> list[BlobStat]:
                return self._collect(conn, batch, cutoff, dry_run)

            collected = self.db.write(collect)
            removed.extend(collected)
            if progress is not None:
                progress(len(collected))
        staging = 0 if dry_run else backend.remove_stale_staging(staging_cutoff)
        return GCReport(len(removed), sum(blob.size for blob in removed), staging)

    def _collect(
        self, conn: Connection, batch: list[BlobStat], cutoff: datetime, dry_run: bool
    ) -> list[BlobStat]:
        backend = self.content.backend
        removed = []
        for blob in batch:
            self.db.serialize(conn, BLOB_LOCK, blob_lock_key(blob.sha256))
            if conn.execute(self._referenced, {"sha256": blob.sha256}).fetchone() is not None:
                continue
            current = backend.stat(blob.sha256)  # a put may have refreshed or re-published it meanwhile
            if current is None or current.modified_at >= cutoff:
                continue
            if dry_run or backend.delete(blob.sha256):
                removed.append(current)
        return removed

    def check(self, *, fix: bool = False, verify: bool = False) -> CheckReport:
        """Report rows whose content is missing (or, with ``verify``, corrupt) and blobs no row uses.

        With ``fix``: rows whose content is gone are deleted (their bytes cannot be recovered), corrupt
        blobs too, and unreferenced blobs are collected with no grace period.
        """
        backend = self.content.backend
        referenced: set[str] = set()
        missing: list[str] = []
        broken_ids: list[int] = []
        for row_id, namespace, pipeline, run, key, sha256 in self.db.query_all(self._blob_rows, {}):
            referenced.add(sha256)
            if not backend.exists(sha256):
                missing.append(f"{key} in {describe_scope(namespace, pipeline, run)}")
                broken_ids.append(row_id)
        corrupt: list[str] = []
        corrupt_blobs: set[str] = set()
        if verify:
            for row_id, namespace, pipeline, run, key, size, sha256, data in self.db.query_all(
                self._all_rows, {}
            ):
                if row_id in broken_ids:
                    continue
                what = f"{key} in {describe_scope(namespace, pipeline, run)}"
                try:
                    self.content.read(sha256, size, data, what)
                except IntegrityError:
                    corrupt.append(what)
                    broken_ids.append(row_id)
                    if data is None:
                        corrupt_blobs.add(sha256)
        orphans = sorted(blob.sha256 for blob in backend.iter_blobs() if blob.sha256 not in referenced)
        if fix:
            self.db.write(lambda conn: [conn.execute(self._delete_id, {"id": i}) for i in broken_ids])
            for sha256 in corrupt_blobs:
                if self.db.query_one(self._referenced, {"sha256": sha256}) is None:
                    backend.delete(sha256)
            self.collect_garbage(timedelta(0))
        return CheckReport(missing, corrupt, orphans, fixed=fix)
