"""The event log: emit, list with cursors and filters, retention, and the events the engine records."""

from __future__ import annotations

import sqlite3
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from objstore import FakeClock, InvalidName, InvalidValue
from objstore.engine import ObjStore
from objstore.stores.notices import MAX_MERGED_KEYS
from tests.conftest import StoreFactory
from tests.databases import run_sql


def _count(store: ObjStore, sql: str = "SELECT count(*) FROM events") -> int:
    return int(run_sql(store.server_db, sql)[0][0])


def test_emit_returns_the_stored_event(store: ObjStore) -> None:
    event = store.events.emit(
        "deploy", {"target": "prod", "n": [1, 2]}, namespace="team", pipeline="web", run=3
    )
    assert event.kind == "deploy"
    assert event.details == {"target": "prod", "n": [1, 2]}
    assert (event.namespace, event.pipeline, event.run) == ("team", "web", 3)
    assert event.emitted_at.tzinfo is not None
    (listed,) = store.events.list(kind="deploy")
    assert listed == event


def test_list_is_newest_last_and_pages_both_ways(store: ObjStore) -> None:
    ids = [store.events.emit("tick", {"i": i}).id for i in range(25)]
    assert ids == sorted(ids)
    newest = store.events.list(limit=10)
    assert [e.details["i"] for e in newest] == list(range(15, 25))
    older = store.events.list(before=newest[0].id, limit=10)
    assert [e.details["i"] for e in older] == list(range(5, 15))
    forward = store.events.list(after=ids[2], limit=5)
    assert [e.details["i"] for e in forward] == [3, 4, 5, 6, 7]
    # Following the log: pass the last id seen.
    seen: list[int] = []
    cursor = 0
    while page := store.events.list(after=cursor, limit=7):
        seen.extend(e.details["i"] for e in page)
        cursor = page[-1].id
    assert seen == list(range(25))


def test_list_filters_by_kind_and_pipeline(store: ObjStore) -> None:
    store.events.emit("a", namespace="ns", pipeline="one")
    store.events.emit("b", namespace="ns", pipeline="two")
    store.events.emit("a", namespace="other", pipeline="one")
    store.events.emit("a")
    assert len(store.events.list(kind="a")) == 3
    assert [e.kind for e in store.events.list(namespace="ns", pipeline="one")] == ["a"]
    assert len(store.events.list(namespace="ns")) == 2
    assert store.events.list(kind="a", namespace="ns", pipeline="two") == []


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        (("bad kind",), {}, InvalidName),
        (("",), {}, InvalidName),
        (("ok", {"x": object()}), {}, InvalidValue),
        (("ok", {"x": float("nan")}), {}, InvalidValue),
        (("ok", ["not", "a", "dict"]), {}, InvalidValue),
        (("ok", {"big": "x" * 70_000}), {}, InvalidValue),
        (("ok",), {"pipeline": "p"}, InvalidValue),
        (("ok",), {"namespace": "n", "run": 1}, InvalidValue),
        (("ok",), {"namespace": "bad/ns", "pipeline": "p"}, InvalidName),
        (("ok",), {"namespace": "n", "pipeline": "p", "run": 0}, InvalidValue),
    ],
)
def test_bad_events_are_refused_and_nothing_is_recorded(
    store: ObjStore,
    data_dir: Path,
    args: tuple[object, ...],
    kwargs: dict[str, object],
    error: type[Exception],
) -> None:
    before = _count(store)
    with pytest.raises(error):
        store.events.emit(*args, **kwargs)  # type: ignore[arg-type]
    assert _count(store) == before


@pytest.mark.parametrize(
    "kwargs", [{"limit": 0}, {"limit": 10_001}, {"after": -1}, {"after": 1, "before": 2}]
)
def test_bad_list_arguments(store: ObjStore, kwargs: dict[str, int]) -> None:
    with pytest.raises(InvalidValue):
        store.events.list(**kwargs)  # type: ignore[arg-type]


def test_retention_removes_exactly_the_events_older_than_the_setting(make_store: StoreFactory) -> None:
    clock = FakeClock()
    store = make_store(clock=clock, api={"event_log_retention": "48h"})
    old = store.events.emit("old")
    clock.advance(timedelta(microseconds=1))
    young = store.events.emit("young")
    # `old` is now 48h and 1 µs old: gone; `young` exactly 48h old: kept (only older than the retention goes).
    clock.advance(timedelta(hours=48))
    assert store.prune(dry_run=True).events == 1
    report = store.prune()
    assert report.events == 1
    remaining = {e.id for e in store.events.list(limit=1000)}
    assert old.id not in remaining and young.id in remaining


def test_one_prune_removes_every_expired_event(make_store: StoreFactory, data_dir: Path) -> None:
    clock = FakeClock()
    store = make_store(clock=clock, api={"event_log_retention": "1h"})
    for i in range(1000):
        store.events.emit("old", {"i": i})
    clock.advance(timedelta(hours=2))
    keep = store.events.emit("young")
    report = store.prune()
    assert report.events == 1000
    assert _count(store, "SELECT count(*) FROM events WHERE kind = 'old'") == 0
    assert keep.id in {e.id for e in store.events.list()}


def test_ids_are_never_reused_after_pruning_everything(make_store: StoreFactory) -> None:
    clock = FakeClock()
    store = make_store(clock=clock, api={"event_log_retention": "1h"})
    last = store.events.emit("a")
    clock.advance(timedelta(hours=2))
    store.pruner.run("events")
    assert [e for e in store.events.list() if e.kind == "a"] == []
    # A reader following with after=last.id must see the next event.
    nxt = store.events.emit("b")
    assert nxt.id > last.id
    assert [e.kind for e in store.events.list(after=last.id)][-1] == "b"


def test_engine_records_its_own_actions(make_store: StoreFactory) -> None:
    store = make_store(object_store={"pipeline_object_limit": 2, "run_object_expiry": 1})
    pipe = store.pipeline("default", "build")
    first = pipe.start_run()
    first.objects.put("junit.xml", b"x")
    pipe.start_run()  # expires run 1's objects
    for key in ("a", "b", "c"):
        pipe.objects.put(key, b"v")
    kinds = [e.kind for e in store.events.list()]
    assert kinds.count("run_started") == 2
    assert "run_data_expired" in kinds
    (evicted,) = store.events.list(kind="object_evicted")
    assert evicted.details["keys"] == ["a"]
    assert (evicted.namespace, evicted.pipeline) == ("default", "build")
    (expired,) = store.events.list(kind="run_data_expired")
    assert expired.details["run_objects"] == 1 and expired.details["run_objects_through"] == 1
    started = store.events.list(kind="run_started")
    assert [e.run for e in started] == [1, 2]


def test_secret_events_name_the_secret_never_the_value(make_store: StoreFactory, data_dir: Path) -> None:
    store = make_store(secret_store={"sqlite": {"encryption_key": "k" * 32}})
    pipe = store.pipeline("default", "build")
    pipe.secrets.put("DEPLOY_TOKEN", "hunter2-value")
    pipe.secrets.put("DEPLOY_TOKEN", "another-value", overwrite=True)
    store.global_secrets.put("NPM", "npm-value", namespaces=["default"])
    pipe.secrets.delete("DEPLOY_TOKEN")
    events = store.events.list()
    written = [e for e in events if e.kind == "secret_written"]
    assert [e.details["replaced"] for e in written] == [False, True, False]
    assert written[0].details["name"] == "DEPLOY_TOKEN" and written[0].pipeline == "build"
    assert written[2].details["scope"] == "global" and written[2].namespace is None
    assert [e.kind for e in events].count("secret_deleted") == 1
    raw = b"".join(p.read_bytes() for p in data_dir.glob("objstore.db*"))  # SQLite: file and WAL
    raw += "".join(row[0] for row in run_sql(store.server_db, "SELECT details FROM events")).encode()
    for value in (b"hunter2-value", b"another-value", b"npm-value"):
        assert value not in raw


@pytest.mark.sqlite_only
def test_pruning_gives_the_space_back_to_the_filesystem(make_store: StoreFactory, data_dir: Path) -> None:
    clock = FakeClock()
    store = make_store(clock=clock, api={"event_log_retention": "1h"})
    for i in range(3000):
        store.events.emit("bulky", {"i": i, "padding": "x" * 1000})
    path = data_dir / "objstore.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = path.stat().st_size
    clock.advance(timedelta(hours=2))
    assert store.prune().events == 3000
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
    assert path.stat().st_size < before / 4


def test_event_ids_become_visible_in_order(make_store: StoreFactory) -> None:
    """A reader following the log with after=ID never skips an event that committed late."""
    store = make_store()
    writers, per_writer = 4, 150
    seen: list[int] = []
    done = threading.Event()

    def write(worker: int) -> None:
        for i in range(per_writer):
            store.events.emit("tick", {"worker": worker, "i": i})

    def follow() -> None:
        after = 0
        while True:
            finished = done.is_set()  # read before the page: an empty page after it means no more
            page = store.events.list(after=after, limit=1000, kind="tick")
            seen.extend(event.id for event in page)
            if page:
                after = page[-1].id
            elif finished:
                break

    follower = threading.Thread(target=follow)
    follower.start()
    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    follower.join(timeout=30)
    assert len(seen) == writers * per_writer == len(set(seen))
    assert seen == sorted(seen)


# -- the engine's notices are written in batches ------------------------------------------------------------


def _evict(store: ObjStore, count: int) -> list[str]:
    """``count`` puts into a pipeline at its limit of 1: each evicts the one before. The evicted keys."""
    objects = store.pipeline("default", "batched").objects
    objects.put("k0", b"x")
    for i in range(1, count + 1):
        objects.put(f"k{i}", b"x")
    return [f"k{i}" for i in range(count)]


def _evicted_keys(store: ObjStore) -> list[str]:
    events = store.events.list(kind="object_evicted", limit=10_000)
    return [key for event in events for key in event.details["keys"]]


def test_notices_reach_other_readers_without_a_read_or_close_here(make_store: StoreFactory) -> None:
    writer = make_store(object_store={"pipeline_object_limit": 1})
    reader = make_store()  # another store on the same databases: its reads cannot flush the writer's notices
    expected = _evict(writer, 50)
    seen: list[str] = []
    for _ in range(100):  # the background writer commits within its delay (50 ms)
        seen = _evicted_keys(reader)
        if len(seen) == len(expected):
            break
        threading.Event().wait(0.05)
    assert seen == expected  # all of them, in the order they happened


def test_a_read_in_the_same_process_sees_every_notice_at_once(make_store: StoreFactory) -> None:
    store = make_store(object_store={"pipeline_object_limit": 1})
    store.notices.delay = 60.0  # the background writer would wait a minute: the read must flush
    assert _evicted_keys(store) == []
    expected = _evict(store, 5)
    assert _evicted_keys(store) == expected


def test_close_writes_pending_notices(make_store: StoreFactory) -> None:
    store = make_store(object_store={"pipeline_object_limit": 1})
    store.notices.delay = 60.0
    expected = _evict(store, 20)
    store.close()
    assert _evicted_keys(make_store()) == expected


@pytest.mark.sqlite_only  # batched notices: the event log in another database than the objects
def test_evictions_that_follow_each_other_in_a_batch_become_one_event(make_store: StoreFactory) -> None:
    key = {"sqlite": {"encryption_key": "k3y-for-tests-0123456789abcdefgh"}}
    store = make_store(object_store={"pipeline_object_limit": 1}, secret_store=key)
    store.notices.delay = 60.0  # one batch: written by the read below
    first = _evict(store, 5)  # k0..k4: one event
    other = store.pipeline("default", "other").objects
    other.put("a", b"x")
    other.put("b", b"x")  # evicts "a": another pipeline, another event
    batched = store.pipeline("default", "batched").objects
    more = [f"k{i}" for i in range(5, 5 + MAX_MERGED_KEYS + 20)]
    for new_key in [*more[1:], "last"]:  # evicts k5 .. k124: two events (at most MAX_MERGED_KEYS each)
        batched.put(new_key, b"x")
    store.pipeline("default", "p").secrets.put("TOKEN", "s3cr3t")
    batched.put("after-secret", b"x")  # evicts "last": after the secret's event, not merged before it
    events = store.events.list(limit=10_000)
    summary = [
        (e.kind, e.pipeline, e.details["keys"] if e.kind == "object_evicted" else e.details["name"])
        for e in events
    ]
    assert summary == [
        ("object_evicted", "batched", first),
        ("object_evicted", "other", ["a"]),
        ("object_evicted", "batched", more[:MAX_MERGED_KEYS]),
        ("object_evicted", "batched", more[MAX_MERGED_KEYS:]),
        ("secret_written", "p", "TOKEN"),
        ("object_evicted", "batched", ["last"]),
    ]
    assert all(e.details["limit"] == 1 for e in events if e.kind == "object_evicted")
    times = [e.emitted_at for e in events]
    assert times == sorted(times)
