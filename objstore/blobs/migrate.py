"""Copying content between blob stores, each copy verified: ``objstore blobs migrate --to STORE``.

Every blob of the source stores that the target lacks is streamed (bounded memory) from its source through
a sha256 check into the target's staging area, then published. A blob whose bytes do not match their
address is not copied and is reported. Resumable by construction: a re-run skips what the target already
has, so an interrupted migration (or one that met an unreachable store) simply runs again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from objstore.blobs.base import BlobBackend, BlobStat
from objstore.blobs.verify import VerifiedReader
from objstore.errors import IntegrityError, StorageError

__all__ = ["MigrationReport", "migrate_blobs"]

_log = logging.getLogger("objstore.blobs")


@dataclass(slots=True)
class MigrationReport:
    """What one migration did: blobs (and bytes) copied, blobs the target already had, and failures."""

    copied: int = 0
    bytes_copied: int = 0
    already_there: int = 0
    failed: list[str] = field(default_factory=list)  # "<sha256>: why", for people

    @property
    def ok(self) -> bool:
        return not self.failed


def _copy(source: BlobBackend, target: BlobBackend, blob: BlobStat) -> None:
    with source.open(blob.sha256) as raw:
        verified = VerifiedReader(
            raw, sha256=blob.sha256, size=blob.size, what=f"blob {blob.sha256} in {source.name}"
        )
        staged = target.stage(verified)  # chunks; IntegrityError at the end if the bytes are wrong
    try:
        if staged.sha256 != blob.sha256:  # cannot happen after the check above; never publish it if it did
            raise IntegrityError(f"copy of {blob.sha256} hashed to {staged.sha256}")
        target.publish(staged)
    finally:
        target.discard(staged)


def migrate_blobs(
    sources: Sequence[BlobBackend],
    target: BlobBackend,
    *,
    progress: Callable[[int], None] | None = None,
) -> MigrationReport:
    """Copy into ``target`` every blob of ``sources`` that it does not hold; see the module docstring."""
    report = MigrationReport()
    seen: set[str] = set()
    for source in sources:
        for blob in source.iter_blobs():
            if blob.sha256 in seen:
                continue
            seen.add(blob.sha256)
            try:
                if target.exists(blob.sha256):
                    report.already_there += 1
                    continue
                _copy(source, target, blob)
            except (StorageError, IntegrityError) as error:
                _log.warning("could not copy blob %s from %s: %s", blob.sha256, source.name, error)
                report.failed.append(f"{blob.sha256} from {source.name}: {error}")
                continue
            report.copied += 1
            report.bytes_copied += blob.size
            if progress is not None:
                progress(blob.size)
    return report
