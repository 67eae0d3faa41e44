"""The fast path of a put: an inline value under a new key, in one statement when nothing else is needed.

The statement inserts only if it may without further work: a pipeline object when the pipeline has room,
a run object when the run is not expired (and, either way, the key is new). Otherwise it changes nothing
and the put takes its full transaction, which evicts or raises the right error.

A pipeline that was full at its last put (the steady state of a busy pipeline: every put evicts) skips
that statement, which could only fail, and on SQLite takes :meth:`InlineInsert.evicting`: the insert, the
pipeline's count and its oldest object, and the delete, in one transaction bound positionally.

What the statement checks (the pipeline's count, the run watermark) must not change under it:
- SQLite runs one write transaction at a time, so one conditional INSERT is enough.
- PostgreSQL runs writers side by side, so the INSERT runs under the pipeline's advisory lock, inside the
  server-side function ``objstore_insert_object`` (migration 0004): one prepared call, one round trip.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from objstore.db.database import Connection, Database

__all__ = ["INSERT_COLUMNS", "INSERT_VALUES", "ON_KEY_CONFLICT", "InlineInsert", "ObjectRow", "Oldest"]

T = TypeVar("T")

# An object row as every insert writes it (objects.py's full transaction too).
INSERT_COLUMNS = 'scope_id, run, "key", size, sha256, content_type, created_at, data'
INSERT_VALUES = ":scope, :run, :key, :size, :sha256, :content_type, :created_at, :data"
ON_KEY_CONFLICT = 'ON CONFLICT (scope_id, run, "key") DO NOTHING'
# The values of INSERT_COLUMNS, in that order: scope, run, key, size, sha256, content type, created at
# (microseconds), data.
ObjectRow = tuple[int, int, str, int, str, str, int, bytes]
# Positional parameters (binding by name costs about 1.5 us of a 30 us put on SQLite): ?1-?8 an ObjectRow,
# ?9 the limit (pipeline objects) or the expiry (run objects).
_ROW = "?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8"
# Not INSERT ... SELECT ... WHERE count < limit: an INSERT whose SELECT reads the table it inserts into
# makes SQLite copy the row through a temporary table first, about 7 us of a 45 us put. Instead the count
# decides the scope_id, NULL when the pipeline is full, and OR IGNORE skips a row that breaks NOT NULL (as
# it skips one whose key exists). Anything else it might skip only sends the put to its full transaction,
# which reports it.
_IF_ROOM = (
    f"INSERT OR IGNORE INTO objects ({INSERT_COLUMNS}) VALUES ("
    "CASE WHEN (SELECT count(*) FROM objects WHERE scope_id = ?1 AND run = 0) < ?9 THEN ?1 END, "
    "?2, ?3, ?4, ?5, ?6, ?7, ?8)"
)
_IF_OPEN = (
    f"INSERT INTO objects ({INSERT_COLUMNS}) SELECT {_ROW} "
    "WHERE ?2 > (SELECT CASE WHEN expired_through > last_run - ?9 THEN expired_through "
    f"ELSE last_run - ?9 END FROM object_pipelines WHERE id = ?1) {ON_KEY_CONFLICT}"
)
# A put into a full pipeline (SQLite). No RETURNING: SQLite buffers RETURNING rows in a temporary table,
# which cost about 5 us of a 35 us transaction here (count in the insert, id and key in the delete).
_INSERT = f"INSERT INTO objects ({INSERT_COLUMNS}) VALUES ({_ROW}) {ON_KEY_CONFLICT}"
# With a single min() in the query, SQLite takes the bare column "key" from the row holding min(id): the
# count, the oldest id and its key in one walk of the pipeline's index entries.
_COUNT_AND_OLDEST = 'SELECT count(*), min(id), "key" FROM objects WHERE scope_id = ? AND run = 0'
# The id and key of a pipeline's oldest object.
Oldest = tuple[int, str]
# psycopg's positional form; the limit and the expiry both go to the function, which picks by run.
_FUNCTION_CALL = "SELECT objstore_insert_object(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"


class InlineInsert:
    """Inserts of one object row without the full transaction: if the pipeline has room or the run is
    open (a call), or into a full pipeline together with its eviction (:meth:`evicting`, SQLite)."""

    def __init__(self, database: Database, *, lock_topic: str, limit: int, expiry: int) -> None:
        self.db = database
        self.limit = limit
        self.expiry = expiry
        self._on_server = database.dialect_name == "postgresql"
        if self._on_server:
            from objstore.db.postgres import lock_params

            self._lock_params: Callable[[int], tuple[int, int]] = lambda scope: lock_params(lock_topic, scope)

    def __call__(self, row: ObjectRow) -> bool:
        """Whether the row was inserted (False: nothing changed; take the full transaction)."""
        scope, run = row[0], row[1]
        if self._on_server:
            topic, lock_key = self._lock_params(scope)
            result = self.db.write_returning(_FUNCTION_CALL, (topic, lock_key, *row, self.limit, self.expiry))
            return result is not None and bool(result[0])
        if run == 0:
            return self.db.write_one(_IF_ROOM, (*row, self.limit)) == 1
        return self.db.write_one(_IF_OPEN, (*row, self.expiry)) == 1

    @property
    def evicts(self) -> bool:
        """Whether :meth:`evicting` is there: on SQLite. On PostgreSQL a put into a full pipeline takes
        the full transaction, which holds the pipeline's advisory lock from its count to its commit."""
        return not self._on_server

    def evicting(self, row: ObjectRow, then: Callable[[Connection, int, Oldest], T]) -> T | None:
        """Insert a pipeline object row and, in the same write transaction, call ``then(conn, count,
        oldest)`` with the pipeline's object count and its oldest object, the new row counted; what
        ``then`` returns, or None when the key exists (nothing changed)."""

        def work(conn: Connection) -> T | None:
            if conn.execute(_INSERT, row).rowcount == 0:
                return None
            count, oldest_id, oldest_key = conn.execute(_COUNT_AND_OLDEST, (row[0],)).fetchone()
            return then(conn, count, (oldest_id, oldest_key))

        return self.db.write(work)
