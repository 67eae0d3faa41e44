"""The event log, in the server database: emit, list with cursor pagination, prune by age.

Events are small JSON documents with a kind and, optionally, the namespace / pipeline / run they concern.
Ids only grow (never reused, even after pruning), so "after this id" is a stable cursor.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any, Protocol

from objstore.clock import Clock
from objstore.db.database import Connection, Database, Row
from objstore.errors import InvalidName, InvalidValue, ObjStoreError
from objstore.names import validate_id, validate_run_number
from objstore.stores.batches import BatchSizer, Checkpoint, delete_in_transaction, no_checkpoint
from objstore.timestamps import from_micros, to_micros
from objstore.types import Event

__all__ = ["MAX_DETAILS_BYTES", "MAX_LIST_LIMIT", "EventSink", "EventStore", "validate_kind"]

MAX_DETAILS_BYTES = 65536
MAX_LIST_LIMIT = 10_000
_KIND = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_COLUMNS = "id, kind, namespace, pipeline, run, emitted_at, details"
_log = logging.getLogger("objstore.events")
# One encoder for every event: json.dumps with options builds a new one per call (a third of its cost).
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class EventSink(Protocol):
    """Where a store reports what it did (``EventStore.emit_quietly``): after the fact, never failing."""

    def __call__(
        self,
        kind: str,
        details: Mapping[str, Any],
        *,
        namespace: str | None = None,
        pipeline: str | None = None,
        run: int | None = None,
    ) -> None: ...


def _details_json(details: Mapping[str, Any] | None) -> str:
    if details is None:
        return "{}"
    if not isinstance(details, Mapping):
        raise InvalidValue(f"event details must be a dict of JSON values, not {type(details).__name__}")
    try:
        text = _JSON.encode(details)
    except (TypeError, ValueError) as error:
        raise InvalidValue(
            f"event details must be JSON-serialisable (str, int, float, bool, None, lists and dicts "
            f"with str keys): {error}"
        ) from None
    # A character takes at most 4 bytes in UTF-8: short texts need no encoding to be measured.
    if len(text) > MAX_DETAILS_BYTES // 4 and len(text.encode()) > MAX_DETAILS_BYTES:
        raise InvalidValue(
            f"event details take {len(text.encode())} bytes as JSON; the limit is {MAX_DETAILS_BYTES}: "
            "store large data as an object and refer to its key"
        )
    return text


def validate_kind(kind: object) -> str:
    if not isinstance(kind, str) or _KIND.fullmatch(kind) is None:
        raise InvalidName(
            f"invalid event kind {kind!r:.80}: use 1-64 characters of letters, digits, '_', '.', ':' and '-'"
        )
    return kind


EVENTS_LOCK = "events"


class EventStore:
    """Every event of every pipeline, in one table of the server database."""

    def __init__(self, database: Database, *, clock: Clock) -> None:
        self.db = database
        self.clock = clock
        sql = database.sql
        self._insert = sql(
            "INSERT INTO events (kind, namespace, pipeline, run, emitted_at, details) "
            "VALUES (:kind, :ns, :p, :run, :at, :details)"
        )
        self._insert_returning = f"{self._insert} RETURNING id"
        # Oldest first by age (the index), so an interrupted prune has removed the oldest ones.
        self._delete_batch = sql(
            "DELETE FROM events WHERE id IN "
            "(SELECT id FROM events WHERE emitted_at < :cutoff ORDER BY emitted_at LIMIT :n)"
        )
        self._count_older = sql("SELECT count(*) FROM events WHERE emitted_at < :cutoff")
        self._summary = sql("SELECT count(*), min(emitted_at), max(emitted_at) FROM events")
        self._lists: dict[tuple[bool, ...], str] = {}
        # Set by the engine to write the notices it batches (stores.notices): readers in this process
        # see everything it did before they asked.
        self.flush_pending: Callable[[], None] = lambda: None

    # -- writing ----------------------------------------------------------------------------------------

    def row(
        self,
        kind: str,
        details: Mapping[str, Any] | None,
        namespace: str | None,
        pipeline: str | None,
        run: int | None,
        *,
        at: int | None = None,
    ) -> dict[str, Any]:
        """The validated row of one event (for :meth:`append_all`), emitted ``at`` (microseconds since the
        epoch; default: now)."""
        validate_kind(kind)
        if namespace is not None:
            validate_id(namespace, "namespace")
        if pipeline is not None:
            if namespace is None:
                raise InvalidValue("an event's pipeline needs its namespace too")
            validate_id(pipeline, "pipeline id")
        if run is not None:
            if pipeline is None:
                raise InvalidValue("an event's run needs its namespace and pipeline too")
            validate_run_number(run)
        return {
            "kind": kind,
            "ns": namespace,
            "p": pipeline,
            "run": run,
            "at": to_micros(self.clock.now()) if at is None else at,
            "details": _details_json(details),
        }

    def emit(
        self,
        kind: str,
        details: Mapping[str, Any] | None = None,
        *,
        namespace: str | None = None,
        pipeline: str | None = None,
        run: int | None = None,
    ) -> Event:
        """Append one event; it is durable when this returns."""
        params = self.row(kind, details, namespace, pipeline, run)
        if self.db.serializes_writes:
            event_id = self.db.insert(self._insert, params)
        else:
            event_id = self.db.write(lambda conn: self._append(conn, params))
        stored = json.loads(params["details"]) if details else {}
        return Event(event_id, kind, from_micros(params["at"]), stored, namespace, pipeline, run)

    def record(
        self,
        conn: Connection,
        kind: str,
        details: Mapping[str, Any] | None = None,
        *,
        namespace: str | None = None,
        pipeline: str | None = None,
        run: int | None = None,
    ) -> None:
        """Append one event inside the caller's transaction on this database (it commits with it)."""
        self._append(conn, self.row(kind, details, namespace, pipeline, run))

    def append_all(self, rows: list[dict[str, Any]]) -> None:
        """Append rows made by :meth:`row`, in order, in one transaction."""

        def work(conn: Connection) -> None:
            self.db.serialize(conn, EVENTS_LOCK)  # held to the commit: see _append
            self.db.execute_many(conn, self._insert, rows)

        self.db.write(work)

    def _append(self, conn: Connection, params: dict[str, Any]) -> int:
        # Ids must become visible in increasing order, or a reader following the log with after=ID skips
        # one that commits late. SQLite commits one writer at a time; PostgreSQL takes ids from a sequence
        # outside the transaction, so its appends hold a lock from taking the id until the commit.
        self.db.serialize(conn, EVENTS_LOCK)
        return int(conn.execute(self._insert_returning, params).fetchone()[0])

    def emit_quietly(
        self,
        kind: str,
        details: Mapping[str, Any],
        *,
        namespace: str | None = None,
        pipeline: str | None = None,
        run: int | None = None,
    ) -> None:
        """Record what the engine just did; a failure is logged, not raised, because the action it
        describes has already committed and must not be reported as failed."""
        try:
            self.emit(kind, details, namespace=namespace, pipeline=pipeline, run=run)
        except ObjStoreError as error:
            _log.warning("could not record event %s: %s", kind, error)

    # -- reading ----------------------------------------------------------------------------------------

    def list(
        self,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int = 100,
        kind: str | None = None,
        namespace: str | None = None,
        pipeline: str | None = None,
    ) -> list[Event]:
        """Events, oldest first (newest last).

        With ``after``: the ``limit`` events that follow that id (page forward, or follow the log by
        passing the last id seen). Otherwise the newest ``limit`` events, before the id ``before`` if
        given (page backward). Filters: ``kind``, ``namespace``, ``pipeline`` (which needs ``namespace``).
        """
        if after is not None and before is not None:
            raise InvalidValue("pass after= or before=, not both")
        for name, cursor in (("after", after), ("before", before)):
            if cursor is not None and (isinstance(cursor, bool) or not isinstance(cursor, int) or cursor < 0):
                raise InvalidValue(f"{name}= takes an event id (an int >= 0), not {cursor!r:.40}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidValue(f"limit must be an int from 1 to {MAX_LIST_LIMIT}, not {limit!r:.40}")
        if kind is not None:
            validate_kind(kind)
        if namespace is not None:
            validate_id(namespace, "namespace")
        if pipeline is not None:
            if namespace is None:
                raise InvalidValue("filtering by pipeline needs the namespace too")
            validate_id(pipeline, "pipeline id")
        shape = (
            after is not None,
            before is not None,
            kind is not None,
            namespace is not None,
            pipeline is not None,
        )
        statement = self._lists.get(shape) or self._list_statement(shape)
        params = {"after": after, "before": before, "kind": kind, "ns": namespace, "p": pipeline, "n": limit}
        self.flush_pending()  # the engine's own notices of what it already did come first
        rows = self.db.query_all(statement, params)
        if after is None:
            rows.reverse()
        return [self._event(row) for row in rows]

    def _list_statement(self, shape: tuple[bool, ...]) -> str:
        forward, backward, by_kind, by_namespace, by_pipeline = shape
        where = []
        if forward:
            where.append("id > :after")
        if backward:
            where.append("id < :before")
        if by_kind:
            where.append("kind = :kind")
        if by_namespace:
            where.append("namespace = :ns")
        if by_pipeline:
            where.append("pipeline = :p")
        condition = f" WHERE {' AND '.join(where)}" if where else ""
        order = "ASC" if forward else "DESC"
        statement = self.db.sql(f"SELECT {_COLUMNS} FROM events{condition} ORDER BY id {order} LIMIT :n")
        self._lists[shape] = statement
        return statement

    @staticmethod
    def _event(row: Row) -> Event:
        event_id, kind, namespace, pipeline, run, emitted_at, details = row
        return Event(
            int(event_id), kind, from_micros(emitted_at), json.loads(details), namespace, pipeline, run
        )

    def summary(self) -> tuple[int, datetime | None, datetime | None]:
        """How many events there are, and when the oldest and the newest were emitted."""
        self.flush_pending()
        row = self.db.query_one(self._summary, {})
        count, oldest, newest = row if row else (0, None, None)
        return (
            int(count),
            None if oldest is None else from_micros(oldest),
            None if newest is None else from_micros(newest),
        )

    # -- retention --------------------------------------------------------------------------------------

    def count_older(self, older_than: datetime) -> int:
        """How many events were emitted before ``older_than`` (what a prune would remove)."""
        row = self.db.query_one(self._count_older, {"cutoff": to_micros(older_than)})
        return int(row[0]) if row else 0

    def prune_batches(
        self, older_than: datetime, *, checkpoint: Checkpoint = no_checkpoint, sizer: BatchSizer | None = None
    ) -> Iterator[int]:
        """Delete the events emitted before ``older_than``, oldest first; yields each batch's count.

        Each batch is its own transaction sized to a time budget (``BatchSizer``), so writers wait at
        most one batch; ``checkpoint`` runs before each batch and may stop the job (what is deleted stays
        deleted, and the next prune carries on).
        """
        cutoff = to_micros(older_than)
        sizer = sizer or BatchSizer()

        def batch(size: int) -> tuple[int, float]:
            return delete_in_transaction(self.db, self._delete_batch, {"cutoff": cutoff, "n": size})

        with self.db.checkpoints_between_writes() as between_batches:
            while True:
                checkpoint()
                size = sizer.size
                deleted = sizer.run(batch)
                if deleted:
                    yield deleted
                if deleted < size:
                    return
                between_batches()
