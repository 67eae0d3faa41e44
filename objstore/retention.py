"""The retention jobs: plain functions over the stores, each returning what it removed.

- ``events``: events older than ``api.event_log_retention``;
- ``expiry``: run objects and task logs of every run at or below latest - expiry, for every pipeline (a
  full sweep, so nothing remains after a crash or a lowered setting), and objects over a lowered
  pipeline limit;
- ``blobs``: content no object refers to, past its grace period.

Deletes go in short batches; each job gives freed pages back to the filesystem when it is done. The
``checkpoint`` runs between batches and may stop a job (``JobStopped``): what it deleted stays deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from objstore.clock import Clock
from objstore.stores.batches import Checkpoint, no_checkpoint
from objstore.stores.events import EventStore
from objstore.stores.maintenance import Maintenance
from objstore.stores.objects import ObjectStore
from objstore.stores.runs import RunStore
from objstore.stores.task_logs import TaskLogStore

__all__ = ["JOB_NAMES", "Job", "RetentionJobs", "RunDataExpiry"]

# One job: (dry_run, checkpoint, tally) -> tally. It adds what it removes to ``tally`` (by PruneReport
# field) as it goes, so a job stopped part-way still reports what it did, and returns it when done.
Job = Callable[[bool, Checkpoint, dict[str, int]], dict[str, int]]
JOB_NAMES = ("events", "expiry", "blobs")


@dataclass
class RunDataExpiry:
    """Expiry of one pipeline's run data (objects and task logs), as ``start_run`` and the sweep do it."""

    objects: ObjectStore
    task_logs: TaskLogStore
    events: EventStore

    def expire(
        self,
        namespace: str,
        pipeline: str,
        latest: int,
        *,
        dry_run: bool = False,
        checkpoint: Checkpoint = no_checkpoint,
    ) -> tuple[int, int]:
        """Remove the run objects and task logs that ``latest`` makes old; (objects, task logs) removed.
        Records a "run_data_expired" event when something was removed."""
        objects = self.objects.expire_runs(
            namespace, pipeline, latest, dry_run=dry_run, checkpoint=checkpoint
        )
        logs = self.task_logs.expire(namespace, pipeline, latest, dry_run=dry_run, checkpoint=checkpoint)
        if (objects or logs) and not dry_run:
            details = {
                "latest_run": latest,
                "run_objects_through": self.objects.expired_through(latest),
                "task_logs_through": self.task_logs.expired_through(namespace, pipeline, latest),
                "run_objects": objects,
                "task_logs": logs,
            }
            self.events.emit_quietly("run_data_expired", details, namespace=namespace, pipeline=pipeline)
        return objects, logs


@dataclass
class RetentionJobs:
    """The stores the jobs work on, and the settings they apply."""

    events: EventStore
    runs: RunStore
    expiry: RunDataExpiry
    maintenance: Maintenance
    clock: Clock
    event_retention: timedelta
    gc_grace: Callable[[], timedelta]

    def jobs(self) -> Mapping[str, Job]:
        return {"events": self.prune_events, "expiry": self.expire_run_data, "blobs": self.collect_blobs}

    def prune_events(self, dry_run: bool, checkpoint: Checkpoint, tally: dict[str, int]) -> dict[str, int]:
        cutoff = self.clock.now() - self.event_retention
        tally["events"] = 0
        if dry_run:
            tally["events"] = self.events.count_older(cutoff)
            return tally
        for removed in self.events.prune_batches(cutoff, checkpoint=checkpoint):
            tally["events"] += removed
        if tally["events"]:
            self.events.db.reclaim_space()
        return tally

    def expire_run_data(self, dry_run: bool, checkpoint: Checkpoint, tally: dict[str, int]) -> dict[str, int]:
        tally.update(run_objects=0, task_logs=0, pipeline_objects=0)
        objects = self.expiry.objects
        try:
            for namespace, pipeline, latest in self.runs.pipelines():
                checkpoint()
                removed_objects, removed_logs = self.expiry.expire(
                    namespace, pipeline, latest, dry_run=dry_run
                )
                tally["run_objects"] += removed_objects
                tally["task_logs"] += removed_logs
            checkpoint()
            tally["pipeline_objects"] = objects.enforce_limits(dry_run=dry_run)
        finally:
            if (tally["run_objects"] or tally["pipeline_objects"]) and not dry_run:
                objects.db.reclaim_space()
        return tally

    def collect_blobs(self, dry_run: bool, checkpoint: Checkpoint, tally: dict[str, int]) -> dict[str, int]:
        tally["blobs"] = 0

        def progress(removed: int) -> None:
            tally["blobs"] += removed

        self.maintenance.collect_garbage(
            self.gc_grace(), dry_run=dry_run, checkpoint=checkpoint, progress=progress
        )
        return tally
