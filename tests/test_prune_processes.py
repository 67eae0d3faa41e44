"""Retention jobs in real processes: a prune killed with SIGKILL part-way leaves a consistent store that the
next prune finishes (once the dead process's lease expires), and a prune of a large backlog does not starve
writers of the same database file."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import datetime
from pathlib import Path

import pytest

import objstore
from objstore.engine import ObjStore
from objstore.errors import RunExpired
from objstore.types import PruneReport

CONFIG = """\
[api]
event_log_retention = "1h"
event_prune_interval = "1s"
task_execution_logs_dir = "data/task-logs"
[server]
storage_path = "data/{server}"
[object_store]
run_object_expiry = {expiry}
[object_store.sqlite]
path = "data/{objects}"
[secret_store.sqlite]
path = "data/{secrets}"
[scheduler]
prune_interval = "1s"
lease_ttl = "2s"
"""

HOUR_US = 3_600_000_000


def write_config(
    folder: Path,
    *,
    name: str = "objstore.toml",
    server: str = "objstore.db",
    objects: str = "objects.db",
    secrets: str = "secrets.db",
    expiry: int = 50,
) -> Path:
    path = folder / name
    path.write_text(CONFIG.format(server=server, objects=objects, secrets=secrets, expiry=expiry))
    return path


def connect(path: Path) -> sqlite3.Connection:
    """A plain connection for bulk loading and inspection, outside objstore."""
    return sqlite3.connect(path, isolation_level=None, timeout=30)


def load_expired_events(path: Path, count: int) -> None:
    """``count`` events of kind "expired", emitted two hours ago (retention: one hour); one transaction."""
    two_hours_ago = int(time.time() * 1_000_000) - 2 * HOUR_US
    with closing(connect(path)) as db:
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :count) "
            "INSERT INTO events (kind, emitted_at, details) SELECT 'expired', :at + i, '{}' FROM n",
            {"count": count, "at": two_hours_ago},
        )
        db.execute("COMMIT")


def count_rows(path: Path, sql: str, params: tuple[object, ...] = ()) -> int:
    with closing(connect(path)) as db:
        return int(db.execute(sql, params).fetchone()[0])


def expired_events(path: Path) -> int:
    return count_rows(path, "SELECT count(*) FROM events WHERE kind = 'expired'")


def integrity(path: Path) -> str:
    with closing(connect(path)) as db:
        rows = db.execute("PRAGMA integrity_check").fetchall()
        violations = db.execute("PRAGMA foreign_key_check").fetchall()
    assert violations == [], violations
    return "; ".join(str(row[0]) for row in rows)


def lease(path: Path, name: str) -> tuple[str, int] | None:
    with closing(connect(path)) as db:
        row = db.execute("SELECT holder, expires_at FROM leases WHERE name = ?", (name,)).fetchone()
    return None if row is None else (str(row[0]), int(row[1]))


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Subprocesses of a test: any still running at the end is killed, so none outlives it."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def prune_until_done(store: ObjStore, job: str, timeout: float) -> PruneReport:
    """``store.prune()`` until ``job`` is no longer skipped (another holder's lease expired)."""
    deadline = time.monotonic() + timeout
    while True:
        report = store.prune()
        if job not in report.skipped:
            return report
        assert time.monotonic() < deadline, f"{job} still skipped after {timeout}s"
        time.sleep(0.05)


def micros(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1_000_000)


def sigkill_while(
    process: subprocess.Popen[bytes], progress: Callable[[], int], before: int, delay: float
) -> None:
    """Wait until ``progress()`` drops below ``before`` (the process is deleting), then SIGKILL it after
    ``delay`` seconds."""
    wait_until(lambda: progress() < before or process.poll() is not None, 30, "the prune to start deleting")
    assert process.poll() is None, "the prune finished before it could be killed; give it more work"
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=10) == -signal.SIGKILL


def objstore_prune(config: Path, cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "objstore", "--config", str(config), "prune"],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_event_prune_killed_mid_batch_is_finished_by_the_next_prune(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    config = write_config(tmp_path)
    with objstore.open(config) as store:
        server = store.server_db.path
        young = [store.events.emit("young", {"i": i}).id for i in range(300)]
    total = 1_000_000
    load_expired_events(server, total)
    assert expired_events(server) == total

    pruner = objstore_prune(config, tmp_path)
    processes.append(pruner)
    sigkill_while(pruner, lambda: expired_events(server), total, delay=0.3)
    killed_at = time.time()

    # The store is consistent and only whole batches are gone: the oldest events, never the young ones.
    assert integrity(server) == "ok"
    left = expired_events(server)
    assert 0 < left < total, left
    with closing(connect(server)) as db:
        (oldest_left,) = db.execute("SELECT min(id) FROM events WHERE kind = 'expired'").fetchone()
        (gaps,) = db.execute(
            "SELECT count(*) FROM events WHERE kind = 'expired' AND id < ?", (oldest_left,)
        ).fetchone()
    assert gaps == 0  # deleted oldest first: what is left is one contiguous tail
    holder = lease(server, "prune:events")
    assert holder is not None and f":{pruner.pid}:" in holder[0], holder  # the dead process's lease

    with objstore.open(config) as store:
        assert [event.id for event in store.events.list(kind="young", limit=1000)] == young
        report = prune_until_done(store, "events", timeout=15)
        assert report.events == left
        assert report.interrupted == ()
        assert expired_events(server) == 0
        assert [event.id for event in store.events.list(kind="young", limit=1000)] == young
        (takeover,) = [
            e.details
            for e in store.events.list(kind="prune_finished", limit=100)
            if e.details["job"] == "events" and e.details["removed"] == {"events": left}
        ]
        assert f":{os.getpid()}:" in takeover["holder"]
        started = micros(takeover["started_at"])
        assert started >= holder[1]  # not taken over before the dead holder's lease expired...
        assert started / 1_000_000 - killed_at < 2 + 1.5  # ...but soon after (lease_ttl is 2s)
        assert store.check().ok
    assert integrity(server) == "ok"
    assert lease(server, "prune:events") is None


def test_run_expiry_killed_part_way_is_finished_by_the_next_prune(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    config = write_config(tmp_path)  # run_object_expiry = 50: nothing expires while the runs are made
    runs = 10
    with objstore.open(config) as store:
        pipe = store.pipeline("default", "build")
        for number in range(1, runs + 1):
            run = pipe.start_run()
            assert run.number == number
            run.objects.put("report.xml", f"<run {number}/>".encode())
        object_db = store.object_db.path
    # Bulk-load many small run objects into the runs that a lowered expiry makes old (1 to 9).
    per_run = 15_000
    value = b"v" * 100
    digest = hashlib.sha256(value).hexdigest()
    with closing(connect(object_db)) as db:
        (scope,) = db.execute(
            "SELECT id FROM object_pipelines WHERE namespace = 'default' AND pipeline = 'build'"
        ).fetchone()
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :count) "
            "INSERT INTO objects (scope_id, run, key, size, sha256, content_type, created_at, data) "
            "SELECT :scope, 1 + i % 9, 'bulk/' || i, 100, :digest, 'application/octet-stream', 0, :data "
            "FROM n",
            {"count": per_run * 9, "scope": scope, "digest": digest, "data": value},
        )
        db.execute("COMMIT")

    def expired_objects() -> int:
        return count_rows(object_db, "SELECT count(*) FROM objects WHERE run BETWEEN 1 AND 9")

    total = per_run * 9 + 9
    assert expired_objects() == total
    lowered = write_config(tmp_path, name="lowered.toml", expiry=1)  # objects of runs 1-9 expire
    pruner = objstore_prune(lowered, tmp_path)
    processes.append(pruner)
    sigkill_while(pruner, expired_objects, total, delay=0.1)

    assert integrity(object_db) == "ok"
    left = expired_objects()
    assert 0 < left < total, left
    with objstore.open(lowered) as store:
        pipe = store.pipeline("default", "build")
        # The watermark went up before the first delete: no put can land in an expiring run any more.
        with pytest.raises(RunExpired):
            pipe.run(5).objects.put("late.xml", b"<late/>")
        assert pipe.run(runs).objects.get("report.xml") == f"<run {runs}/>".encode()
        report = prune_until_done(store, "expiry", timeout=15)
        assert report.run_objects == left
        assert expired_objects() == 0
        assert [info.key for info in pipe.run(runs).objects.list()] == ["report.xml"]
        assert pipe.run(runs).objects.get("report.xml") == f"<run {runs}/>".encode()
        assert store.check().ok
    assert integrity(object_db) == "ok"


def test_writers_are_not_starved_while_a_large_backlog_is_pruned(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    # One file for all three databases: the writer and the prune contend for the same write lock.
    config = write_config(tmp_path, server="all.db", objects="all.db", secrets="all.db")
    with objstore.open(config) as store:
        path = store.server_db.path
        assert store.object_db.path == path
    total = 500_000
    load_expired_events(path, total)

    script = (
        "import json, sys, time, objstore\n"
        "with objstore.open(sys.argv[1]) as store:\n"
        "    store.server_db.query_one('SELECT 1', {})\n"
        "    started = time.time()\n"
        "    report = store.prune()\n"
        "    finished = time.time()\n"
        "print(json.dumps({'started': started, 'finished': finished, 'events': report.events,\n"
        "                  'skipped': report.skipped, 'interrupted': report.interrupted}))\n"
    )
    # Each operation: (what, started, finished) in time.time() seconds.
    operations: list[tuple[str, float, float]] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with objstore.open(config) as writer:
                pipe = writer.pipeline("default", "build")
                number = 0
                while not stop.is_set():
                    number += 1
                    began = time.time()
                    pipe.objects.put(f"cache/{number}", os.urandom(100))
                    put_done = time.time()
                    writer.events.emit("build_step", {"n": number}, namespace="default", pipeline="build")
                    operations.append(("put", began, put_done))
                    operations.append(("emit", put_done, time.time()))
        except BaseException as error:  # reported by the test thread
            errors.append(error)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        wait_until(lambda: len(operations) > 50, 10, "the writer to get going")
        pruner = subprocess.Popen(
            [sys.executable, "-c", script, str(config)], cwd=tmp_path, stdout=subprocess.PIPE
        )
        processes.append(pruner)
        out, _ = pruner.communicate(timeout=120)
        time.sleep(0.2)
    finally:
        stop.set()
        writer.join(timeout=30)
    assert not errors, errors
    assert pruner.returncode == 0
    result = json.loads(out)
    assert (result["events"], result["skipped"], result["interrupted"]) == (total, [], []), result
    assert expired_events(path) == 0

    prune_started, prune_finished = result["started"], result["finished"]
    writer_started, writer_finished = operations[0][1], operations[-1][2]
    assert writer_started < prune_started < prune_finished < writer_finished  # the prune ran inside
    assert prune_finished - prune_started > 0.3, result  # a real backlog, not a blink

    during = [op for op in operations if op[2] > prune_started and op[1] < prune_finished]
    latencies = sorted(finished - began for _, began, finished in during)
    p99 = latencies[int(len(latencies) * 0.99)]
    completions = [prune_started, *(op[2] for op in during if op[2] < prune_finished), prune_finished]
    longest_gap = max(b - a for a, b in itertools.pairwise(completions))
    puts = sum(1 for op in during if op[0] == "put")
    figures = (
        f"prune {prune_finished - prune_started:.2f}s; {len(during)} writes during it ({puts} puts), "
        f"p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {latencies[-1] * 1000:.1f} ms, longest time without a completed write "
        f"{longest_gap * 1000:.1f} ms"
    )
    print(figures)
    assert p99 < 0.1, figures
    assert puts >= 300, figures
    assert longest_gap < 0.25, figures  # progress throughout, not only before and after

    with objstore.open(config) as store:
        written = sum(1 for op in operations if op[0] == "put")
        assert store.events.list(kind="build_step", limit=1)[0].details == {"n": written}
        assert len(store.pipeline("default", "build").objects.list()) == 50  # the pipeline limit held
        assert integrity(path) == "ok"
        assert store.check().ok
