"""`objstore serve` as a real process: JSON log lines, a clean exit on SIGTERM and SIGINT, one runner per
job across several processes sharing the databases, and a killed runner's job taken over once its lease
expires (never before)."""

from __future__ import annotations

import itertools
import json
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
from typing import Any

import pytest

import objstore

CONFIG = """\
[api]
event_log_retention = "1h"
event_prune_interval = "1s"
task_execution_logs_dir = "data/task-logs"
[server]
storage_path = "data/objstore.db"
[object_store.sqlite]
path = "data/objects.db"
[secret_store.sqlite]
path = "data/secrets.db"
[scheduler]
prune_interval = "1s"
lease_ttl = "{lease_ttl}"
"""

HOUR_US = 3_600_000_000


def write_config(folder: Path, *, lease_ttl: str = "3s") -> Path:
    path = folder / "objstore.toml"
    path.write_text(CONFIG.format(lease_ttl=lease_ttl))
    return path


def server_db(config: Path) -> Path:
    """Create the databases (schema included); the path of the server database."""
    with objstore.open(config) as store:
        return store.server_db.path


def connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None, timeout=30)


def load_expired_events(path: Path, count: int, *, expiring_in: float | None = None) -> None:
    """``count`` events of kind "expired", emitted two hours ago (retention: one hour) in one transaction;
    or, with ``expiring_in``, all emitted at the moment that makes them expire that many seconds from now,
    in transactions of 50,000 (short enough not to hold the write lock long)."""
    now = int(time.time() * 1_000_000)
    if expiring_in is None:
        chunks, at, step = [count], now - 2 * HOUR_US, 1
    else:
        chunks, at, step = [50_000] * (count // 50_000), now - HOUR_US + int(expiring_in * 1_000_000), 0
        assert sum(chunks) == count
    with closing(connect(path)) as db:
        for chunk in chunks:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :count) "
                "INSERT INTO events (kind, emitted_at, details) "
                "SELECT 'expired', :at + i * :step, '{}' FROM n",
                {"count": chunk, "at": at, "step": step},
            )
            db.execute("COMMIT")


def expired_events(path: Path) -> int:
    with closing(connect(path)) as db:
        return int(db.execute("SELECT count(*) FROM events WHERE kind = 'expired'").fetchone()[0])


def lease(path: Path, name: str) -> tuple[str, int] | None:
    """(holder, expires_at in microseconds) of a lease row, or None."""
    with closing(connect(path)) as db:
        row = db.execute("SELECT holder, expires_at FROM leases WHERE name = ?", (name,)).fetchone()
    return None if row is None else (str(row[0]), int(row[1]))


def integrity(path: Path) -> str:
    with closing(connect(path)) as db:
        return "; ".join(str(row[0]) for row in db.execute("PRAGMA integrity_check"))


def prune_records(config: Path) -> list[dict[str, Any]]:
    """The details of every "prune_finished" event, oldest first."""
    with objstore.open(config) as store:
        return [event.details for event in store.events.list(kind="prune_finished", limit=10_000)]


def micros(iso: str) -> int:
    moment = datetime.fromisoformat(iso)
    assert moment.tzinfo is not None, iso
    return int(moment.timestamp() * 1_000_000)


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Serve:
    """One `python -m objstore serve` process, its stderr read line by line as it comes."""

    def __init__(self, config: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "objstore", "--config", str(config), "serve"],
            cwd=config.parent,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pid = self.process.pid
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def records(self) -> list[dict[str, Any]]:
        """Every log line so far, parsed: each must be one JSON object."""
        with self._changed:
            lines = list(self.lines)
        records = []
        for line in lines:
            record = json.loads(line)
            assert isinstance(record, dict), line
            records.append(record)
        return records

    def job_runs(self, job: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r.get("job") == job and "removed" in r]

    def skips(self, job: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r.get("job") == job and " skipped" in r["message"]]

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not any(predicate(json.loads(line)) for line in self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    raise AssertionError(f"no log line for {what}; stderr:\n" + "\n".join(self.lines))
                self._changed.wait(min(left, 0.1))

    def wait_until_logged(self, job: str, timeout: float) -> None:
        """Wait for the log line of a run of ``job``."""

        def ran(record: dict[str, Any]) -> bool:
            return record.get("job") == job and "removed" in record

        self.wait_for(ran, timeout, f"a run of {job}")

    def stop(self, signum: int = signal.SIGTERM) -> float:
        """Send ``signum``; the seconds until the process exited. Asserts a clean exit."""
        assert self.process.poll() is None, "\n".join(self.lines)
        sent = time.monotonic()
        self.process.send_signal(signum)
        code = self.process.wait(timeout=30)
        elapsed = time.monotonic() - sent
        self._reader.join(timeout=10)
        stderr = "\n".join(self.lines)
        assert code == 0, stderr
        assert "Traceback" not in stderr
        self.records()  # every line is JSON
        return elapsed

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(timeout=10) == -signal.SIGKILL
        self._reader.join(timeout=10)


@pytest.fixture
def serve() -> Iterator[Callable[[Path], Serve]]:
    """Start `serve` processes; any still running when the test ends is killed."""
    started: list[Serve] = []

    def start(config: Path) -> Serve:
        process = Serve(config)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.process.poll() is None:
            process.process.kill()
        process.process.wait(timeout=30)


@pytest.mark.parametrize(
    ("signum", "jobs"),
    [(signal.SIGTERM, ("events", "expiry")), (signal.SIGINT, ("events",))],
    ids=["SIGTERM", "SIGINT"],
)
def test_serve_runs_the_jobs_and_exits_cleanly_on_a_signal(
    tmp_path: Path, serve: Callable[[Path], Serve], signum: int, jobs: tuple[str, ...]
) -> None:
    config = write_config(tmp_path)
    path = server_db(config)
    load_expired_events(path, 1000)
    process = serve(config)
    for job in jobs:  # each runs at start, staggered by a second
        process.wait_until_logged(job, 15)

    elapsed = process.stop(signum)
    assert elapsed < 5, elapsed
    records = process.records()
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records), records
    first = process.job_runs("events")[0]
    assert first["message"].startswith("prune job events removed 1000 events in ")
    assert first["removed"] == {"events": 1000} and first["stopped"] is None
    assert isinstance(first["seconds"], float)
    assert any(r["message"] == f"objstore serving (pid {process.pid})" for r in records)
    assert records[-1]["message"] == "objstore stopped"
    assert expired_events(path) == 0
    assert lease(path, "prune:events") is None  # released, not left to expire
    recorded = {d["job"] for d in prune_records(config) if f":{process.pid}:" in d["holder"]}
    assert set(jobs) <= recorded


def test_sigterm_during_a_long_job_stops_it_at_a_batch_boundary(
    tmp_path: Path, serve: Callable[[Path], Serve]
) -> None:
    config = write_config(tmp_path)
    path = server_db(config)
    total = 600_000
    load_expired_events(path, total)
    process = serve(config)
    wait_until(lambda: expired_events(path) < total, 15, "the events job to start deleting")

    elapsed = process.stop(signal.SIGTERM)
    assert elapsed < 5, elapsed
    (run,) = process.job_runs("events")
    assert run["stopped"] == "shutting down", run
    left = expired_events(path)
    assert 0 < left < total
    assert run["removed"] == {"events": total - left}  # what it reports is what it did
    assert lease(path, "prune:events") is None  # released on the way out: the next process need not wait
    assert integrity(path) == "ok"


def test_two_serve_processes_never_run_the_same_job_at_once(
    tmp_path: Path, serve: Callable[[Path], Serve]
) -> None:
    config = write_config(tmp_path, lease_ttl="2s")
    path = server_db(config)
    first, second = serve(config), serve(config)
    for process in (first, second):
        process.wait_until_logged("events", 15)
    # A backlog that takes one run longer than the events interval (1s), so that the other process's
    # scheduler fires meanwhile. It is loaded in short transactions (a long one would hold up the lease
    # updates) and expires all at once, after the load.
    backlog = 700_000
    loading = time.monotonic()
    load_expired_events(path, backlog, expiring_in=3)
    assert time.monotonic() - loading < 2.8, "the backlog took too long to load: raise expiring_in"
    wait_until(lambda: expired_events(path) == 0, 30, "the backlog to be pruned", interval=0.1)
    time.sleep(1.2)  # another round of every job in both processes
    for process in (first, second):
        assert process.stop(signal.SIGTERM) < 5

    records = prune_records(config)
    for d in records:
        assert f":{first.pid}:" in d["holder"] or f":{second.pid}:" in d["holder"], d
    for job in ("events", "expiry", "blobs"):
        runs = sorted(
            (micros(d["started_at"]), micros(d["finished_at"]), d["holder"])
            for d in records
            if d["job"] == job
        )
        assert len(runs) >= 4, (job, runs)
        for (_, finished, holder), (started, _, other) in itertools.pairwise(runs):
            assert started >= finished, f"{job}: {other} started before {holder} had finished"
    # One run of one process pruned the whole backlog, renewing its lease as it went...
    pruning = [d for d in records if d["job"] == "events" and d["removed"]["events"]]
    assert len(pruning) == 1, "\n".join(map(str, pruning))
    (big,) = pruning
    assert big["removed"] == {"events": backlog} and big["stopped"] is None, big
    assert big["seconds"] > 1, big
    # ...while the other process ran jobs before and after it: it was there all along, and never ran the
    # events job during that run (checked above).
    other = second if f":{first.pid}:" in big["holder"] else first
    mine = [d for d in records if f":{other.pid}:" in d["holder"]]
    timeline = "\n".join(f"{d['job']} {d['started_at']} {d['finished_at']} {d['holder']}" for d in records)
    assert any(micros(d["finished_at"]) <= micros(big["started_at"]) for d in mine), timeline
    assert any(micros(d["started_at"]) >= micros(big["finished_at"]) for d in mine), timeline
    turned_away = [r for r in other.skips("events") if r["holder"] == big["holder"]]
    print(f"backlog run {big['seconds']:.2f}s; {len(turned_away)} attempt(s) of the other process skipped")
    assert integrity(path) == "ok"


def test_a_killed_holder_is_taken_over_once_its_lease_expires(
    tmp_path: Path, serve: Callable[[Path], Serve]
) -> None:
    config = write_config(tmp_path, lease_ttl="3s")
    path = server_db(config)
    total = 400_000
    load_expired_events(path, total)

    a = serve(config)

    def a_is_deleting() -> bool:
        held = lease(path, "prune:events")
        return held is not None and f":{a.pid}:" in held[0] and expired_events(path) < total

    wait_until(a_is_deleting, 15, "process A to hold the events lease and delete")
    a.kill()
    killed = time.time()
    held = lease(path, "prune:events")
    assert held is not None and f":{a.pid}:" in held[0], held  # the dead holder's lease stays behind
    a_holder, expires_at = held
    left = expired_events(path)
    assert 0 < left < total, left  # A died part-way
    assert integrity(path) == "ok"

    b = serve(config)
    b.wait_for(lambda r: r.get("job") == "events" and r.get("removed", {}).get("events"), 20, "B's takeover")
    assert b.stop(signal.SIGTERM) < 5

    # B tried while A's lease was valid and was turned away...
    skips = b.skips("events")
    assert skips and all(r["holder"] == a_holder for r in skips), skips
    # ...then took the job over once the lease had expired, and finished A's work.
    (takeover,) = [
        d
        for d in prune_records(config)
        if d["job"] == "events" and f":{b.pid}:" in d["holder"] and d["removed"]["events"]
    ]
    started = micros(takeover["started_at"])
    assert started >= expires_at, (started, expires_at)
    delay = (started - expires_at) / 1_000_000
    print(f"lease expired {expires_at / 1e6 - killed:.2f}s after the kill; B took over {delay:.2f}s later")
    assert delay < 2.5  # within about one event_prune_interval (1s) of the expiry
    assert takeover["removed"] == {"events": left} and takeover["stopped"] is None
    assert expired_events(path) == 0
    assert lease(path, "prune:events") is None
    assert integrity(path) == "ok"
    with objstore.open(config) as store:
        assert store.check().ok
