"""Event log: pruning expired events, emitting one event, and what the event and task logs take on disk.

prune: ``store.pruner.run("events")`` (event_log_retention 1h, a FakeClock) removing the 500,000 older
of 1,000,000 events (50,000 of 100,000 with --quick), against raw sqlite3 on an identical table (same
columns, the same three indexes, the same PRAGMAs, the same rows) deleting
``WHERE id IN (SELECT id ... WHERE emitted_at < ? ORDER BY emitted_at LIMIT 5000)`` in autocommit batches
until a batch comes back short, then running ``PRAGMA incremental_vacuum`` to the end, since objstore's job
also hands the freed pages back. Target: objstore takes at most 1.5x the raw time (ratio >= 0.667).
Every ``server_db.write`` during objstore's prune is timed as well: the longest write transaction should
stay under 50 ms (informational with --quick).

emit: ``store.events.emit("run_started", {...}, namespace=..., pipeline=...)`` against a raw autocommit
INSERT of the same row (json.dumps of the same details and a fresh timestamp per insert) into the same
table. Target: >= 0.6x raw.

footprint (informational): bytes per event of a realistic mix of engine events, bytes per task log line
of CI output written through ``run.task_log(...).write``, and a projection to Gofer's reference workload
(5,000 pipelines, 6 months of events).

The prune rows are built once per invocation: one template objstore (opened first, so that its migrations
create the schema, then filled through a separate sqlite3 connection with executemany) and one raw
template, both checkpointed; every round copies its template into a fresh folder and flushes the copy to
disk before the clock starts.

Writes bench/results/events.json.
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import random
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from common import (
    RoundFn,
    Target,
    fmt_seconds,
    fresh_dir,
    interleave,
    median,
    open_store,
    paired_ratio,
    parser,
    print_targets,
    print_throughput,
    rounds_for,
    save_results,
    settle,
    stopwatch,
    summarize,
    table,
)

P = ParamSpec("P")
T = TypeVar("T")

START = datetime(2026, 1, 1, tzinfo=UTC)  # the FakeClock's time in every prune round
NOW_US = int(START.timestamp()) * 1_000_000
HOUR_US = 3_600 * 1_000_000
RETENTION = "1h"
CUTOFF_US = NOW_US - HOUR_US  # what objstore's job computes: now - event_log_retention
FILL_CHUNK = 100_000  # rows per executemany and per transaction when filling a template
PRUNE_PIPELINES = 5_000
EVICTED_DETAILS = '{"keys":["cache/deps.tar"],"limit":50}'
RAW_BATCH = 5_000  # the raw baseline's batch size (objstore sizes its batches to ~20 ms each)
LONGEST_WRITE_MS = 50.0
EMIT_KIND = "run_started"
EMIT_DETAILS = {"pipeline": "build-app"}

# The events table exactly as objstore's schema creates it; build_templates checks that the two agree.
EVENTS_DDL = (
    "CREATE TABLE events (id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, kind VARCHAR(64) NOT NULL, "
    "namespace VARCHAR(64), pipeline VARCHAR(64), run INTEGER, emitted_at BIGINT NOT NULL, "
    "details TEXT NOT NULL)",
    "CREATE INDEX ix_events_emitted_at ON events (emitted_at)",
    "CREATE INDEX ix_events_kind_id ON events (kind, id)",
    "CREATE INDEX ix_events_namespace_pipeline_id ON events (namespace, pipeline, id)",
)
INSERT = "INSERT INTO events (kind, namespace, pipeline, run, emitted_at, details) VALUES (?, ?, ?, ?, ?, ?)"
RAW_DELETE = (
    "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE emitted_at < ? ORDER BY emitted_at LIMIT ?)"
)

# Gofer's reference workload, for the projection (informational).
PROJ_PIPELINES = 5_000
PROJ_RUNS_PER_DAY = 20  # per pipeline
PROJ_EVENTS_PER_RUN = 4  # run_started, run_data_expired, object_evicted, prune bookkeeping
PROJ_TASKS_PER_RUN = 5
PROJ_LINES_PER_TASK = 500
GOFER_REFERENCE_GB = 9.0
GB = 1e9


# -- raw sqlite3 -----------------------------------------------------------------------------------------


def _raw_connect(path: Path) -> sqlite3.Connection:
    """objstore's connection policy (objstore/db/sqlite.py), by hand."""
    conn = sqlite3.connect(path, isolation_level=None)  # autocommit: every statement commits
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only takes effect before the first table
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-32768")  # objstore's 32 MiB page cache
    return conn


def _raw_events_db(path: Path) -> sqlite3.Connection:
    conn = _raw_connect(path)
    for statement in EVENTS_DDL:
        conn.execute(statement)
    return conn


def _schema(conn: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], list[tuple[str, ...]]]:
    """The events table's columns (name, type, not null, default, pk) and its indexes' columns."""
    columns = [tuple(row[1:]) for row in conn.execute("PRAGMA table_info(events)")]
    names = [row[1] for row in conn.execute("PRAGMA index_list(events)") if row[3] == "c"]
    indexes = sorted(tuple(col[2] for col in conn.execute(f"PRAGMA index_info({name})")) for name in names)
    return columns, indexes


def _checkpoint(path: Path) -> None:
    """Move the WAL into the database file and truncate it (no reader may be mid-transaction)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0, f"checkpoint of {path} was blocked"
    finally:
        conn.close()


# -- prune -----------------------------------------------------------------------------------------------


def fill_expiring(conn: sqlite3.Connection, count: int) -> int:
    """``count`` object_evicted events spread evenly over the two hours before NOW, oldest first (ids and
    times grow together), so the first half is older than NOW - 1h. Returns how many are."""
    step = 2 * HOUR_US // count
    first = NOW_US - 2 * HOUR_US
    for lo in range(0, count, FILL_CHUNK):
        rows = [
            ("object_evicted", "default", f"p{i % PRUNE_PIPELINES}", None, first + i * step, EVICTED_DETAILS)
            for i in range(lo, min(count, lo + FILL_CHUNK))
        ]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT, rows)
        conn.execute("COMMIT")
    (older,) = conn.execute("SELECT count(*) FROM events WHERE emitted_at < ?", (CUTOFF_US,)).fetchone()
    return int(older)


def _prune_store(folder: Path) -> Any:
    import objstore

    settings = objstore.Settings.for_directory(folder, api={"event_log_retention": RETENTION})
    return objstore.ObjStore(settings, clock=objstore.FakeClock(START))


def build_templates(tpl: Path, count: int) -> int:
    """The objstore and raw templates under ``tpl`` ("objstore/", "raw/events.db"), ``count`` events each;
    returns how many of them are expired."""
    store = _prune_store(tpl / "objstore")  # opened first: its migrations create the schema
    try:
        db_path = store.settings.server.storage_path
        conn = sqlite3.connect(db_path, isolation_level=None)
        try:
            expiring = fill_expiring(conn, count)
            objstore_schema = _schema(conn)
        finally:
            conn.close()
    finally:
        store.close()
    _checkpoint(db_path)
    (tpl / "raw").mkdir()
    conn = _raw_events_db(tpl / "raw" / "events.db")
    try:
        raw_expiring = fill_expiring(conn, count)
        raw_schema = _schema(conn)
    finally:
        conn.close()
    _checkpoint(tpl / "raw" / "events.db")
    assert raw_schema == objstore_schema, (
        f"objstore's events table changed; update EVENTS_DDL: {objstore_schema} != {raw_schema}"
    )
    assert expiring == raw_expiring == count // 2, (expiring, raw_expiring, count)
    return expiring


def _copy(template: Path, dest: Path) -> None:
    """Copy a template folder, then flush the copy, so the timed part never pays for its write-back."""
    shutil.copytree(template, dest)
    for path in dest.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    settle(dest)


def _timed(method: Callable[P, T], durations: list[float]) -> Callable[P, T]:
    """``method``, appending each call's seconds to ``durations``."""

    def timed(*args: P.args, **kwargs: P.kwargs) -> T:
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            durations.append(time.perf_counter() - start)

    return timed


def _timed_write(write: Callable[[Callable[[Any], T]], T], writes: list[float], works: list[float]) -> Any:
    """``Database.write``, appending the seconds of each call to ``writes`` and of the work done inside
    its transaction (here: the DELETE statement) to ``works``; the difference is BEGIN and COMMIT, and the
    WAL auto-checkpoint SQLite runs after a COMMIT that took the log past 1000 pages."""

    def timed_write(work: Callable[[Any], T]) -> T:
        return _timed(write, writes)(_timed(work, works))

    return timed_write


def objstore_prune(template: Path, expiring: int, details: list[dict[str, float]]) -> RoundFn:
    """The public job, with every ``server_db.write`` (one per delete batch) and the final
    ``reclaim_space`` timed by wrapping the instance's methods; appends those figures to ``details``."""

    def run(folder: Path) -> float:
        _copy(template, folder / "store")
        store = _prune_store(folder / "store")
        try:
            db = store.server_db
            writes: list[float] = []
            works: list[float] = []
            reclaims: list[float] = []
            db.write = _timed_write(db.write, writes, works)
            db.reclaim_space = _timed(db.reclaim_space, reclaims)
            lap = stopwatch()
            result = store.pruner.run("events")
            seconds = lap()
            assert result.skipped_for is None and result.stopped is None, result
            assert result.removed["events"] == expiring, result
            details.append(
                {
                    "seconds": seconds,
                    "write_transactions": len(writes),
                    "longest_write_ms": max(writes) * 1000,
                    "median_write_ms": sorted(writes)[len(writes) // 2] * 1000,
                    "longest_delete_statement_ms": max(works) * 1000,
                    "delete_statements_s": sum(works),
                    "writes_s": sum(writes),
                    "reclaim_space_s": sum(reclaims),
                }
            )
        finally:
            store.close()
        return seconds

    return run


def raw_prune(template: Path, expiring: int, details: list[dict[str, float]]) -> RoundFn:
    """Batches of 5,000, each its own autocommit transaction, then the freed pages handed back.

    ``execute("PRAGMA incremental_vacuum")`` frees a single page per call under Python's sqlite3 module
    (it stops at the statement's first step); ``executescript`` runs it to completion: one transaction
    for the whole free list.
    """

    def run(folder: Path) -> float:
        _copy(template, folder / "raw")
        conn = _raw_connect(folder / "raw" / "events.db")
        try:
            execute = conn.execute
            deleted = 0
            longest = 0.0
            lap = stopwatch()
            while True:
                batch = stopwatch()
                count = execute(RAW_DELETE, (CUTOFF_US, RAW_BATCH)).rowcount
                longest = max(longest, batch())
                deleted += count
                if count < RAW_BATCH:
                    break
            vacuum = stopwatch()
            conn.executescript("PRAGMA incremental_vacuum;")
            vacuum_s = vacuum()
            seconds = lap()
            assert deleted == expiring, (deleted, expiring)
            assert execute("PRAGMA freelist_count").fetchone() == (0,)
            details.append({"seconds": seconds, "longest_batch_ms": longest * 1000, "vacuum_s": vacuum_s})
        finally:
            conn.close()
        return seconds

    return run


def profile_prune(template: Path, base: Path | None, top: int = 20) -> str:
    """cProfile of one objstore prune on a copy of the template, by cumulative time."""
    with fresh_dir(base) as folder:
        _copy(template, folder / "store")
        store = _prune_store(folder / "store")
        try:
            profiler = cProfile.Profile()
            profiler.runcall(store.pruner.run, "events")
        finally:
            store.close()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


# -- emit ------------------------------------------------------------------------------------------------


def objstore_emit(count: int) -> RoundFn:
    def run(folder: Path) -> float:
        store = open_store(folder)
        try:
            emit = store.events.emit
            emit(EMIT_KIND, EMIT_DETAILS, namespace="default", pipeline="build-app")  # warm-up
            lap = stopwatch()
            for _ in range(count):
                emit(EMIT_KIND, EMIT_DETAILS, namespace="default", pipeline="build-app")
            seconds = lap()
            assert store.event_store.summary()[0] == count + 1
        finally:
            store.close()
        return seconds

    return run


def raw_emit(count: int) -> RoundFn:
    def run(folder: Path) -> float:
        conn = _raw_events_db(folder / "raw.db")
        try:
            execute = conn.execute
            dumps = json.dumps
            now_ns = time.time_ns
            details = dumps(EMIT_DETAILS, separators=(",", ":"))
            execute(INSERT, (EMIT_KIND, "default", "build-app", None, now_ns() // 1000, details))  # warm-up
            lap = stopwatch()
            for _ in range(count):
                details = dumps(EMIT_DETAILS, separators=(",", ":"))
                execute(INSERT, (EMIT_KIND, "default", "build-app", None, now_ns() // 1000, details))
            seconds = lap()
            assert execute("SELECT count(*) FROM events").fetchone() == (count + 1,)
        finally:
            conn.close()
        return seconds

    return run


# -- footprint -------------------------------------------------------------------------------------------


def _engine_events(store: Any, count: int) -> None:
    """``count`` events as the engine records them, four per run of a random pipeline of 5,000:
    run_started, object_evicted, run_data_expired, secret_written. Written through ``record`` (the row
    ``emit`` writes) in transactions of 10,000, with the clock moving 0.25 s per event."""
    rng = random.Random(7)
    pipelines = [f"service-{k:04d}" for k in range(PRUNE_PIPELINES)]
    runs = {p: rng.randint(1, 3_000) for p in pipelines}
    object_expiry = store.settings.object_store.run_object_expiry
    log_expiry = store.settings.api.task_execution_log_expiry
    record = store.event_store.record
    advance = store.clock.advance

    def one_run(conn: Any) -> None:
        pipeline = rng.choice(pipelines)
        runs[pipeline] += 1
        run = runs[pipeline]
        where = {"namespace": "default", "pipeline": pipeline}
        advance(0.25)
        record(conn, "run_started", {}, run=run, **where)
        advance(0.25)
        evicted = {"keys": [f"cache/deps-{rng.getrandbits(32):08x}.tar.zst"], "limit": 50}
        record(conn, "object_evicted", evicted, **where)
        advance(0.25)
        expired = {
            "latest_run": run,
            "run_objects_through": max(run - object_expiry, 0),
            "task_logs_through": max(run - log_expiry, 0),
            "run_objects": rng.randint(1, 40),
            "task_logs": 5,
        }
        record(conn, "run_data_expired", expired, **where)
        advance(0.25)
        written = {"scope": "pipeline", "name": "DEPLOY_TOKEN", "replaced": False}
        record(conn, "secret_written", written, **where)

    def batch(conn: Any, runs_in_batch: int) -> None:
        for _ in range(runs_in_batch):
            one_run(conn)

    for done in range(0, count, 10_000):
        runs_now = min(10_000, count - done) // 4
        store.server_db.write(lambda conn, n=runs_now: batch(conn, n))


def _per_btree(path: Path, count: int) -> dict[str, float]:
    """Bytes per event in the events table and each of its indexes (dbstat), if SQLite has dbstat."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT name, sum(pgsize) FROM dbstat WHERE name = 'events' OR name LIKE 'ix_events_%' "
            "GROUP BY name ORDER BY name"
        ).fetchall()
    except sqlite3.OperationalError:  # built without SQLITE_ENABLE_DBSTAT_VTAB
        return {}
    finally:
        conn.close()
    return {str(name): int(size) / count for name, size in rows}


def ci_line(i: int, total: int) -> str:
    """One line of CI output, ~80 characters with its newline."""
    return (
        f"[2026-11-21T10:{i // 60 % 60:02d}:{i % 60:02d}Z] compile: building module "
        f"src/pkg{i % 97:02d}/mod_{i % 1000:03d}.py ({i + 1}/{total})\n"
    )


def _on_disk(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def footprint(base: Path | None, n_events: int, n_lines: int) -> dict[str, Any]:
    import objstore

    with fresh_dir(base) as folder:
        store = objstore.ObjStore(objstore.Settings.for_directory(folder), clock=objstore.FakeClock(START))
        try:
            db_path = store.settings.server.storage_path
            _checkpoint(db_path)
            empty = store.server_db.size_bytes()
            _engine_events(store, n_events)
            _checkpoint(db_path)
            full = store.server_db.size_bytes()
            (stored, _, _) = store.event_store.summary()
            assert stored == n_events, (stored, n_events)
            per_btree = _per_btree(db_path, n_events)

            run = store.pipeline("default", "build").start_run()
            log = run.task_log("compile")
            lines = [ci_line(i, n_lines) for i in range(n_lines)]
            for line in lines:
                log.write(line)
            log.finish()
            log_bytes = os.stat(log.path).st_size
            # One task as the projection assumes it (500 lines), on disk: its .log and .done files.
            task = run.task_log("test")
            for line in lines[:PROJ_LINES_PER_TASK]:
                task.write(line)
            task.finish()
            task_on_disk = _on_disk(task.path) + _on_disk(task.path.with_suffix(".done"))
            run_dir_on_disk = _on_disk(task.path.parent)
            retention: timedelta = store.settings.api.event_log_retention
            log_expiry = int(store.settings.api.task_execution_log_expiry)
        finally:
            store.close()
    return {
        "events": n_events,
        "database_bytes_empty": empty,
        "database_bytes": full,
        "bytes_per_event": (full - empty) / n_events,
        "bytes_per_event_by_btree": per_btree,
        "task_log_lines": n_lines,
        "task_log_bytes": log_bytes,
        "bytes_per_line": log_bytes / n_lines,
        "mean_line_chars": sum(len(x) for x in lines) / n_lines,
        "task_of_500_lines_on_disk_bytes": task_on_disk,
        "run_folder_on_disk_bytes": run_dir_on_disk,
        "event_log_retention_days": retention / timedelta(days=1),
        "task_execution_log_expiry": log_expiry,
    }


def project(fp: dict[str, Any]) -> dict[str, Any]:
    """Gofer's reference workload from the measured figures."""
    days = fp["event_log_retention_days"]
    kept_runs = fp["task_execution_log_expiry"]
    events = PROJ_PIPELINES * PROJ_RUNS_PER_DAY * days * PROJ_EVENTS_PER_RUN
    lines = PROJ_PIPELINES * kept_runs * PROJ_TASKS_PER_RUN * PROJ_LINES_PER_TASK
    event_gb = events * fp["bytes_per_event"] / GB
    logs_gb = lines * fp["bytes_per_line"] / GB
    logs_on_disk_gb = (
        PROJ_PIPELINES
        * kept_runs
        * (PROJ_TASKS_PER_RUN * fp["task_of_500_lines_on_disk_bytes"] + fp["run_folder_on_disk_bytes"])
        / GB
    )
    return {
        "assumptions": {
            "pipelines": PROJ_PIPELINES,
            "runs_per_pipeline_per_day": PROJ_RUNS_PER_DAY,
            "engine_events_per_run": PROJ_EVENTS_PER_RUN,
            "event_log_retention_days": days,
            "tasks_per_run": PROJ_TASKS_PER_RUN,
            "lines_per_task": PROJ_LINES_PER_TASK,
            "task_logs_kept_runs_per_pipeline": kept_runs,
        },
        "events": events,
        "event_log_gb": event_gb,
        "task_log_lines": lines,
        "task_logs_gb": logs_gb,
        "task_logs_on_disk_gb": logs_on_disk_gb,
        "total_gb": event_gb + logs_on_disk_gb,
        "gofer_reference_gb": GOFER_REFERENCE_GB,
    }


# -- main ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--profile", action="store_true", help="also print a cProfile of one objstore prune")
    args = p.parse_args(argv)
    base = args.tmpdir
    # A full prune round takes ~15 s per contender: no warm-up round (imports and first touches are
    # noise next to that), and fewer rounds than the other benchmarks.
    prune_rounds = rounds_for(args, quick=3, full=5)
    emit_rounds = rounds_for(args, quick=3, full=7)
    n_prune = 100_000 if args.quick else 1_000_000
    n_emit = 2_000 if args.quick else 20_000
    n_events = 20_000 if args.quick else 200_000
    n_lines = 10_000 if args.quick else 100_000

    objstore_details: list[dict[str, float]] = []
    raw_details: list[dict[str, float]] = []
    profile = ""
    with fresh_dir(base, prefix="objstore-bench-tpl-") as tpl:
        print(f"events prune: building templates of {n_prune:,} events", file=sys.stderr)
        expiring = build_templates(tpl, n_prune)
        print(f"events prune: {expiring:,} of {n_prune:,} expired, {prune_rounds} rounds", file=sys.stderr)
        prune_samples = interleave(
            {
                "objstore": objstore_prune(tpl / "objstore", expiring, objstore_details),
                "raw sqlite3": raw_prune(tpl / "raw", expiring, raw_details),
            },
            prune_rounds,
            base=base,
            warmup=False,
            progress="events prune",
        )
        if args.profile:
            profile = profile_prune(tpl / "objstore", base)
    print(f"events emit: {n_emit:,} emits/round, {emit_rounds} rounds", file=sys.stderr)
    emit_samples = interleave(
        {"objstore": objstore_emit(n_emit), "raw sqlite3": raw_emit(n_emit)},
        emit_rounds,
        base=base,
        progress="events emit",
    )
    print(f"events footprint: {n_events:,} events, {n_lines:,} task log lines", file=sys.stderr)
    fp = footprint(base, n_events, n_lines)
    projection = project(fp)

    prune_stats = summarize(prune_samples, expiring)
    emit_stats = summarize(emit_samples, n_emit)

    def ratio(stats: dict[str, dict[str, Any]]) -> float:
        return float(stats["raw sqlite3"]["median_s"] / stats["objstore"]["median_s"])

    prune_ratio = ratio(prune_stats)
    emit_ratio = ratio(emit_stats)
    longest_ms = max(d["longest_write_ms"] for d in objstore_details)
    targets = [
        Target(
            f"prune {expiring:,} of {n_prune:,} events vs raw sqlite3",
            prune_ratio,
            ">=",
            round(1 / 1.5, 3),
            note="objstore time <= 1.5x raw; both hand the freed pages back",
        ),
        Target(
            "prune: longest write transaction",
            longest_ms,
            "<",
            LONGEST_WRITE_MS,
            unit=" ms",
            note="max over rounds of server_db.write (incl. the WAL auto-checkpoint after COMMIT)",
            informational=bool(args.quick),
        ),
        Target("emit one event vs raw autocommit INSERT", emit_ratio, ">=", 0.6),
    ]

    print_throughput(
        f"prune: {expiring:,} expired of {n_prune:,} events (ops = events removed)",
        prune_stats,
        ["raw sqlite3"],
        "objstore",
    )
    rows = []
    for name, per_round in (("objstore", objstore_details), ("raw sqlite3", raw_details)):
        for n, d in enumerate(per_round, 1):
            if name == "objstore":
                what = (
                    f"{d['write_transactions']:.0f} write transactions, median "
                    f"{d['median_write_ms']:.1f} ms, longest {d['longest_write_ms']:.1f} ms "
                    f"(DELETE statement alone: {d['longest_delete_statement_ms']:.1f} ms); "
                    f"reclaim_space {fmt_seconds(d['reclaim_space_s'])}"
                )
            else:
                what = (
                    f"batches of {RAW_BATCH:,}, longest {d['longest_batch_ms']:.1f} ms; "
                    f"incremental_vacuum {fmt_seconds(d['vacuum_s'])}"
                )
            rows.append([f"{name} round {n}", fmt_seconds(d["seconds"]), what])
    print(table(["prune", "time", "transactions"], rows))
    statements = median([d["delete_statements_s"] for d in objstore_details])
    in_writes = median([d["writes_s"] for d in objstore_details])
    print(
        f"objstore, medians over rounds: the DELETE statements took {fmt_seconds(statements)} of the "
        f"{fmt_seconds(in_writes)} spent in server_db.write; the rest is BEGIN, COMMIT (writing the "
        "changed pages to the WAL) and the auto-checkpoints that follow a COMMIT"
    )
    print_throughput(f"emit one event, {n_emit:,} per round", emit_stats, ["raw sqlite3"], "objstore")

    print(f"\nfootprint (informational), {n_events:,} engine events, {n_lines:,} task log lines")
    fp_rows = [
        ["bytes per event (database incl. -wal, after checkpoint)", f"{fp['bytes_per_event']:.1f}"],
        *[[f"  of which {name}", f"{size:.1f}"] for name, size in fp["bytes_per_event_by_btree"].items()],
        [f"bytes per task log line ({fp['mean_line_chars']:.1f} chars)", f"{fp['bytes_per_line']:.1f}"],
        ["one 500-line task on disk (.log + .done)", f"{fp['task_of_500_lines_on_disk_bytes']:,}"],
    ]
    print(table(["measure", "bytes"], fp_rows))
    a = projection["assumptions"]
    print(
        f"\nprojection to Gofer's reference workload (assumed): {a['pipelines']:,} pipelines x "
        f"{a['runs_per_pipeline_per_day']} runs/day x {a['event_log_retention_days']:g} days "
        f"(event_log_retention) x {a['engine_events_per_run']} engine events/run = "
        f"{projection['events']:,.0f} events; task logs: {a['tasks_per_run']} tasks/run x "
        f"{a['lines_per_task']} lines, last {a['task_logs_kept_runs_per_pipeline']} runs per pipeline "
        f"(task_execution_log_expiry) = {projection['task_log_lines']:,} lines"
    )
    print(
        table(
            ["projected", "GB (1e9 bytes)"],
            [
                ["event log", f"{projection['event_log_gb']:.1f}"],
                ["task logs (content)", f"{projection['task_logs_gb']:.1f}"],
                ["task logs (on disk, .done files and folders)", f"{projection['task_logs_on_disk_gb']:.1f}"],
                ["total (event log + task logs on disk)", f"{projection['total_gb']:.1f}"],
                ["Gofer's reference figure", f"~{GOFER_REFERENCE_GB:g}"],
            ],
        )
    )
    print_targets(targets)

    if profile:
        print(f"\ncProfile of one objstore prune (cumulative):\n{profile}")
    return save_results(
        "events",
        args,
        params={
            "prune_rounds": prune_rounds,
            "emit_rounds": emit_rounds,
            "prune_events": n_prune,
            "prune_expired": expiring,
            "prune_pipelines": PRUNE_PIPELINES,
            "event_log_retention": RETENTION,
            "raw_batch": RAW_BATCH,
            "emits_per_round": n_emit,
            "footprint_events": n_events,
            "footprint_task_log_lines": n_lines,
        },
        prune=prune_stats,
        prune_rounds={"objstore": objstore_details, "raw sqlite3": raw_details},
        emit=emit_stats,
        ratios={"prune_vs_raw": prune_ratio, "emit_vs_raw": emit_ratio},
        paired_ratios={
            "prune_vs_raw": paired_ratio(prune_samples["raw sqlite3"], prune_samples["objstore"]),
            "emit_vs_raw": paired_ratio(emit_samples["raw sqlite3"], emit_samples["objstore"]),
        },
        longest_write_transaction_ms=longest_ms,
        footprint=fp,
        projection=projection,
        targets=targets,
        profile=profile or None,
    )


if __name__ == "__main__":
    sys.exit(main())
