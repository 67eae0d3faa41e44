"""SQLite policy, in one place: how every connection to an objstore SQLite database is opened."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from objstore.db.retry import BUSY_TIMEOUT_SECONDS
from objstore.private_files import ensure_private_file

__all__ = ["WAL_AUTOCHECKPOINT_PAGES", "connect_sqlite"]

# Copy the write-ahead log back into the database every 4,000 pages (16 MiB) instead of SQLite's 1,000.
# Each checkpoint fsyncs twice and writes every page it touched; small puts spread over many pipelines
# touch many pages, and the same pages again before the next checkpoint, so a longer interval makes a
# put about 10% cheaper. The price: the WAL file grows to about 16 MiB, and after a power loss (not a
# crash: WAL commits survive a killed process) up to that many pages of the newest commits may be lost.
WAL_AUTOCHECKPOINT_PAGES = 4000


def connect_sqlite(path: Path) -> sqlite3.Connection:
    """Open ``path`` (created 0600 in a 0700 folder if missing) with objstore's SQLite policy.

    - autocommit mode at the driver level: objstore writes ``BEGIN IMMEDIATE`` itself, because a deferred
      transaction that reads and then writes fails with "database is locked" even under WAL;
    - ``auto_vacuum=INCREMENTAL`` before anything else, since it only takes effect before the first table;
    - WAL journal, ``synchronous=NORMAL`` (durable across process crashes; a power loss may drop the last
      commits but never corrupts), checkpoints every ``WAL_AUTOCHECKPOINT_PAGES``, foreign keys on, and a
      busy timeout.
    """
    ensure_private_file(path)
    connection = sqlite3.connect(
        path,
        timeout=BUSY_TIMEOUT_SECONDS,
        isolation_level=None,
        check_same_thread=False,  # one connection per thread, but close() may run on another thread
        cached_statements=256,
    )
    try:
        connection.execute("PRAGMA auto_vacuum=INCREMENTAL")
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        connection.execute("PRAGMA foreign_keys=ON")
        # Up to 32 MiB of page cache (allocated as pages are read), as diskcache does: point reads of a
        # store larger than the 2 MiB default otherwise go back to the OS for every page. No mmap: an I/O
        # error under mmap is a SIGBUS that kills the process instead of an error the caller can handle.
        connection.execute("PRAGMA cache_size=-32768")
    except BaseException:
        connection.close()
        raise
    return connection
