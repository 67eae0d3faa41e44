"""Pipeline and run objects: put, get, open, info, list, delete; the pipeline limit; run expiry.

A scope is (namespace, pipeline, run) with run 0 for pipeline objects. Every write is one short
transaction on the object database; large content is staged and published in the blob store *before*
that transaction, and re-checked inside it, so a committed row never points at missing content.
"""

from __future__ import annotations

import builtins
import hashlib
import mimetypes
import re
from collections.abc import Callable
from typing import Any, BinaryIO

from objstore.clock import Clock
from objstore.db.database import Connection, Database
from objstore.errors import AlreadyExists, InvalidValue, ObjectNotFound, RunExpired, StorageError
from objstore.stores.batches import BatchSizer, Checkpoint, delete_in_transaction, no_checkpoint
from objstore.stores.content import Content, ContentStore, Source
from objstore.stores.events import EventSink, EventStore
from objstore.stores.object_fast_path import (
    INSERT_COLUMNS,
    INSERT_VALUES,
    ON_KEY_CONFLICT,
    InlineInsert,
    Oldest,
)
from objstore.timestamps import from_micros, to_micros
from objstore.types import ObjectInfo

__all__ = ["BLOB_LOCK", "PIPELINE_SCOPE", "ObjectStore", "blob_lock_key", "describe_scope"]

PIPELINE_SCOPE = 0  # the ``run`` column value of pipeline objects
# Database.serialize topics (PostgreSQL): one pipeline's objects and expiry state; one blob's references.
SCOPE_LOCK = "pipeline objects"
BLOB_LOCK = "blob"
DEFAULT_CONTENT_TYPE = "application/octet-stream"
_CONTENT_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,127}/[A-Za-z0-9!#$&^_.+-]{1,127}(;[ -~]{0,200})?")
_SCOPE = "scope_id = :scope AND run = :run"
# Point reads of one object, bound positionally with (scope, run, key): the hot path of a get.
_BY_KEY = 'scope_id = ? AND run = ? AND "key" = ?'
_COLUMNS = '"key", size, sha256, content_type, created_at'

mimetypes.init()
_TYPES_BY_SUFFIX = dict(mimetypes.types_map)


def blob_lock_key(sha256: str) -> int:
    """The lock key of a blob: a put referring to it and a garbage collection removing it never overlap."""
    return int(sha256[:8], 16)


def describe_scope(namespace: str, pipeline: str, run: int) -> str:
    where = f"pipeline {namespace}/{pipeline}"
    return where if run == PIPELINE_SCOPE else f"run {run} of {where}"


def _content_type_for(key: str, given: str | None) -> str:
    if given is None:
        # The suffix of the last path segment; cheaper than os.path.splitext on the hot path.
        dot = key.rfind(".")
        if dot <= key.rfind("/"):
            return DEFAULT_CONTENT_TYPE
        return _TYPES_BY_SUFFIX.get(key[dot:].lower(), DEFAULT_CONTENT_TYPE)
    if not isinstance(given, str) or _CONTENT_TYPE.fullmatch(given) is None:
        raise InvalidValue(f"invalid content type {given!r}: use a MIME type such as 'application/json'")
    return given


class ObjectStore:
    """Objects of every pipeline and run in one object database."""

    def __init__(
        self,
        database: Database,
        content: ContentStore,
        *,
        clock: Clock,
        pipeline_object_limit: int,
        run_object_expiry: int,
        delete_batch: int = 5000,
        notify: EventSink | None = None,
        events: EventStore | None = None,
    ) -> None:
        self.db = database
        self.notify = notify  # told of evictions, after they commit
        # The event log when it lives in this same database: evictions are then recorded inside the
        # evicting transaction (one commit per put, not two).
        self.events = events
        self.content = content
        self.clock = clock
        self.pipeline_object_limit = pipeline_object_limit
        self.run_object_expiry = run_object_expiry
        self.delete_batch = delete_batch
        self._scope_ids: dict[tuple[str, str], int] = {}  # pipelines never lose their id: safe to cache
        sql = database.sql
        self._find_scope = sql("SELECT id FROM object_pipelines WHERE namespace = :ns AND pipeline = :p")
        self._create_scope = sql(
            "INSERT INTO object_pipelines (namespace, pipeline, last_run, expired_through) "
            "VALUES (:ns, :p, 0, 0) ON CONFLICT (namespace, pipeline) DO NOTHING"
        )
        columns, values, on_conflict = INSERT_COLUMNS, INSERT_VALUES, ON_KEY_CONFLICT
        self._insert = sql(f"INSERT INTO objects ({columns}) VALUES ({values}) {on_conflict}")
        # A pipeline put learns the pipeline's object count from its own INSERT, so a pipeline under its
        # limit needs no second statement. (SQLite's RETURNING subqueries see the new row; PostgreSQL's
        # see the statement's snapshot: ``Database.returning_sees_own_write`` tells which.)
        self._insert_counting = sql(
            f"INSERT INTO objects ({columns}) VALUES ({values}) {on_conflict} "
            "RETURNING (SELECT count(*) FROM objects WHERE scope_id = :scope AND run = 0)"
        )
        self._count_correction = 0 if database.returning_sees_own_write else 1
        self._insert_if_allowed = InlineInsert(
            database, lock_topic=SCOPE_LOCK, limit=pipeline_object_limit, expiry=run_object_expiry
        )
        # A hint only: pipelines at their limit after their last put here (the next put will evict).
        self._full_pipelines: set[int] = set()
        self._delete_one = sql(f'DELETE FROM objects WHERE {_SCOPE} AND "key" = :key')
        self._delete_by_id = sql("DELETE FROM objects WHERE id = :id")
        self._exists = sql(f"SELECT 1 FROM objects WHERE {_BY_KEY}")
        self._get = sql(f"SELECT size, sha256, data FROM objects WHERE {_BY_KEY}")
        self._info = sql(f"SELECT {_COLUMNS} FROM objects WHERE {_BY_KEY}")
        self._list = sql(f"SELECT {_COLUMNS} FROM objects WHERE {_SCOPE} ORDER BY id")
        # The usual excess is one: min(id) walks the pipeline's index entries without sorting them.
        self._delete_oldest_one = sql(
            "DELETE FROM objects WHERE id = "
            '(SELECT min(id) FROM objects WHERE scope_id = :scope AND run = 0) RETURNING id, "key"'
        )
        self._delete_oldest = sql(
            "DELETE FROM objects WHERE id IN (SELECT id FROM objects WHERE scope_id = :scope AND run = 0 "
            'ORDER BY id LIMIT :excess) RETURNING id, "key"'
        )
        self._run_state = sql("SELECT last_run, expired_through FROM object_pipelines WHERE id = :scope")
        # CASE rather than max()/GREATEST(): the same text runs on SQLite and PostgreSQL.
        self._raise_watermark = sql(
            "UPDATE object_pipelines SET "
            "last_run = CASE WHEN :last_run > last_run THEN :last_run ELSE last_run END, "
            "expired_through = CASE WHEN :through > expired_through THEN :through ELSE expired_through END "
            "WHERE id = :scope RETURNING expired_through"
        )
        self._delete_expired = sql(
            "DELETE FROM objects WHERE id IN (SELECT id FROM objects WHERE scope_id = :scope "
            "AND run >= 1 AND run <= :through LIMIT :n)"
        )
        self._count_expired = sql(
            "SELECT count(*) FROM objects WHERE scope_id = :scope AND run >= 1 AND run <= :through"
        )
        self._usage = sql(
            "SELECT CASE WHEN run = 0 THEN 1 ELSE 0 END, count(*), sum(size), "
            "sum(CASE WHEN data IS NULL THEN 0 ELSE size END) FROM objects "
            "GROUP BY CASE WHEN run = 0 THEN 1 ELSE 0 END"
        )
        self._count_pipeline = sql("SELECT count(*) FROM objects WHERE scope_id = :scope AND run = 0")
        self._any_expired = sql(
            "SELECT 1 FROM objects WHERE scope_id = :scope AND run >= 1 AND run <= :through LIMIT 1"
        )
        # Pipelines over the limit (after it was lowered, or objects left by a crash-free but older
        # writer with a higher limit): the sweep evicts their oldest objects.
        self._over_limit = sql(
            "SELECT s.id, s.namespace, s.pipeline, count(*) FROM objects o "
            "JOIN object_pipelines s ON s.id = o.scope_id WHERE o.run = 0 "
            "GROUP BY s.id, s.namespace, s.pipeline HAVING count(*) > :limit"
        )

    def scope_id(self, namespace: str, pipeline: str, *, create: bool) -> int | None:
        """The pipeline's id in the object database; created on first need when ``create``."""
        cached = self._scope_ids.get((namespace, pipeline))
        if cached is not None:
            return cached
        names = {"ns": namespace, "p": pipeline}
        row = self.db.query_one(self._find_scope, names)
        if row is None and create:

            def work(conn: Connection) -> tuple[object, ...]:
                conn.execute(self._create_scope, names)
                found: tuple[object, ...] = conn.execute(self._find_scope, names).fetchone()
                return found

            row = self.db.write(work)
        if row is None:
            return None
        scope = int(row[0])
        self._scope_ids[(namespace, pipeline)] = scope
        return scope

    # -- writes -----------------------------------------------------------------------------------------

    def put(
        self,
        namespace: str,
        pipeline: str,
        run: int,
        key: str,
        source: Source,
        *,
        overwrite: bool = False,
        content_type: str | None = None,
    ) -> ObjectInfo:
        """Store ``source`` under ``key``; returns its metadata. Names must already be validated."""
        kind = _content_type_for(key, content_type)
        scope = self.scope_id(namespace, pipeline, create=True)
        assert scope is not None
        if isinstance(source, bytes) and len(source) <= self.content.threshold:
            content = self.content.ingest(source)  # inline: nothing staged, nothing to release
            if not overwrite:
                info = self._put_inline(scope, namespace, pipeline, run, key, content, kind)
                if info is not None:
                    return info
        else:
            # Fail before streaming a large value that could not be committed anyway.
            if run != PIPELINE_SCOPE:
                self.db.read(lambda conn: self._check_run_open(conn, scope, namespace, pipeline, run))
            if not overwrite and self.db.query_one(self._exists, (scope, run, key)) is not None:
                raise self._already_exists(namespace, pipeline, run, key)
            content = self.content.ingest(source)
        where = {"scope": scope, "run": run, "key": key}
        try:
            self.content.publish(content)
            created_at = self.clock.now()
            row = {
                **where,
                "size": content.size,
                "sha256": content.sha256,
                "content_type": kind,
                "created_at": to_micros(created_at),
                "data": content.inline,
            }

            def work(conn: Connection) -> list[str]:
                # What is counted (the limit) or checked (expiry, content present) is held until commit.
                self.db.serialize(conn, SCOPE_LOCK, scope)
                if content.staged is not None:
                    self.db.serialize(conn, BLOB_LOCK, blob_lock_key(content.sha256))
                if run != PIPELINE_SCOPE:
                    self._check_run_open(conn, scope, namespace, pipeline, run)
                if overwrite:
                    conn.execute(self._delete_one, where)
                self.content.ensure_published(content)
                if run != PIPELINE_SCOPE:
                    if conn.execute(self._insert, row).rowcount == 0:
                        raise self._already_exists(namespace, pipeline, run, key)
                    return []
                inserted = conn.execute(self._insert_counting, row).fetchone()
                if inserted is None:
                    raise self._already_exists(namespace, pipeline, run, key)
                evicted = self._enforce_limit(conn, scope, inserted[0] + self._count_correction)
                self._record_evictions(conn, namespace, pipeline, evicted)
                return evicted

            evicted = self.db.write(work)
        finally:
            self.content.release(content)
        if evicted and self.events is None:
            self._evicted(namespace, pipeline, evicted)
        return ObjectInfo(
            key, content.size, content.sha256, created_at, kind, namespace, pipeline, run or None
        )

    def _put_inline(  # noqa: PLR0917 - the hot path: positional, as put() has them
        self, scope: int, namespace: str, pipeline: str, run: int, key: str, content: Content, kind: str
    ) -> ObjectInfo | None:
        """The fast paths of an inline value under a new key (see object_fast_path); None: nothing was
        written, take the full transaction (which evicts, or raises the right error). Raises
        AlreadyExists itself when a full pipeline's insert finds the key taken."""
        assert content.inline is not None
        created_at = self.clock.now()
        row = (scope, run, key, content.size, content.sha256, kind, to_micros(created_at), content.inline)
        if run != PIPELINE_SCOPE or scope not in self._full_pipelines:
            if not self._insert_if_allowed(row):
                return None
        elif self._insert_if_allowed.evicts:

            def evict(conn: Connection, count: int, oldest: Oldest) -> list[str]:
                evicted = self._enforce_limit(conn, scope, count, oldest)
                self._record_evictions(conn, namespace, pipeline, evicted)
                return evicted

            evicted = self._insert_if_allowed.evicting(row, evict)
            if evicted is None:  # only a key conflict skips the insert: no second transaction to say so
                raise self._already_exists(namespace, pipeline, run, key)
            if evicted and self.events is None:
                self._evicted(namespace, pipeline, evicted)
        else:
            return None
        return ObjectInfo(
            key, content.size, content.sha256, created_at, kind, namespace, pipeline, run or None
        )

    def _enforce_limit(
        self, conn: Connection, scope: int, count: int, oldest: Oldest | None = None
    ) -> list[str]:
        """Evict the pipeline's oldest objects (smallest ids) beyond the limit; their keys. ``oldest``,
        when the caller knows it: the id and key of the pipeline's oldest object.

        Runs inside the put's transaction, so the count is exact under any concurrency.
        """
        excess = count - self.pipeline_object_limit
        if count >= self.pipeline_object_limit:
            self._full_pipelines.add(scope)
        else:
            self._full_pipelines.discard(scope)
        if excess <= 0:
            return []
        if excess == 1 and oldest is not None:
            conn.execute(self._delete_by_id, {"id": oldest[0]})
            return [oldest[1]]
        evict = {"scope": scope, "excess": excess}
        statement = self._delete_oldest_one if excess == 1 else self._delete_oldest
        # RETURNING lists rows in no promised order (PostgreSQL's differs from SQLite's): oldest first.
        return [key for _, key in sorted(conn.execute(statement, evict).fetchall())]

    def delete(self, namespace: str, pipeline: str, run: int, key: str) -> None:
        """Remove the object; its blob content, if any, is left to garbage collection."""
        scope = self.scope_id(namespace, pipeline, create=False)
        where = {"scope": scope, "run": run, "key": key}
        removed = (
            0 if scope is None else self.db.write(lambda conn: conn.execute(self._delete_one, where).rowcount)
        )
        if removed == 0:
            raise self._not_found(namespace, pipeline, run, key)

    # -- reads ------------------------------------------------------------------------------------------

    def _row(
        self,
        statement: str,
        namespace: str,
        pipeline: str,
        run: int,
        key: str,
        *,
        validate: Callable[[str], object] | None = None,
    ) -> tuple[Any, ...]:
        """The object's row; on a miss, ``validate`` (if given) checks the key's name first."""
        scope = self._scope_ids.get((namespace, pipeline))  # the cache first, without a call: every get
        if scope is None:
            scope = self.scope_id(namespace, pipeline, create=False)
        try:
            row = None if scope is None else self.db.query_one(statement, (scope, run, key))
        except StorageError:
            if validate is not None:
                validate(key)  # PostgreSQL refuses some bad keys (NUL) in the query itself: say why
            raise
        if row is None:
            if validate is not None:
                validate(key)
            raise self._not_found(namespace, pipeline, run, key)
        return row

    def get(
        self,
        namespace: str,
        pipeline: str,
        run: int,
        key: str,
        *,
        validate: Callable[[str], object] | None = None,
    ) -> bytes:
        """The verified value; ``validate`` checks the key's name when nothing is found under it."""
        size, sha256, data = self._row(self._get, namespace, pipeline, run, key, validate=validate)
        # The inline check of ContentStore.read, inlined: building the error context (or a lambda for it)
        # on every get measured 8% of a small get, which has a speed target.
        if data is not None and len(data) == size and hashlib.sha256(data).hexdigest() == sha256:
            return bytes(data)
        return self.content.read(sha256, size, data, self._what(namespace, pipeline, run, key))

    def open(self, namespace: str, pipeline: str, run: int, key: str) -> BinaryIO:
        size, sha256, data = self._row(self._get, namespace, pipeline, run, key)
        return self.content.open(sha256, size, data, self._what(namespace, pipeline, run, key))

    def info(self, namespace: str, pipeline: str, run: int, key: str) -> ObjectInfo:
        row = self._row(self._info, namespace, pipeline, run, key)
        return self._object_info(row, namespace, pipeline, run)

    def list(self, namespace: str, pipeline: str, run: int) -> list[ObjectInfo]:
        """Every object of the scope, oldest first."""
        scope = self.scope_id(namespace, pipeline, create=False)
        if scope is None:
            return []
        rows = self.db.query_all(self._list, {"scope": scope, "run": run})
        return [self._object_info(row, namespace, pipeline, run) for row in rows]

    # -- run expiry -------------------------------------------------------------------------------------

    def expired_through(self, last_run: int) -> int:
        """With ``last_run`` the latest run, run objects of runs numbered up to this are expired."""
        return max(last_run - self.run_object_expiry, 0)

    def expire_runs(
        self,
        namespace: str,
        pipeline: str,
        last_run: int,
        *,
        dry_run: bool = False,
        checkpoint: Checkpoint = no_checkpoint,
    ) -> int:
        """Remove the run objects of every run numbered ``last_run - run_object_expiry`` or lower.

        Raises the pipeline's expiry watermark first (so puts into those runs fail from then on), then
        deletes in bounded batches, each its own short transaction (``BatchSizer``; ``checkpoint`` runs
        before each). Costs what it removes: the delete walks an index range of expired runs, which
        earlier passes have emptied.
        """
        through = self.expired_through(last_run)
        scope = self.scope_id(namespace, pipeline, create=not dry_run)
        if scope is None:
            return 0
        if dry_run:
            state = self.db.query_one(self._run_state, {"scope": scope})
            watermark = max(through, int(state[1]) if state else 0)
            row = self.db.query_one(self._count_expired, {"scope": scope, "through": watermark})
            return int(row[0]) if row else 0
        state = self.db.query_one(self._run_state, {"scope": scope})
        if state is not None and state[0] >= last_run and state[1] >= through:
            # The watermark is already there (the sweep's usual case): delete only if something is left.
            watermark = int(state[1])
            if (
                watermark < 1
                or self.db.query_one(self._any_expired, {"scope": scope, "through": watermark}) is None
            ):
                return 0
        else:
            mark = {"scope": scope, "last_run": last_run, "through": through}

            def raise_watermark(conn: Connection) -> int:
                self.db.serialize(conn, SCOPE_LOCK, scope)  # no put is between its check and its commit
                return int(conn.execute(self._raise_watermark, mark).fetchone()[0])

            watermark = self.db.write(raise_watermark)
            if watermark < 1:
                return 0
        sizer = BatchSizer(initial=min(1000, self.delete_batch), maximum=self.delete_batch)

        def batch(size: int) -> tuple[int, float]:
            params = {"scope": scope, "through": watermark, "n": size}
            return delete_in_transaction(self.db, self._delete_expired, params)

        removed = 0
        while True:
            checkpoint()
            size = sizer.size
            deleted = sizer.run(batch)
            removed += deleted
            if deleted < size:
                return removed

    def enforce_limits(self, *, dry_run: bool = False) -> int:
        """The sweep behind the pipeline object limit: evict the oldest objects of every pipeline holding
        more than ``pipeline_object_limit`` (after the limit was lowered); how many were (or would be)
        removed. Each pipeline is one short transaction that recounts under the write lock."""
        removed = 0
        limit = self.pipeline_object_limit
        for scope, namespace, pipeline, count in self.db.query_all(self._over_limit, {"limit": limit}):
            if dry_run:
                removed += int(count) - limit
                continue

            def work(
                conn: Connection, scope: int = scope, namespace: str = namespace, pipeline: str = pipeline
            ) -> list[str]:
                self.db.serialize(conn, SCOPE_LOCK, scope)
                (current,) = conn.execute(self._count_pipeline, {"scope": scope}).fetchone()
                evicted = self._enforce_limit(conn, scope, int(current))
                self._record_evictions(conn, namespace, pipeline, evicted)
                return evicted

            evicted = self.db.write(work)
            removed += len(evicted)
            if evicted and self.events is None:
                self._evicted(namespace, pipeline, evicted)
        return removed

    def usage(self) -> dict[str, int]:
        """Counts and bytes of pipeline and run objects, and the bytes kept inline in the database."""
        found = {"pipeline_objects": 0, "pipeline_object_bytes": 0, "run_objects": 0, "run_object_bytes": 0}
        inline = 0
        for is_pipeline, count, size, inline_size in self.db.query_all(self._usage, {}):
            prefix = "pipeline_object" if is_pipeline else "run_object"
            found[f"{prefix}s"] = int(count)
            found[f"{prefix}_bytes"] = int(size or 0)
            inline += int(inline_size or 0)
        return {**found, "inline_bytes": inline}

    def _record_evictions(
        self, conn: Connection, namespace: str, pipeline: str, keys: builtins.list[str]
    ) -> None:
        if keys and self.events is not None:
            details = {"keys": keys, "limit": self.pipeline_object_limit}
            self.events.record(conn, "object_evicted", details, namespace=namespace, pipeline=pipeline)

    def _evicted(self, namespace: str, pipeline: str, keys: builtins.list[str]) -> None:
        if self.notify is not None:
            details = {"keys": keys, "limit": self.pipeline_object_limit}
            self.notify("object_evicted", details, namespace=namespace, pipeline=pipeline)

    def _check_run_open(self, conn: Connection, scope: int, namespace: str, pipeline: str, run: int) -> None:
        last_run, expired_through = conn.execute(self._run_state, {"scope": scope}).fetchone()
        if run <= max(expired_through, last_run - self.run_object_expiry):
            raise RunExpired(
                f"run {run} of pipeline {namespace}/{pipeline} has expired (object_store.run_object_expiry "
                f"= {self.run_object_expiry}, latest run {last_run}); store into a newer run, or raise "
                "the expiry"
            )

    # -- helpers ----------------------------------------------------------------------------------------

    @staticmethod
    def _object_info(row: tuple[Any, ...], namespace: str, pipeline: str, run: int) -> ObjectInfo:
        key, size, sha256, content_type, created_at = row
        return ObjectInfo(
            key, size, sha256, from_micros(created_at), content_type, namespace, pipeline, run or None
        )

    @staticmethod
    def _what(namespace: str, pipeline: str, run: int, key: str) -> str:
        return f"object {key!r} in {describe_scope(namespace, pipeline, run)}"

    @staticmethod
    def _not_found(namespace: str, pipeline: str, run: int, key: str) -> ObjectNotFound:
        return ObjectNotFound(
            f"no object {key!r} in {describe_scope(namespace, pipeline, run)}; list what is there with "
            "`objects ls`"
        )

    @staticmethod
    def _already_exists(namespace: str, pipeline: str, run: int, key: str) -> AlreadyExists:
        return AlreadyExists(
            f"object {key!r} already exists in {describe_scope(namespace, pipeline, run)}; "
            "pass overwrite=True (--overwrite) to replace it"
        )
