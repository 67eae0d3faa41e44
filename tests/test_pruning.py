"""Retention jobs: expiry sweeps, lowered settings, dry runs, leases, stopping, and the scheduler."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from objstore import ConfigError, FakeClock
from objstore.config import Settings
from objstore.db.sqlite_database import SqliteDatabase
from objstore.pruner import Pruner
from objstore.stores.batches import BatchSizer, Checkpoint, JobStopped, delete_in_transaction
from objstore.stores.leases import Leases, new_holder_id
from tests.conftest import StoreFactory
from tests.databases import run_sql

T = TypeVar("T")


def test_expiry_2_over_runs_1_to_10(make_store: StoreFactory, data_dir: Path) -> None:
    store = make_store(object_store={"run_object_expiry": 2}, api={"task_execution_log_expiry": 2})
    pipe = store.pipeline("default", "build")
    for _ in range(10):
        run = pipe.start_run()
        run.objects.put("junit.xml", b"<xml/>")
        run.objects.put("big.bin", b"b" * 300_000)  # a blob too
        run.task_log("compile").write("x\n")
    for number in range(1, 9):
        assert pipe.run(number).objects.list() == []
        assert not pipe.run(number).task_log("compile").exists()
    for number in (9, 10):
        assert sorted(o.key for o in pipe.run(number).objects.list()) == ["big.bin", "junit.xml"]
        assert pipe.run(number).task_log("compile").read() == b"x\n"
    # Nothing left for the sweep: start_run did all of it.
    report = store.prune()
    assert (report.run_objects, report.task_logs) == (0, 0)


def test_lowered_pipeline_limit_is_enforced_by_the_sweep(make_store: StoreFactory) -> None:
    store = make_store(object_store={"pipeline_object_limit": 10})
    pipe = store.pipeline("default", "build")
    for i in range(10):
        pipe.objects.put(f"k{i}", b"v")
    store.close()
    lowered = make_store(object_store={"pipeline_object_limit": 4})
    assert lowered.prune(dry_run=True).pipeline_objects == 6
    assert len(lowered.pipeline("default", "build").objects.list()) == 10
    assert lowered.prune().pipeline_objects == 6
    assert [o.key for o in lowered.pipeline("default", "build").objects.list()] == ["k6", "k7", "k8", "k9"]
    (evicted,) = lowered.events.list(kind="object_evicted")
    assert evicted.details["keys"] == [f"k{i}" for i in range(6)]


def test_dry_run_changes_nothing(make_store: StoreFactory, data_dir: Path) -> None:
    clock = FakeClock()
    store = make_store(clock=clock, object_store={"run_object_expiry": 1}, api={"event_log_retention": "1h"})
    pipe = store.pipeline("default", "build")
    pipe.start_run().objects.put("a", b"1")
    store.events.emit("old")
    clock.advance(timedelta(hours=2))
    store.close()
    # Lower nothing; a second store with expiry 1 sees run 1 as expired only after run 2 starts.
    store = make_store(clock=clock, object_store={"run_object_expiry": 1}, api={"event_log_retention": "1h"})
    before = {p.name: p.read_bytes() for p in data_dir.glob("*.db")}
    report = store.prune(dry_run=True)
    assert report.dry_run and report.events >= 1
    assert {p.name: p.read_bytes() for p in data_dir.glob("*.db")} == before
    assert store.events.list(kind="prune_finished") == []


def test_each_job_records_prune_finished(make_store: StoreFactory) -> None:
    store = make_store()
    store.prune()
    records = store.events.list(kind="prune_finished")
    assert [e.details["job"] for e in records] == ["events", "expiry", "blobs"]
    for record in records:
        assert record.details["stopped"] is None
        assert record.details["started_at"] <= record.details["finished_at"]


def test_leases_one_holder_at_a_time(make_store: StoreFactory) -> None:
    clock = FakeClock()
    store = make_store(clock=clock)
    leases = Leases(store.server_db, clock=clock)
    ttl = timedelta(seconds=30)
    a, b = new_holder_id("a"), new_holder_id("b")
    assert leases.acquire("job", a, ttl)
    assert leases.acquire("job", a, ttl)  # re-entrant for its holder
    assert not leases.acquire("job", b, ttl)
    current = leases.current("job")
    assert current is not None and current.holder == a
    clock.advance(timedelta(seconds=20))
    assert leases.renew("job", a, ttl)  # now expires 50 s after the start
    clock.advance(timedelta(seconds=20))
    assert not leases.acquire("job", b, ttl)  # renewed: still a's
    clock.advance(timedelta(seconds=11))
    assert leases.renew("job", a, ttl)  # expired, but nobody took it: still a's to renew
    clock.advance(timedelta(seconds=31))
    assert leases.acquire("job", b, ttl)  # a stopped renewing: b takes over
    assert not leases.renew("job", a, ttl)  # and a finds out
    leases.release("job", a)  # a no longer holds it: nothing happens
    assert leases.current("job").holder == b  # type: ignore[union-attr]
    leases.release("job", b)
    assert leases.current("job") is None


def test_a_job_held_elsewhere_is_skipped(make_store: StoreFactory) -> None:
    clock = FakeClock()
    store = make_store(clock=clock)
    other = new_holder_id("elsewhere")
    assert store.pruner.leases.acquire("prune:events", other, timedelta(minutes=1))
    report = store.prune()
    assert report.skipped == ("events",)
    assert [e.details["job"] for e in store.events.list(kind="prune_finished")] == ["expiry", "blobs"]
    clock.advance(timedelta(minutes=2))  # the holder died: its lease expires
    assert store.prune().skipped == ()


def test_a_stopped_job_reports_what_it_did(make_store: StoreFactory) -> None:
    clock = FakeClock()
    store = make_store(clock=clock, api={"event_log_retention": "1h"})
    old = int((clock.now() - timedelta(hours=2)).timestamp() * 1_000_000)
    run_sql(
        store.server_db,
        "INSERT INTO events (kind, emitted_at, details) WITH RECURSIVE n(i) AS "
        "(SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30000) SELECT 'old', :old, '{}' FROM n",
        {"old": old},
    )
    calls = 0
    original = store.event_store.prune_batches

    def slow_batches(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        nonlocal calls
        for count in original(*args, **kwargs, sizer=BatchSizer(initial=1000, maximum=1000)):  # type: ignore[arg-type]
            calls += 1
            if calls == 3:
                store.pruner.stop()
            yield count

    store.event_store.prune_batches = slow_batches  # type: ignore[method-assign]
    result = store.pruner.run("events")
    assert result.stopped == "shutting down"
    assert result.removed == {"events": 3000}
    (record,) = store.events.list(kind="prune_finished")
    assert record.details["removed"] == {"events": 3000} and record.details["stopped"] == "shutting down"
    assert store.pruner.leases.current("prune:events") is None  # released


def test_batch_sizer_aims_at_its_time_budget() -> None:
    sizer = BatchSizer(target=0.01, initial=100, maximum=100_000)

    def batch(size: int) -> tuple[int, float]:
        return size, size * 1e-6  # 1 µs a row: the budget fits about 10,000 rows

    for _ in range(12):
        sizer.run(batch)
    assert 3_000 <= sizer.size <= 20_000
    assert sizer.run(lambda size: (size - 1, 0.0)) == sizer.size - 1  # a partial batch: the last one


@pytest.mark.sqlite_only
def test_a_batch_is_sized_by_its_work_not_by_its_wait_for_the_lock(make_store: StoreFactory) -> None:
    store = make_store()
    db = store.server_db
    assert isinstance(db, SqliteDatabase)
    run_sql(db, "INSERT INTO events (kind, emitted_at, details) VALUES ('old', 1, '{}'), ('old', 2, '{}')")
    other = sqlite3.connect(db.path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock for 0.3 s
    threading.Timer(0.3, other.execute, ("COMMIT",)).start()
    started = time.perf_counter()
    deleted, seconds = delete_in_transaction(db, "DELETE FROM events WHERE kind = 'old'", {})
    waited = time.perf_counter() - started
    other.close()
    assert deleted == 2
    assert waited >= 0.25 and seconds < 0.1, (waited, seconds)


@pytest.mark.sqlite_only
def test_a_batch_counts_its_commit(make_store: StoreFactory) -> None:
    # COMMIT writes the pages the delete changed, which takes as long as the delete for a large batch;
    # sized without it, batches held the lock for twice their budget.
    store = make_store()
    path = store.server_db.path  # type: ignore[attr-defined]

    class SlowCommit(SqliteDatabase):
        def write(self, work: Callable[[Any], T]) -> T:
            result = super().write(work)
            time.sleep(0.05)  # the end of a COMMIT that writes many pages
            return result

    db = SlowCommit(path, label="server database")
    run_sql(db, "INSERT INTO events (kind, emitted_at, details) VALUES ('old', 1, '{}')")
    deleted, seconds = delete_in_transaction(db, "DELETE FROM events WHERE kind = 'old'", {})
    db.close()
    assert deleted == 1
    assert seconds >= 0.05, seconds


def test_a_job_carries_on_past_expiry_until_another_process_takes_its_lease(make_store: StoreFactory) -> None:
    clock = FakeClock()
    store = make_store(clock=clock)
    leases = store.pruner.leases
    other = new_holder_id("elsewhere")
    ttl = timedelta(seconds=0.03)  # the checkpoint renews once 10 ms have passed

    def job(dry_run: bool, checkpoint: Checkpoint, removed: dict[str, int]) -> None:
        clock.advance(timedelta(minutes=1))  # a batch that waited long: the lease expired meanwhile
        time.sleep(0.02)
        checkpoint()  # nobody took it: renewed, the job goes on
        removed["rows"] = 1
        clock.advance(timedelta(minutes=1))
        assert leases.acquire("prune:slow", other, timedelta(minutes=1))  # now someone does
        time.sleep(0.02)
        checkpoint()
        removed["rows"] = 2  # not reached

    pruner = Pruner({"slow": job}, leases=leases, events=store.event_store, clock=clock, lease_ttl=ttl)
    result = pruner.run("slow")
    assert result.removed == {"rows": 1}
    assert result.stopped == "lost its lease (it expired and another process took the job over)"
    assert leases.current("prune:slow").holder == other  # type: ignore[union-attr]  # left alone


def test_job_stopped_carries_its_reason() -> None:
    assert JobStopped("lost its lease").reason == "lost its lease"


def test_scheduler_runs_the_jobs_and_stops_on_close(make_store: StoreFactory) -> None:
    store = make_store(scheduler={"prune_interval": "1s"}, api={"event_prune_interval": "1s"})
    scheduler = store.start_scheduler()
    assert scheduler is not None and scheduler.running
    assert store.start_scheduler() is scheduler  # one per store
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        jobs = {e.details["job"] for e in store.events.list(kind="prune_finished", limit=1000)}
        if jobs == {"events", "expiry", "blobs"}:
            break
        time.sleep(0.1)
    assert jobs == {"events", "expiry", "blobs"}
    store.close()
    assert not scheduler.running
    assert not any(t.name.startswith("APScheduler") for t in threading.enumerate() if t.is_alive())


def test_scheduler_can_be_switched_off(make_store: StoreFactory) -> None:
    store = make_store(scheduler={"enabled": False})
    assert store.start_scheduler() is None


def test_scheduler_section_is_shared_with_the_host(tmp_path: Path) -> None:
    config = tmp_path / "gofer.toml"
    config.write_text(
        '[scheduler]\nengine = "docker"\nenabled = false\nlease_ttl = "30s"\n'
        "[scheduler.docker]\nprune = true\nprune_interval = 604800\n"
    )
    settings = Settings.load(config)
    assert settings.scheduler.enabled is False
    assert settings.scheduler.lease_ttl == timedelta(seconds=30)
    config.write_text('[scheduler]\nengine = "docker"\nenable = false\n')
    with pytest.raises(ConfigError, match="'enabled'"):
        Settings.load(config)
    config.write_text('[scheduler]\nlease_ttl = "0s"\n')
    with pytest.raises(ConfigError, match="lease_ttl"):
        Settings.load(config)
