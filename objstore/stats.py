"""``ObjStore.stats``: counts and bytes of every store, gathered from the stores themselves."""

from __future__ import annotations

from objstore.blobs.base import BlobBackend
from objstore.db.database import Database
from objstore.stores.events import EventStore
from objstore.stores.objects import ObjectStore
from objstore.stores.runs import RunStore
from objstore.stores.secrets import SecretStore
from objstore.stores.task_logs import TaskLogStore
from objstore.types import StoreStats

__all__ = ["collect_stats"]


def collect_stats(
    *,
    objects: ObjectStore,
    runs: RunStore,
    secrets: SecretStore,
    events: EventStore,
    task_logs: TaskLogStore,
    blobs: BlobBackend,
    databases: list[Database],
) -> StoreStats:
    """One pass over the databases and folders: reads only (the blob store and task logs are walked)."""
    pipelines, run_count = runs.counts()
    pipeline_secrets, global_secrets = secrets.counts()
    event_count, oldest, newest = events.summary()
    log_count, log_bytes = task_logs.usage()
    blob_count = blob_bytes = 0
    for blob in blobs.iter_blobs():
        blob_count += 1
        blob_bytes += blob.size
    return StoreStats(
        pipelines=pipelines,
        runs=run_count,
        **objects.usage(),
        blobs=blob_count,
        blob_bytes=blob_bytes,
        pipeline_secrets=pipeline_secrets,
        global_secrets=global_secrets,
        events=event_count,
        oldest_event=oldest,
        newest_event=newest,
        task_logs=log_count,
        task_log_bytes=log_bytes,
        databases=[
            {"path": database.location, "holds": database.label, "bytes": database.size_bytes()}
            for database in databases
        ],
    )
