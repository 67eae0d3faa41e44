"""``objstore serve``: the engine as a service, running the pruning jobs on their schedule."""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType

import click

from objstore.cli.context import open_store
from objstore.cli.logs import setup_logging

__all__ = ["serve"]

_log = logging.getLogger("objstore.serve")


@click.command()
def serve() -> None:
    """Run the engine as a service: apply migrations, then run the pruning jobs on their schedule
    (events every api.event_prune_interval, the rest every scheduler.prune_interval) until SIGINT or
    SIGTERM. Logs one JSON line per job run (development.pretty_logging for readable lines).

    Several `serve` processes may share the databases: each job runs in one of them at a time.
    """
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with open_store() as store:
            setup_logging(pretty=store.settings.development.pretty_logging)
            scheduler = store.start_scheduler()
            _log.info(
                "objstore serving (pid %d)",
                os.getpid(),
                extra={"pid": os.getpid(), "databases": [s.label for s in store.schema_status()]},
            )
            if scheduler is None:
                _log.warning("the pruning scheduler is off (scheduler.enabled = false): run `objstore prune`")
            while not stop.wait(0.5):
                pass
            _log.info("stopping: waiting for a running job to reach a batch boundary")
        _log.info("objstore stopped")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
