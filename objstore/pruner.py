"""Running the retention jobs: one process at a time per job (a lease), stoppable, logged and recorded.

Each run of a job takes the job's lease (``Leases``), renews it between batches, and releases it when
done. A job whose lease another process holds is skipped (that process is doing the work). A job stops
at its next batch boundary when :meth:`Pruner.stop` is called or when it finds it has lost its lease.
Every real (not dry) run is recorded as a "prune_finished" event and logged with its counts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from objstore.clock import Clock
from objstore.retention import JOB_NAMES, Job
from objstore.stores.batches import JobStopped
from objstore.stores.events import EventStore
from objstore.stores.leases import Leases, new_holder_id
from objstore.types import PruneReport

__all__ = ["JobResult", "Pruner"]

_log = logging.getLogger("objstore.prune")


@dataclass(frozen=True, slots=True)
class JobResult:
    """One run of one job."""

    job: str
    removed: dict[str, int] = field(default_factory=dict)
    skipped_for: str | None = None  # the holder of the lease, when another process had it
    stopped: str | None = None  # why the job stopped early, if it did
    seconds: float = 0.0


class Pruner:
    """Runs the retention jobs under their leases."""

    def __init__(
        self,
        jobs: Mapping[str, Job],
        *,
        leases: Leases,
        events: EventStore,
        clock: Clock,
        lease_ttl: timedelta,
    ) -> None:
        self.jobs = dict(jobs)
        self.leases = leases
        self.events = events
        self.clock = clock
        self.lease_ttl = lease_ttl
        self._stopping = threading.Event()

    def stop(self) -> None:
        """Ask running jobs to stop at their next batch boundary; later runs stop at once."""
        self._stopping.set()

    def run_all(self, *, dry_run: bool = False) -> PruneReport:
        """Every job once, in order: events, expiry, blobs (so blobs freed by expiry go in this pass)."""
        counts: dict[str, int] = {}
        skipped: list[str] = []
        stopped: list[str] = []
        for name in JOB_NAMES:
            result = self.run(name, dry_run=dry_run)
            for key, value in result.removed.items():
                counts[key] = counts.get(key, 0) + value
            if result.skipped_for is not None:
                skipped.append(name)
            if result.stopped is not None:
                stopped.append(name)
        return PruneReport(**counts, dry_run=dry_run, skipped=tuple(skipped), interrupted=tuple(stopped))

    def run(self, name: str, *, dry_run: bool = False) -> JobResult:
        """Run one job now (unless another process holds its lease)."""
        job = self.jobs[name]
        if dry_run:
            started = time.perf_counter()
            counted: dict[str, int] = {}
            job(True, _never_stop, counted)
            return JobResult(name, counted, seconds=time.perf_counter() - started)
        holder = new_holder_id(name)
        lease = f"prune:{name}"
        # Counted from before the acquisition: the lease may have been granted at any moment of the call.
        checkpoint = _LeaseCheckpoint(self, lease, holder)
        if not self.leases.acquire(lease, holder, self.lease_ttl):
            current = self.leases.current(lease)
            by = current.holder if current is not None else "another process"
            _log.info("prune job %s skipped: %s holds its lease", name, by, extra={"job": name, "holder": by})
            return JobResult(name, skipped_for=by)
        started_at = self.clock.now()
        started = time.perf_counter()
        removed: dict[str, int] = {}
        stopped: str | None = None
        try:
            try:
                job(False, checkpoint, removed)
            except JobStopped as stop:
                stopped = stop.reason
            result = JobResult(name, removed, stopped=stopped, seconds=time.perf_counter() - started)
            # Recorded while the lease is still held, so that the records of one job never overlap.
            self._record(result, holder, started_at)
        finally:
            self.leases.release(lease, holder)
        return result

    def _record(self, result: JobResult, holder: str, started_at: datetime) -> None:
        details = {
            "job": result.job,
            "holder": holder,
            "started_at": started_at.isoformat(),
            "finished_at": self.clock.now().isoformat(),
            "seconds": round(result.seconds, 6),
            "removed": result.removed,
            "stopped": result.stopped,
        }
        self.events.emit_quietly("prune_finished", details)
        summary = ", ".join(f"{count} {what}" for what, count in result.removed.items()) or "nothing"
        how = f" (stopped: {result.stopped})" if result.stopped else ""
        _log.info(
            "prune job %s removed %s in %.3fs%s",
            result.job,
            summary,
            result.seconds,
            how,
            extra={
                "job": result.job,
                "removed": result.removed,
                "seconds": round(result.seconds, 6),
                "stopped": result.stopped,
            },
        )


def _never_stop() -> None:
    return None


class _LeaseCheckpoint:
    """Between batches: stop if asked to, and keep the lease (renewed once a third of it has passed)."""

    def __init__(self, pruner: Pruner, lease: str, holder: str) -> None:
        self.pruner = pruner
        self.lease = lease
        self.holder = holder
        self.renew_every = pruner.lease_ttl.total_seconds() / 3
        self.renewed = time.monotonic()

    def __call__(self) -> None:
        if self.pruner._stopping.is_set():
            raise JobStopped("shutting down")
        now = time.monotonic()
        if now - self.renewed < self.renew_every:
            return
        if not self.pruner.leases.renew(self.lease, self.holder, self.pruner.lease_ttl):
            raise JobStopped("lost its lease (it expired and another process took the job over)")
        self.renewed = now
