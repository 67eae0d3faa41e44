"""One database behind one interface: per-thread driver connections for the hot paths, an SQLAlchemy engine
for migrations and administration, one busy-retry policy for every write.

Hot paths (put, get, list, start_run) run hand-written, dialect-neutral SQL with ``:name`` parameters on a
connection held by the calling thread: a pool checkout per call costs more than the query itself.
:meth:`Database.sql` adapts a statement to the driver once, when a store is built. Two implementations:
:class:`~objstore.db.sqlite_database.SqliteDatabase` and :class:`~objstore.db.postgres.PostgresDatabase`.

Writers are serialised differently on the two: SQLite has one write lock per file (``BEGIN IMMEDIATE``), so
every write transaction runs alone; PostgreSQL runs them side by side, and a store that counts, numbers or
checks before it writes asks for :meth:`Database.serialize` on what it counts (a no-op on SQLite).
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from objstore.db.retry import BusyRetry, sleep_before_retry
from objstore.errors import ObjStoreError, StorageBusy

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["Connection", "Cursor", "Database", "Row"]

T = TypeVar("T")
Row = tuple[Any, ...]
# Named (``:name``, adapted by Database.sql) or, in statements written for one driver, positional.
Params = Mapping[str, Any] | tuple[Any, ...]


class Cursor(Protocol):
    """What the stores use of a driver cursor (sqlite3 and psycopg both have it)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """What the stores use of a driver connection inside :meth:`Database.write` / :meth:`Database.read`."""

    def execute(self, sql: Any, parameters: Any = ..., /) -> Any: ...


_open_databases: weakref.WeakSet[Database] = weakref.WeakSet()


def _fetch_one(cursor: Any) -> Row | None:
    return cast("Row | None", cursor.fetchone())


def _fetch_all(cursor: Any) -> list[Row]:
    return cast("list[Row]", cursor.fetchall())


def _forget_connections_after_fork() -> None:
    # A connection inherited across fork() must never be used by the child: it shares the parent's locks
    # (SQLite) or socket (PostgreSQL).
    for database in list(_open_databases):
        database._after_fork()


os.register_at_fork(after_in_child=_forget_connections_after_fork)


class Database(ABC):
    """A database with objstore's policy; subclasses bring the driver."""

    #: SQLAlchemy's name of the dialect: "sqlite" or "postgresql".
    dialect_name: str
    #: True when one write transaction at a time runs (SQLite): a single conditional statement is then
    #: enough to check and write; False (PostgreSQL): use a transaction and :meth:`serialize`.
    serializes_writes: bool
    #: Whether a subquery in RETURNING sees the row the statement itself wrote (SQLite: yes; PostgreSQL:
    #: no, it sees the statement's snapshot).
    returning_sees_own_write: bool
    #: Whether opening a store may create or upgrade the schema (SQLite) or ``objstore db upgrade`` must.
    upgrades_on_open: bool
    #: The driver's exception classes: these, and only these, are retried or translated.
    _driver_errors: tuple[type[BaseException], ...]

    def __init__(self, *, label: str, retry: BusyRetry | None = None) -> None:
        self.label = label  # e.g. "object database /srv/ci/objects.db": used in every error message
        self._retry = retry or BusyRetry()
        self._local = threading.local()
        self._connections: list[Any] = []
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._closed = False
        _open_databases.add(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}>"

    # -- what a driver brings ------------------------------------------------------------------------------

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the data is, for people: a file path, or a URL without its password."""

    @abstractmethod
    def exists(self) -> bool:
        """False only when the database certainly does not exist yet (looking never creates it)."""

    @abstractmethod
    def _connect(self) -> Any:
        """A new driver connection with the policy applied, in autocommit mode."""

    @abstractmethod
    def _create_engine(self) -> Engine:
        """An SQLAlchemy engine whose transactions follow the same policy."""

    @abstractmethod
    def _is_busy(self, error: BaseException) -> bool:
        """True for driver errors meaning "another transaction is in the way; run it again"."""

    @abstractmethod
    def _translate(self, error: BaseException) -> ObjStoreError:
        """The objstore error for a driver error (never including parameters)."""

    @abstractmethod
    def _in_transaction(self, connection: Any) -> bool: ...

    @abstractmethod
    def sql(self, statement: str) -> str:
        """Adapt a statement written with ``:name`` parameters (passed as a mapping) or ``?`` ones (passed
        as a tuple, in order: cheaper to bind on a hot path) to this database's driver."""

    @abstractmethod
    def insert(self, sql: str, params: Params) -> int:
        """Run one INSERT into a table with an integer ``id`` column as its own transaction; the new id."""

    @abstractmethod
    def serialize(self, conn: Connection, topic: str, key: int = 0) -> None:
        """Inside a write transaction: wait until no other transaction holds (``topic``, ``key``), then
        hold it until this one ends. Stores call it before reading what they are about to change."""

    @abstractmethod
    def size_bytes(self) -> int:
        """Bytes objstore's data takes in this database."""

    def reclaim_space(self, *, seconds_per_step: float = 0.015) -> int:
        """Give free space back after large deletes; how many pages were freed (0 where the database does
        it by itself)."""
        return 0

    @contextlib.contextmanager
    def checkpoints_between_writes(self, *, every: float = 0.25) -> Iterator[Callable[[], None]]:
        """For a long run of short write transactions on this thread (pruning): yields a function to call
        between them (a no-op where the database needs nothing)."""
        yield lambda: None

    def begin_migration(self, connection: Any) -> None:  # noqa: B027 - optional hook
        """Inside the SQLAlchemy transaction of a schema upgrade, before anything is read: make concurrent
        upgrades (several processes opening a new database) run one after the other."""

    # -- connections ---------------------------------------------------------------------------------------

    def connection(self) -> Any:
        """This thread's driver connection, opened on first use."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            return connection
        if self._closed:
            raise ObjStoreError("this store is closed; open a new one with objstore.open()")
        connect_errors: tuple[type[BaseException], ...] = (*self._driver_errors, OSError)
        try:
            connection = self._connect()
        except connect_errors as error:
            raise self._translate(error) from None
        with self._lock:
            self._connections.append(connection)
        self._local.connection = connection
        # Point reads reuse one cursor per thread: creating a cursor per call is a fifth of a read's cost.
        self._local.cursor = connection.cursor()
        return connection

    def _cursor(self) -> Any:
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            self.connection()
            cursor = self._local.cursor
        return cursor

    def _drop_connection(self) -> None:
        """Forget (and close) this thread's connection after it broke: the next call opens a new one."""
        connection = getattr(self._local, "connection", None)
        self._local = threading.local()  # only this thread's slot: other threads keep theirs
        if connection is not None:
            with self._lock:
                if connection in self._connections:
                    self._connections.remove(connection)
            with contextlib.suppress(Exception):
                connection.close()

    @property
    def engine(self) -> Engine:
        """An SQLAlchemy engine with the same policy (created on first use)."""
        if self._engine is None:
            self._engine = self._create_engine()
        return self._engine

    def close(self) -> None:
        """Close every connection this database opened, on any thread; closing twice is harmless."""
        self._closed = True
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            with contextlib.suppress(Exception):  # best effort: the process may be exiting
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

    # -- statements ----------------------------------------------------------------------------------------

    def query_one(self, sql: str, params: Params) -> Row | None:
        """Run one read statement on this thread's connection; the first row or None."""
        try:  # no fetch function (nor typing.cast, a call too) in between: the point read of every get
            row: Row | None = self._cursor().execute(sql, params).fetchone()
        except self._driver_errors as error:
            row = self._query_failed(error, sql, params, _fetch_one)
        return row

    def query_all(self, sql: str, params: Params) -> list[Row]:
        """Run one read statement on this thread's connection; all rows."""
        try:
            rows: list[Row] = self._cursor().execute(sql, params).fetchall()
        except self._driver_errors as error:
            rows = self._query_failed(error, sql, params, _fetch_all)
        return rows

    def _query_failed(
        self, error: BaseException, sql: str, params: Params, fetch: Callable[[Any], Any]
    ) -> Any:
        """A read statement failed with a driver error: run it again in a read transaction if the database
        was busy (which retries), or raise the error translated."""
        if self._is_busy(error):
            return self.read(lambda conn: fetch(conn.execute(sql, params)))
        raise self._failed(error) from None

    def write_one(self, sql: str, params: Params) -> int:
        """Run one write statement as its own transaction; the number of rows it changed.

        A single statement is atomic: this is the cheapest durable write there is (one call, as a raw
        autocommit insert). Busy retries as in ``write``.
        """
        return self._retrying(lambda: int(self._cursor().execute(sql, params).rowcount))

    def write_returning(self, sql: str, params: Params) -> Row | None:
        """Like :meth:`write_one` (a statement that writes, e.g. a call of a server-side function); the
        first row it returns, or None."""
        return cast("Row | None", self._retrying(lambda: self._cursor().execute(sql, params).fetchone()))

    def _gave_up(self) -> StorageBusy:
        return StorageBusy(
            f"{self.label} stayed locked by other writers; try again, or look for a process holding a "
            "long transaction"
        )

    def _failed(self, error: BaseException) -> ObjStoreError:
        """Translate a driver error; a connection that broke is dropped so that the next call reconnects."""
        if self._is_broken(error):
            self._drop_connection()
        return self._translate(error)

    def _is_broken(self, error: BaseException) -> bool:
        return False

    # -- transactions --------------------------------------------------------------------------------------

    @abstractmethod
    def execute_many(self, conn: Connection, sql: str, rows: Sequence[Params]) -> None:
        """Inside a write transaction: run one statement for each of ``rows``, in order."""

    def write(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in a write transaction, committing if it returns.

        ``work`` may run more than once: a busy database is retried with backoff, and ``StorageBusy``
        raised when the policy gives up. Errors raised by ``work`` roll back and propagate; driver errors
        are translated into objstore's tree.
        """
        return self._transact(self._begin_write, work)

    def read(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in a read transaction: several statements see one consistent snapshot."""
        return self._transact(self._begin_read, work)

    _begin_write = "BEGIN"
    _begin_read = "BEGIN"

    def _transact(self, begin: str, work: Callable[[Connection], T]) -> T:
        connection = self.connection()

        def attempt() -> T:
            try:
                with self._transaction_connection(connection) as conn:
                    connection.execute(begin)
                    result = work(conn)
                    connection.execute("COMMIT")
            except BaseException:
                self._roll_back(connection)
                raise
            return result

        return self._retrying(attempt)

    def _roll_back(self, connection: Any) -> None:
        """End the transaction a failure left open on ``connection``, if any."""
        if self._in_transaction(connection):
            with contextlib.suppress(Exception):  # a broken connection cannot roll back
                connection.execute("ROLLBACK")

    def _transaction_connection(self, connection: Any) -> contextlib.AbstractContextManager[Any]:
        """What ``work`` is handed inside a transaction: the driver connection itself, unless a driver
        batches statements (PostgreSQL's pipeline mode)."""
        return contextlib.nullcontext(connection)

    def _retrying(self, attempt: Callable[[], T]) -> T:
        """The one busy-retry policy: run ``attempt`` again after a jittered backoff while the database is
        busy, raise StorageBusy when the policy gives up, translate every other driver error."""
        delays = None  # made on the first busy error: most calls never need one
        while True:
            try:
                return attempt()
            except self._driver_errors as error:
                if not self._is_busy(error):
                    raise self._failed(error) from None
                if delays is None:
                    delays = self._retry.delays()
                delay = next(delays, None)
                if delay is None:
                    raise self._gave_up() from None
                sleep_before_retry(delay)
