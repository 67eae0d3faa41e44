"""A PostgreSQL database with objstore's policy, through psycopg 3 (the ``objstore[postgres]`` extra).

Connections run in autocommit mode and objstore writes ``BEGIN``/``COMMIT`` itself, as on SQLite, at
PostgreSQL's default isolation (READ COMMITTED: every statement sees what committed before it began).
Unlike SQLite, writers run side by side, so what a store counts or checks before writing is guarded by a
transaction-level advisory lock (:meth:`PostgresDatabase.serialize`), released by COMMIT or ROLLBACK and so
never leaked into a pooled or reused connection. Deadlocks and serialisation failures are retried by the
one busy-retry policy.
"""

from __future__ import annotations

import contextlib
import functools
import re
import zlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from objstore.db.database import Connection, Database, Params
from objstore.db.retry import BusyRetry
from objstore.errors import ConfigError, ObjStoreError, SchemaError, StorageError
from objstore.urls import mask_password

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["PostgresDatabase", "lock_params"]

_PARAMETER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
# Every table objstore creates (the version table included), for size_bytes.
_TABLES = (
    "objstore_schema_version",
    "pipelines",
    "runs",
    "events",
    "leases",
    "object_pipelines",
    "objects",
    "vault_keys",
    "secrets",
)
_SIZE = (
    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind = 'r' AND n.nspname = current_schema() AND c.relname = ANY(%(tables)s)"
)
_LOCK = "SELECT pg_advisory_xact_lock(%s, %s)"


def _int32(value: int) -> int:
    """Fold any integer into PostgreSQL's signed 32-bit range (advisory lock keys are two int4)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


@functools.cache  # a handful of topics, asked for on every locking write
def _topic_key(topic: str) -> int:
    return _int32(zlib.crc32(f"objstore:{topic}".encode()))


def lock_params(topic: str, key: int) -> tuple[int, int]:
    """The two int4 of a transaction-level advisory lock on (``topic``, ``key``)."""
    return _topic_key(topic), _int32(key)


class _Synced:
    """The connection a transaction's work sees in pipeline mode: every statement's result (rows and
    rowcount) is there when ``execute`` returns; only ``defer`` leaves one to travel with the next."""

    def __init__(self, connection: Any, pipeline: Any) -> None:
        self._connection = connection
        self._pipeline = pipeline

    def execute(self, sql: Any, parameters: Any = None, /) -> Any:
        cursor = self._connection.execute(sql, parameters)
        self._pipeline.sync()
        return cursor

    def defer(self, sql: Any, parameters: Any = None, /) -> Any:
        return self._connection.execute(sql, parameters)


def _deferred(conn: Connection) -> Any:
    """How to run statements whose results nobody reads: in pipeline mode they travel with the next
    statement (and their errors surface by the COMMIT at the latest), instead of a round trip each."""
    return conn.defer if isinstance(conn, _Synced) else conn.execute


class PostgresDatabase(Database):
    """Objstore's tables in one PostgreSQL database (the schema first on the connection's search_path)."""

    dialect_name = "postgresql"
    serializes_writes = False
    returning_sees_own_write = False
    upgrades_on_open = False  # shared by many hosts: schema changes are an explicit step

    def __init__(self, url: str, *, label: str, retry: BusyRetry | None = None) -> None:
        try:
            import psycopg
        except ImportError:
            raise ConfigError(
                f"{label}: PostgreSQL needs the psycopg driver; install objstore[postgres]"
            ) from None
        self._psycopg = psycopg
        self._driver_errors = (psycopg.Error,)
        try:
            parts = urlsplit(url)
        except ValueError:
            raise ConfigError(
                f"{label}: the database URL cannot be parsed; check its host and port"
            ) from None
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES:
            raise ConfigError(
                f"{label}: the database URL must start with postgresql+psycopg:// (got {scheme or 'no'} "
                "scheme)"
            )
        self.url = url
        # libpq understands postgresql://; SQLAlchemy needs the driver named.
        self._conninfo = urlunsplit(parts._replace(scheme="postgresql"))
        self._sqlalchemy_url = urlunsplit(parts._replace(scheme="postgresql+psycopg"))
        super().__init__(label=label, retry=retry)

    @property
    def location(self) -> str:
        return mask_password(self.url)

    def exists(self) -> bool:
        return True  # the server says, at the first query

    def _connect(self) -> Any:
        return self._psycopg.connect(self._conninfo, autocommit=True, application_name="objstore")

    def _create_engine(self) -> Engine:
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        return create_engine(self._sqlalchemy_url, poolclass=NullPool, hide_parameters=True)

    def _is_busy(self, error: BaseException) -> bool:
        errors = self._psycopg.errors
        return isinstance(
            error, errors.SerializationFailure | errors.DeadlockDetected | errors.LockNotAvailable
        )

    def _is_broken(self, error: BaseException) -> bool:
        connection = getattr(self._local, "connection", None)
        return isinstance(error, self._psycopg.OperationalError) and (
            connection is None or connection.closed or connection.broken
        )

    def _translate(self, error: BaseException) -> ObjStoreError:
        errors = self._psycopg.errors
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        where = self.label
        if isinstance(
            error,
            errors.UndefinedTable
            | errors.UndefinedColumn
            | errors.UndefinedFunction
            | errors.InvalidSchemaName,
        ):
            return SchemaError(f"{where} does not have objstore's schema ({text}); run `objstore db upgrade`")
        if isinstance(error, errors.DiskFull):
            return StorageError(f"{where}: the server's disk is full ({text}); free space, then retry")
        if isinstance(error, errors.InsufficientPrivilege):
            return StorageError(f"{where}: permission denied ({text}); grant the role access to the schema")
        if self._is_busy(error):
            return self._gave_up()
        if isinstance(error, self._psycopg.OperationalError):
            return StorageError(
                f"{where} cannot be reached ({text}); check that the server is running and the URL is right"
            )
        return StorageError(f"{where} failed: {text}")

    def _in_transaction(self, connection: Any) -> bool:
        from psycopg.pq import TransactionStatus

        return bool(connection.info.transaction_status != TransactionStatus.IDLE)

    def sql(self, statement: str) -> str:
        # psycopg takes %(name)s and %s; a literal % must be doubled first. A statement uses one style:
        # '?' becomes %s only in one with no :name parameter (it never holds a literal '?').
        escaped = statement.replace("%", "%%")
        named = _PARAMETER.sub(r"%(\1)s", escaped)
        return named if named != escaped else escaped.replace("?", "%s")

    def serialize(self, conn: Connection, topic: str, key: int = 0) -> None:
        _deferred(conn)(_LOCK, lock_params(topic, key))

    def execute_many(self, conn: Connection, sql: str, rows: Sequence[Params]) -> None:
        execute = _deferred(conn)
        for params in rows:
            execute(sql, params)

    @contextlib.contextmanager
    def _transaction_connection(self, connection: Any) -> Iterator[Any]:
        """psycopg's pipeline mode: BEGIN and advisory locks (whose results nobody reads) travel with the
        next statement, and COMMIT with the end, instead of a round trip each."""
        with connection.pipeline() as pipeline:
            yield _Synced(connection, pipeline)

    def insert(self, sql: str, params: Params) -> int:
        returning = f"{sql} RETURNING id"
        return self._retrying(lambda: int(self._cursor().execute(returning, params).fetchone()[0]))

    def begin_migration(self, connection: Any) -> None:
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_topic_key('migrations')}, 0)")

    def size_bytes(self) -> int:
        row = self.query_one(_SIZE, {"tables": list(_TABLES)})
        assert row is not None  # an aggregate always returns its row
        return int(row[0])
