"""The pruning scheduler: the retention jobs on intervals, with APScheduler 3.x in a background thread.

One worker thread runs the jobs one after another (they share the databases; running them side by side
would only make them wait for each other's write locks). Every job coalesces missed runs into one, never
runs twice at once (``max_instances=1``), and still runs if it is late by less than the misfire grace
time. Across processes, the jobs' leases (``objstore.pruner``) keep one runner per job.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from objstore.pruner import Pruner

__all__ = ["PruneScheduler"]

_log = logging.getLogger("objstore.scheduler")


class PruneScheduler:
    """Runs the jobs of ``pruner`` every ``intervals[job]``: :meth:`start`, then :meth:`shutdown`."""

    def __init__(
        self, pruner: Pruner, *, intervals: Mapping[str, timedelta], misfire_grace_time: timedelta
    ) -> None:
        # Imported here: APScheduler is needed only by processes that schedule (serve, long-lived hosts).
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        self.pruner = pruner
        self.intervals = dict(intervals)
        self._scheduler: Any = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": max(int(misfire_grace_time.total_seconds()), 1),
            },
            timezone=UTC,
        )

    def start(self, *, run_now: bool = True) -> None:
        """Start the background thread; with ``run_now`` every job also runs once right away."""
        first = datetime.now(UTC)
        for index, (name, interval) in enumerate(self.intervals.items()):
            # Without run_now, APScheduler computes the first run from the interval.
            when = {"next_run_time": first + timedelta(seconds=index)} if run_now else {}
            self._scheduler.add_job(
                self._run,
                "interval",
                args=(name,),
                id=name,
                name=f"prune {name}",
                seconds=interval.total_seconds(),
                replace_existing=True,
                **when,  # staggered by a second, so that the first runs queue in a known order
            )
        self._scheduler.start()
        _log.info(
            "pruning scheduled: %s",
            ", ".join(f"{name} every {interval}" for name, interval in self.intervals.items()),
            extra={
                "intervals": {name: interval.total_seconds() for name, interval in self.intervals.items()}
            },
        )

    def _run(self, name: str) -> None:
        try:
            self.pruner.run(name)
        except Exception:
            # A failed run is logged and retried at the next interval; the scheduler keeps going.
            _log.exception(
                "prune job %s failed; it runs again at its next interval", name, extra={"job": name}
            )

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop scheduling; a running job stops at its next batch boundary; with ``wait``, return only
        once it has. Calling it twice is harmless."""
        self.pruner.stop()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)
            _log.info("pruning scheduler stopped")
