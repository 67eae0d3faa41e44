"""One database: per-thread driver connections for the hot paths, an SQLAlchemy engine for the rest.

Hot paths (put, get, list, start_run) run hand-written, dialect-neutral SQL with ``:name`` parameters on
a connection held by the calling thread: a pool checkout per call costs more than the query itself.
Migrations and administrative work use the SQLAlchemy engine, whose connections follow the same policy.
Write transactions go through :meth:`Database.write`, which applies the one busy-retry policy.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from objstore.db.retry import BusyRetry, is_busy, sleep_before_retry, translate_driver_error
from objstore.db.sqlite import connect_sqlite
from objstore.errors import ObjStoreError, StorageBusy

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["Connection", "Database", "Row"]

T = TypeVar("T")
Connection = sqlite3.Connection
Row = tuple[Any, ...]
Params = Mapping[str, Any]

_DRIVER_ERRORS = (sqlite3.Error,)
_WAL_AUTOCHECKPOINT_PAGES = 1000  # SQLite's default
_open_databases: weakref.WeakSet[Database] = weakref.WeakSet()


def _forget_connections_after_fork() -> None:
    # A connection inherited across fork() must never be used by the child: it shares the parent's locks.
    for database in list(_open_databases):
        database._after_fork()


os.register_at_fork(after_in_child=_forget_connections_after_fork)


class Database:
    """A SQLite database file with objstore's policy. (PostgreSQL arrives behind the same methods.)"""

    def __init__(self, path: Path, *, label: str, retry: BusyRetry | None = None) -> None:
        self.path = path
        self.label = label  # e.g. "object database /srv/ci/objects.db": used in every error message
        self.dialect_name = "sqlite"
        # Whether a subquery in RETURNING sees the row the statement itself wrote (SQLite: yes;
        # PostgreSQL: no, it sees the statement's snapshot).
        self.returning_sees_own_write = True
        self._retry = retry or BusyRetry()
        self._local = threading.local()
        self._connections: list[Connection] = []
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._closed = False
        self._pid = os.getpid()
        _open_databases.add(self)

    def __repr__(self) -> str:
        return f"<Database {self.label}>"

    # -- connections ---------------------------------------------------------------------------------

    def exists(self) -> bool:
        """True if the database file exists (looking does not create it, as connecting would)."""
        return self.path.exists()

    def connection(self) -> Connection:
        """This thread's connection, opened on first use."""
        connection: Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            return connection
        if self._closed:
            raise ObjStoreError("this store is closed; open a new one with objstore.open()")
        try:
            connection = connect_sqlite(self.path)
        except _DRIVER_ERRORS as error:
            raise translate_driver_error(error, self.label) from None
        except OSError as error:
            raise translate_driver_error(error, self.label) from None
        with self._lock:
            self._connections.append(connection)
        self._local.connection = connection
        # Point reads reuse one cursor per thread: creating a cursor per call is a fifth of a read's cost.
        self._local.cursor = connection.cursor()
        return connection

    def _cursor(self) -> sqlite3.Cursor:
        cursor: sqlite3.Cursor | None = getattr(self._local, "cursor", None)
        if cursor is None:
            self.connection()
            cursor = self._local.cursor
        return cursor

    @property
    def engine(self) -> Engine:
        """An SQLAlchemy engine with the same policy; every transaction it begins is ``BEGIN IMMEDIATE``."""
        if self._engine is None:
            # Imported here: SQLAlchemy is only needed for migrations and administration, and importing
            # it would double the time to open a store.
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

            self._engine = engine
        return self._engine

    def close(self) -> None:
        """Close every connection this database opened, on any thread; closing twice is harmless."""
        self._closed = True
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            with contextlib.suppress(sqlite3.Error):  # best effort: the process may be exiting
                connection.close()
        self._local = threading.local()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def _after_fork(self) -> None:
        # Drop (without closing: the parent still uses them) the connections inherited from the parent.
        self._local = threading.local()
        self._connections = []
        self._lock = threading.Lock()
        self._engine = None
        self._pid = os.getpid()

    # -- statements ----------------------------------------------------------------------------------

    def sql(self, statement: str) -> str:
        """Adapt a statement written with ``:name`` parameters to this database's driver."""
        return statement  # sqlite3 understands :name natively

    def query_one(self, sql: str, params: Params) -> Row | None:
        """Run one read statement on this thread's connection; the first row or None."""
        try:
            return cast("Row | None", self._cursor().execute(sql, params).fetchone())
        except _DRIVER_ERRORS as error:
            if is_busy(error):
                return cast("Row | None", self.read(lambda conn: conn.execute(sql, params).fetchone()))
            raise translate_driver_error(error, self.label) from None

    def query_all(self, sql: str, params: Params) -> list[Row]:
        """Run one read statement on this thread's connection; all rows."""
        try:
            return self._cursor().execute(sql, params).fetchall()
        except _DRIVER_ERRORS as error:
            if is_busy(error):
                return self.read(lambda conn: conn.execute(sql, params).fetchall())
            raise translate_driver_error(error, self.label) from None

    def write_one(self, sql: str, params: Params) -> int:
        """Run one write statement as its own transaction; the number of rows it changed.

        A single statement is atomic, and a write statement takes the write lock before it reads, so
        a conditional INSERT ... SELECT ... WHERE needs no explicit transaction: this is the cheapest
        durable write there is (one call, as a raw autocommit insert). Busy retries as in ``write``.
        """
        return self._retrying(lambda: int(self._cursor().execute(sql, params).rowcount))

    def insert(self, sql: str, params: Params) -> int:
        """Run one INSERT as its own transaction (as ``write_one``); the new row's integer id."""

        def attempt() -> int:
            row_id = self._cursor().execute(sql, params).lastrowid
            assert row_id is not None
            return row_id

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
        """For a long run of short write transactions on this thread (pruning): yields a function to call
        between them, which copies the write-ahead log back into the database (a passive checkpoint, which
        never waits for or blocks other connections) at most every ``every`` seconds.

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
            cursor.execute(f"PRAGMA wal_autocheckpoint={_WAL_AUTOCHECKPOINT_PAGES}")
            with contextlib.suppress(*_DRIVER_ERRORS):
                cursor.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def size_bytes(self) -> int:
        """Bytes the database takes on disk, its write-ahead log included."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    def _gave_up(self) -> StorageBusy:
        return StorageBusy(
            f"{self.label} stayed locked by other writers; try again, or look for a process holding a "
            "long transaction"
        )

    # -- transactions ----------------------------------------------------------------------------------

    def write(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in a write transaction (``BEGIN IMMEDIATE``), committing if it returns.

        ``work`` may run more than once: a busy database is retried with backoff, and ``StorageBusy``
        raised when the policy gives up. Errors raised by ``work`` roll back and propagate; driver errors
        are translated into objstore's tree.
        """
        return self._transact("BEGIN IMMEDIATE", work)

    def read(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in a read transaction: several statements see one consistent snapshot."""
        return self._transact("BEGIN", work)

    def _transact(self, begin: str, work: Callable[[Connection], T]) -> T:
        connection = self.connection()

        def attempt() -> T:
            connection.execute(begin)
            try:
                result = work(connection)
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            return result

        return self._retrying(attempt)

    def _retrying(self, attempt: Callable[[], T]) -> T:
        """The one busy-retry policy: run ``attempt`` again after a jittered backoff while the database is
        locked, raise StorageBusy when the policy gives up, translate every other driver error."""
        delays = self._retry.delays()
        while True:
            try:
                return attempt()
            except _DRIVER_ERRORS as error:
                if not is_busy(error):
                    raise translate_driver_error(error, self.label) from None
                delay = next(delays, None)
                if delay is None:
                    raise self._gave_up() from None
                sleep_before_retry(delay)
