"""Pipelines and their runs, in the server database: run numbers allocated atomically from 1."""

from __future__ import annotations

from objstore.clock import Clock
from objstore.db.database import Connection, Database
from objstore.errors import RunNotFound
from objstore.stores.events import EventStore
from objstore.timestamps import from_micros, to_micros
from objstore.types import RunInfo

__all__ = ["RunStore"]


class RunStore:
    """Run numbering and lookup for every pipeline."""

    def __init__(self, database: Database, *, clock: Clock, events: EventStore | None = None) -> None:
        self.db = database
        self.clock = clock
        self.events = events  # in the same database: "run_started" commits with the run
        sql = database.sql
        self._ensure_pipeline = sql(
            "INSERT INTO pipelines (namespace, pipeline, last_run, created_at) VALUES (:ns, :p, 0, :at) "
            "ON CONFLICT (namespace, pipeline) DO NOTHING"
        )
        # One UPDATE ... RETURNING: the increment and the read are one step under the write lock (SQLite)
        # or the row lock (PostgreSQL), so concurrent starts get distinct consecutive numbers.
        self._next_number = sql(
            "UPDATE pipelines SET last_run = last_run + 1 WHERE namespace = :ns AND pipeline = :p "
            "RETURNING last_run"
        )
        self._insert_run = sql(
            "INSERT INTO runs (namespace, pipeline, number, started_at) VALUES (:ns, :p, :number, :at)"
        )
        self._get_run = sql(
            "SELECT started_at FROM runs WHERE namespace = :ns AND pipeline = :p AND number = :number"
        )
        self._latest = sql("SELECT last_run FROM pipelines WHERE namespace = :ns AND pipeline = :p")
        self._list_runs = sql(
            "SELECT number, started_at FROM runs WHERE namespace = :ns AND pipeline = :p ORDER BY number"
        )
        self._counts = sql("SELECT (SELECT count(*) FROM pipelines), (SELECT count(*) FROM runs)")
        self._all_pipelines = sql(
            "SELECT namespace, pipeline, last_run FROM pipelines ORDER BY namespace, pipeline"
        )

    def start(self, namespace: str, pipeline: str) -> RunInfo:
        """Allocate the pipeline's next run number (1, 2, ...) and record the run."""
        started_at = self.clock.now()
        at = to_micros(started_at)

        def work(conn: Connection) -> int:
            scope = {"ns": namespace, "p": pipeline}
            conn.execute(self._ensure_pipeline, {**scope, "at": at})
            (number,) = conn.execute(self._next_number, scope).fetchone()
            conn.execute(self._insert_run, {**scope, "number": number, "at": at})
            if self.events is not None:
                self.events.record(
                    conn, "run_started", {}, namespace=namespace, pipeline=pipeline, run=number
                )
            return int(number)

        return RunInfo(namespace, pipeline, self.db.write(work), started_at)

    def get(self, namespace: str, pipeline: str, number: int) -> RunInfo:
        row = self.db.query_one(self._get_run, {"ns": namespace, "p": pipeline, "number": number})
        if row is None:
            latest = self.latest(namespace, pipeline)
            has = f"its latest run is {latest}" if latest else "it has no runs yet"
            raise RunNotFound(
                f"pipeline {namespace}/{pipeline} has no run {number} ({has}); start one with start_run()"
            )
        return RunInfo(namespace, pipeline, number, from_micros(row[0]))

    def latest(self, namespace: str, pipeline: str) -> int:
        """The pipeline's newest run number, 0 if it has none."""
        row = self.db.query_one(self._latest, {"ns": namespace, "p": pipeline})
        return int(row[0]) if row else 0

    def all_runs(self, namespace: str, pipeline: str) -> list[RunInfo]:
        rows = self.db.query_all(self._list_runs, {"ns": namespace, "p": pipeline})
        return [RunInfo(namespace, pipeline, int(n), from_micros(at)) for n, at in rows]

    def counts(self) -> tuple[int, int]:
        """How many pipelines have started runs, and how many runs there are."""
        row = self.db.query_one(self._counts, {})
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def pipelines(self) -> list[tuple[str, str, int]]:
        """Every pipeline that has started a run, with its latest run number."""
        return [(str(ns), str(p), int(last)) for ns, p, last in self.db.query_all(self._all_pipelines, {})]
