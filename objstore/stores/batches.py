"""Deleting in bounded batches: each batch its own short transaction, sized to a time budget.

Retention jobs delete millions of rows without holding the write lock for long: a batch is sized so that
its transaction takes about ``target`` seconds on this machine (measured, not guessed), and after each
batch the job pauses for as long as the batch held the lock. Without the pause other writers starve:
SQLite's busy handler polls the lock with sleeps of up to 100 ms, and almost never lands in the
microseconds between one batch's COMMIT and the next one's BEGIN. Only the time the batch holds the lock
counts (its delete and its COMMIT), not the wait for the lock: a busy writer can keep a batch waiting a
long while, and counting that wait would shrink the batches (more of them, each waiting again) and
lengthen the pauses for nothing.
Between batches the job also calls a checkpoint that may stop it (shutdown, or its lease was lost).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from objstore.db.database import Connection, Database, Params

__all__ = ["BatchSizer", "Checkpoint", "JobStopped", "delete_in_transaction", "no_checkpoint"]

# Called between batches; raises JobStopped when the job must stop.
Checkpoint = Callable[[], None]


class JobStopped(Exception):
    """A retention job stopped between batches; what it deleted so far stays deleted."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def no_checkpoint() -> None:
    """A checkpoint that never stops the job."""


def delete_in_transaction(database: Database, statement: str, params: Params) -> tuple[int, float]:
    """One batch: ``statement`` in its own write transaction. Returns the rows it deleted and the seconds
    the transaction held the write lock: from the moment it had begun (the wait for the lock left out) to
    the end of its COMMIT, which writes the changed pages and can take as long as the delete itself."""
    began = 0.0

    def work(conn: Connection) -> int:
        nonlocal began
        began = time.perf_counter()  # BEGIN has returned: on SQLite the write lock is held from here
        return int(conn.execute(statement, params).rowcount)

    deleted = database.write(work)
    return deleted, time.perf_counter() - began


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

    def run(self, batch: Callable[[int], tuple[int, float]]) -> int:
        """Call ``batch(size)`` once; it returns the rows it deleted and the seconds it held the write
        lock (``delete_in_transaction``). Returns the rows deleted."""
        done, elapsed = batch(self.size)
        if done >= self.size:  # a full batch: there is more, so adapt for the next one and let writers in
            scale = min(self.target / max(elapsed, 1e-6), 2.0)
            self.size = max(self.minimum, min(self.maximum, int(self.size * scale)))
            if self.pause > 0:
                time.sleep(elapsed * self.pause)
        return done
