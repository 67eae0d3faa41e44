"""A SQLite database file with objstore's policy (``objstore.db.sqlite``): one writer at a time under
``BEGIN IMMEDIATE``, so a single conditional statement is enough to check and write."""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from objstore.db.database import Connection, Database, Params
from objstore.db.retry import BusyRetry, is_busy, translate_driver_error
from objstore.db.sqlite import WAL_AUTOCHECKPOINT_PAGES, connect_sqlite
from objstore.errors import ObjStoreError

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["SqliteDatabase"]


class SqliteDatabase(Database):
    """One SQLite file (created 0600 on first connection)."""

    dialect_name = "sqlite"
    serializes_writes = True
    returning_sees_own_write = True
    upgrades_on_open = True
    _driver_errors = (sqlite3.Error,)
    # A read-then-write transaction that began deferred fails with "database is locked" even under WAL.
    _begin_write = "BEGIN IMMEDIATE"

    def __init__(self, path: Path, *, label: str, retry: BusyRetry | None = None) -> None:
        super().__init__(label=label, retry=retry)
        self.path = path

    @property
    def location(self) -> str:
        return str(self.path)

    def exists(self) -> bool:
        return self.path.exists()

    def _connect(self) -> sqlite3.Connection:
        return connect_sqlite(self.path)

    def _create_engine(self) -> Engine:
        # Imported here: SQLAlchemy is only needed for migrations and administration, and importing it
        # would double the time to open a store.
        from sqlalchemy import create_engine, event
        from sqlalchemy.pool import NullPool

        path = self.path
        engine = create_engine(
            "sqlite://",
            creator=lambda: connect_sqlite(path),
            poolclass=NullPool,
            hide_parameters=True,  # values may be secrets: never echo them in errors or logs
        )

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    def _is_busy(self, error: BaseException) -> bool:
        return is_busy(error)

    def _translate(self, error: BaseException) -> ObjStoreError:
        return translate_driver_error(error, self.label)

    def _in_transaction(self, connection: Any) -> bool:
        return bool(connection.in_transaction)

    def sql(self, statement: str) -> str:
        return statement  # sqlite3 understands :name natively

    def execute_many(self, conn: Connection, sql: str, rows: Sequence[Params]) -> None:
        cast("sqlite3.Connection", conn).executemany(sql, rows)  # one call: the driver loops in C

    def serialize(self, conn: Connection, topic: str, key: int = 0) -> None:
        """Nothing to do: the transaction already holds the file's one write lock."""

    def insert(self, sql: str, params: Params) -> int:
        def attempt() -> int:
            row_id = self._cursor().execute(sql, params).lastrowid
            assert row_id is not None
            return int(row_id)

        return self._retrying(attempt)

    def reclaim_space(self, *, seconds_per_step: float = 0.015) -> int:
        """Give free pages back to the filesystem (incremental vacuum) in steps of about
        ``seconds_per_step`` each, so that writers wait at most one step; how many pages were freed."""
        connection = self.connection()
        cursor = self._cursor()

        def free_pages() -> int:
            return int(self._retrying(lambda: cursor.execute("PRAGMA freelist_count").fetchone()[0]))

        start = before = free_pages()
        pages = 256
        while before:
            # executescript steps the pragma to completion; execute() would free a single page per call.
            vacuum = f"PRAGMA incremental_vacuum({min(before, pages)})"
            began = time.perf_counter()
            self._retrying(functools.partial(connection.executescript, vacuum))
            elapsed = time.perf_counter() - began
            after = free_pages()
            if after >= before:  # not in incremental mode (a database created elsewhere): nothing to do
                break
            before = after
            # Grow gently: the cost per page varies with where the moved pages sit in the file.
            pages = max(64, min(4096, int(pages * min(seconds_per_step / max(elapsed, 1e-6), 1.5))))
        return start - before

    @contextlib.contextmanager
    def checkpoints_between_writes(self, *, every: float = 0.25) -> Iterator[Callable[[], None]]:
        """Yields a function to call between short write transactions, which copies the write-ahead log
        back into the database (a passive checkpoint, which never waits for or blocks other connections)
        at most every ``every`` seconds.

        Meanwhile this connection's automatic checkpoint is off: SQLite would otherwise run one inside
        the commit of whichever batch crosses the WAL's size mark, doubling that batch's duration.
        """
        cursor = self._cursor()
        cursor.execute("PRAGMA wal_autocheckpoint=0")
        last = time.monotonic()

        def between() -> None:
            nonlocal last
            if time.monotonic() - last >= every:
                self._retrying(lambda: cursor.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall())
                last = time.monotonic()

        try:
            yield between
        finally:
            cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            with contextlib.suppress(sqlite3.Error):
                cursor.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def size_bytes(self) -> int:
        """Bytes the database takes on disk, its write-ahead log included."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total
