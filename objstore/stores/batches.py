"""Deleting in bounded batches: each batch its own short transaction, sized to a time budget.

Retention jobs delete millions of rows without holding the write lock for long: a batch is sized so that
its transaction takes about ``target`` seconds on this machine (measured, not guessed), and after each
batch the job pauses for as long as the batch took. Without the pause other writers starve: SQLite's
busy handler polls the lock with sleeps of up to 100 ms, and almost never lands in the microseconds
between one batch's COMMIT and the next one's BEGIN. Between batches the job also calls a checkpoint that
may stop it (shutdown, or its lease was lost).
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["BatchSizer", "Checkpoint", "JobStopped", "no_checkpoint"]

# Called between batches; raises JobStopped when the job must stop.
Checkpoint = Callable[[], None]


class JobStopped(Exception):
    """A retention job stopped between batches; what it deleted so far stays deleted."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def no_checkpoint() -> None:
    """A checkpoint that never stops the job."""


class BatchSizer:
    """Batch sizes that keep each delete transaction near ``target`` seconds.

    Starts at ``initial`` rows and scales by the measured time of the previous batch, within
    ``[minimum, maximum]`` and never more than doubling at once (a cold cache makes the first batch slow).
    """

    def __init__(
        self,
        *,
        target: float = 0.02,
        initial: int = 1000,
        minimum: int = 100,
        maximum: int = 50_000,
        pause: float = 1.0,
    ) -> None:
        self.target = target
        self.pause = pause  # after a full batch, sleep this fraction of its duration: writers get their turn
        self.size = initial
        self.minimum = minimum
        self.maximum = maximum
        self.longest = 0.0  # the longest batch so far, in seconds

    def run(self, batch: Callable[[int], int]) -> int:
        """Call ``batch(size)`` once, timing it; returns what it returned (rows deleted)."""
        started = time.perf_counter()
        done = batch(self.size)
        elapsed = time.perf_counter() - started
        if done >= self.size:  # a full batch: there is more, so adapt for the next one and let writers in
            scale = min(self.target / max(elapsed, 1e-6), 2.0)
            self.size = max(self.minimum, min(self.maximum, int(self.size * scale)))
            if self.pause > 0:
                time.sleep(elapsed * self.pause)
        return done
