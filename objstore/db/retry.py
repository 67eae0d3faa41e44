"""The one retry policy for a busy database, and the translation of driver errors into objstore's tree."""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Iterator

from objstore.errors import ObjStoreError, SchemaError, StorageBusy, StorageError

__all__ = ["BusyRetry", "is_busy", "translate_driver_error"]

# SQLite's own busy handler waits up to this long for a lock before reporting "database is locked".
BUSY_TIMEOUT_SECONDS = 5.0


class BusyRetry:
    """Attempts of one operation: the driver's busy wait, then up to ``attempts`` retries with jittered
    exponential backoff. ``StorageBusy`` is raised by the caller only when the attempts run out."""

    def __init__(self, attempts: int = 6, first_delay: float = 0.01, max_delay: float = 0.5) -> None:
        self.attempts = attempts
        self.first_delay = first_delay
        self.max_delay = max_delay

    def delays(self) -> Iterator[float]:
        delay = self.first_delay
        for _ in range(self.attempts):
            yield random.uniform(0, delay)  # full jitter: writers that collided do not collide again
            delay = min(delay * 2, self.max_delay)


def is_busy(error: BaseException) -> bool:
    """True for the errors that mean "another connection holds the lock; try again"."""
    if isinstance(error, sqlite3.OperationalError):
        text = str(error).lower()
        return "locked" in text or "busy" in text
    return False


def translate_driver_error(error: BaseException, where: str) -> ObjStoreError:
    """Map a database driver error to the objstore error a caller can act on. Never includes parameters."""
    text = str(error)
    lowered = text.lower()
    if is_busy(error):
        return StorageBusy(
            f"{where} stayed locked by other writers; try again, or find the process holding it "
            "(a long transaction, or a crashed process on a network filesystem)"
        )
    if "no such table" in lowered or "no such column" in lowered:
        return SchemaError(f"{where} does not have objstore's schema ({text}); run `objstore db upgrade`")
    if "disk is full" in lowered or "database or disk is full" in lowered:
        return StorageError(f"{where}: the disk is full; free space or move the database, then retry")
    if "readonly" in lowered or "read-only" in lowered:
        return StorageError(f"{where} is read-only ({text}); check the file and folder permissions")
    if "not a database" in lowered or "malformed" in lowered:
        return StorageError(f"{where} is not a valid SQLite database ({text}); restore it from a backup")
    if "unable to open" in lowered:
        return StorageError(
            f"{where} cannot be opened ({text}); check that the folder exists and is writable"
        )
    return StorageError(f"{where} failed: {text}")


def sleep_before_retry(delay: float) -> None:
    time.sleep(delay)
