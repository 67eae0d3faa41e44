"""Plain value types returned by the public API."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "CheckReport",
    "Event",
    "GCReport",
    "ObjectInfo",
    "PruneReport",
    "RunInfo",
    "SecretInfo",
    "StoreStats",
]


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """Metadata of one stored object (pipeline object when ``run`` is None, else a run object)."""

    key: str
    size: int
    sha256: str
    created_at: datetime
    content_type: str
    namespace: str
    pipeline: str
    run: int | None = None


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One run of a pipeline."""

    namespace: str
    pipeline: str
    number: int
    started_at: datetime


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """Metadata of one secret; never its value."""

    name: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class GCReport:
    """What one garbage-collection pass over the blob store removed (or would remove)."""

    blobs_removed: int = 0
    bytes_removed: int = 0
    temp_files_removed: int = 0


@dataclass(frozen=True, slots=True)
class CheckReport:
    """Findings of ``ObjStore.check``: rows whose content is missing or corrupt, content with no row."""

    missing_content: list[str] = field(default_factory=list)
    corrupt_content: list[str] = field(default_factory=list)
    orphan_blobs: list[str] = field(default_factory=list)
    fixed: bool = False

    @property
    def ok(self) -> bool:
        return not (self.missing_content or self.corrupt_content or self.orphan_blobs)


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the event log. ``details`` is the JSON object given to ``emit``."""

    id: int
    kind: str
    emitted_at: datetime
    details: dict[str, Any]
    namespace: str | None = None
    pipeline: str | None = None
    run: int | None = None


@dataclass(frozen=True, slots=True)
class PruneReport:
    """How many items each retention job removed (or would remove, on a dry run).

    ``skipped`` names the jobs another process was running at the time (it holds their lease);
    ``interrupted`` those stopped part-way (shutdown, or their lease was lost): the next prune finishes
    their work.
    """

    run_objects: int = 0
    pipeline_objects: int = 0
    blobs: int = 0
    events: int = 0
    task_logs: int = 0
    dry_run: bool = False
    skipped: tuple[str, ...] = ()
    interrupted: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counts and sizes of everything a store keeps (``ObjStore.stats``)."""

    pipelines: int = 0
    runs: int = 0
    pipeline_objects: int = 0
    pipeline_object_bytes: int = 0
    run_objects: int = 0
    run_object_bytes: int = 0
    inline_bytes: int = 0  # of the object bytes above, those kept in the database rather than as blobs
    blobs: int = 0
    blob_bytes: int = 0
    pipeline_secrets: int = 0
    global_secrets: int = 0
    events: int = 0
    oldest_event: datetime | None = None
    newest_event: datetime | None = None
    task_logs: int = 0
    task_log_bytes: int = 0
    # Each database file (several roles may share one): its path, what it holds, its bytes with the WAL.
    databases: list[dict[str, Any]] = field(default_factory=list)
