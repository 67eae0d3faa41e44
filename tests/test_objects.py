"""Pipeline and run objects through the public API."""

from __future__ import annotations

import hashlib
import io
import stat
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import StoreFactory, blob_files, staging_files

import objstore
from objstore import (
    AlreadyExists,
    IntegrityError,
    InvalidValue,
    ObjectNotFound,
    ObjStore,
    ObjStoreError,
    RunExpired,
    RunNotFound,
)
from objstore.stores.object_fast_path import _COUNT_AND_OLDEST, _IF_ROOM, _INSERT, InlineInsert
from tests.databases import run_sql

SMALL = b"x" * 100
LARGE = bytes(range(256)) * 1024  # 256 KiB: above the default inline threshold


def test_put_get_small_and_large_round_trip(store: ObjStore, data_dir: Path) -> None:
    pipe = store.pipeline("default", "build-app")
    info = pipe.objects.put("cache/small.bin", SMALL)
    assert (info.key, info.size, info.sha256) == ("cache/small.bin", 100, hashlib.sha256(SMALL).hexdigest())
    assert info.created_at.tzinfo is not None and info.run is None
    pipe.objects.put("cache/large.bin", LARGE)
    assert pipe.objects.get("cache/small.bin") == SMALL
    assert pipe.objects.get("cache/large.bin") == LARGE
    # Only the large value went to the blob store, under its content address.
    assert [p.name for p in blob_files(data_dir)] == [hashlib.sha256(LARGE).hexdigest()]


def test_put_streams_a_file_object_and_open_streams_back(store: ObjStore, tmp_path: Path) -> None:
    source = tmp_path / "deps.tar"
    payload = b"0123456789abcdef" * 300_000  # ~4.6 MiB, several chunks
    source.write_bytes(payload)
    pipe = store.pipeline("default", "build-app")
    with source.open("rb") as fh:
        info = pipe.objects.put("cache/deps.tar", fh)
    assert info.size == len(payload) and info.content_type == "application/x-tar"
    with pipe.objects.open("cache/deps.tar") as reader:
        chunks = iter(lambda: reader.read(65536), b"")
        assert b"".join(chunks) == payload


def test_empty_value_and_exact_threshold(make_store: StoreFactory) -> None:
    store = make_store(blobs={"threshold": 10})
    objects = store.pipeline("default", "p").objects
    for size in (0, 9, 10, 11):
        objects.put(f"v{size}", b"a" * size)
        assert objects.get(f"v{size}") == b"a" * size
        assert objects.info(f"v{size}").size == size


def test_file_object_with_short_reads(store: ObjStore) -> None:
    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data = data

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            chunk, self.data = self.data[:7], self.data[7:]  # never more than 7 bytes per call
            return chunk

    objects = store.pipeline("default", "p").objects
    objects.put("trickle", Trickle(LARGE))  # type: ignore[arg-type]
    assert objects.get("trickle") == LARGE


def test_info_list_delete(store: ObjStore) -> None:
    objects = store.pipeline("default", "p").objects
    for name in ("b.json", "a.txt", "c"):
        objects.put(name, name.encode())
    assert [o.key for o in objects.list()] == ["b.json", "a.txt", "c"]  # oldest first, not by name
    assert objects.info("b.json").content_type == "application/json"
    assert objects.info("c").content_type == "application/octet-stream"
    objects.delete("a.txt")
    assert [o.key for o in objects.list()] == ["b.json", "c"]
    with pytest.raises(ObjectNotFound, match=r"a\.txt"):
        objects.get("a.txt")
    with pytest.raises(ObjectNotFound):
        objects.delete("a.txt")
    with pytest.raises(ObjectNotFound):
        objects.info("a.txt")
    assert "c" in objects and "a.txt" not in objects


def test_explicit_content_type_is_kept_and_validated(store: ObjStore) -> None:
    objects = store.pipeline("default", "p").objects
    assert objects.put("report", b"{}", content_type="application/json").content_type == "application/json"
    assert objects.info("report").content_type == "application/json"
    with pytest.raises(InvalidValue):
        objects.put("other", b"x", content_type="not a type")
    assert "other" not in objects


def test_put_existing_key_needs_overwrite(store: ObjStore) -> None:
    objects = store.pipeline("default", "p").objects
    objects.put("k", b"one")
    objects.put("other", b"two")
    with pytest.raises(AlreadyExists, match="overwrite"):
        objects.put("k", b"changed")
    assert objects.get("k") == b"one"
    objects.put("k", b"three", overwrite=True)
    assert objects.get("k") == b"three"
    # A replaced object counts as the newest.
    assert [o.key for o in objects.list()] == ["other", "k"]


def test_large_put_of_existing_key_fails_before_reading_the_stream(store: ObjStore) -> None:
    objects = store.pipeline("default", "p").objects
    objects.put("k", b"one")
    stream = io.BytesIO(LARGE)
    with pytest.raises(AlreadyExists):
        objects.put("k", stream)
    assert stream.tell() == 0


def test_values_of_the_wrong_type_are_refused(store: ObjStore) -> None:
    objects = store.pipeline("default", "p").objects
    with pytest.raises(InvalidValue, match="encode"):
        objects.put("k", "text")  # type: ignore[arg-type]
    with pytest.raises(InvalidValue):
        objects.put("k", 42)  # type: ignore[arg-type]
    with pytest.raises(InvalidValue, match="binary"):
        objects.put("k", io.StringIO("text"))  # type: ignore[arg-type]
    assert objects.list() == []


def test_pipeline_object_limit_evicts_oldest(make_store: StoreFactory) -> None:
    store = make_store(object_store={"pipeline_object_limit": 3})
    objects = store.pipeline("default", "p").objects
    for i in range(5):
        objects.put(f"k{i}", SMALL)
    assert [o.key for o in objects.list()] == ["k2", "k3", "k4"]
    # Overwriting an existing key does not push anything else out.
    objects.put("k2", b"new", overwrite=True)
    assert [o.key for o in objects.list()] == ["k3", "k4", "k2"]
    # The limit is per pipeline, and run objects do not count towards it.
    other = store.pipeline("default", "q")
    other.objects.put("only", SMALL)
    run = store.pipeline("default", "p").start_run()
    for i in range(5):
        run.objects.put(f"r{i}", SMALL)
    assert len(objects.list()) == 3 and len(other.objects.list()) == 1 and len(run.objects.list()) == 5


def test_lowered_limit_applies_on_next_put(make_store: StoreFactory) -> None:
    store = make_store(object_store={"pipeline_object_limit": 10})
    for i in range(10):
        store.pipeline("default", "p").objects.put(f"k{i}", SMALL)
    store.close()
    smaller = make_store(object_store={"pipeline_object_limit": 4})
    objects = smaller.pipeline("default", "p").objects
    objects.put("new", SMALL)
    assert [o.key for o in objects.list()] == ["k7", "k8", "k9", "new"]


def test_a_full_pipeline_sheds_every_object_over_its_limit(make_store: StoreFactory) -> None:
    # A store whose pipeline is full evicts one object per put on its own path; when another store with a
    # higher limit has added several meanwhile, the next put must still bring the pipeline to its limit.
    small = make_store(object_store={"pipeline_object_limit": 3})
    objects = small.pipeline("default", "p").objects
    for i in range(5):
        objects.put(f"k{i}", SMALL)  # full from the fourth put on: k0 and k1 evicted
    large = make_store(object_store={"pipeline_object_limit": 10})
    for i in range(5, 9):
        large.pipeline("default", "p").objects.put(f"k{i}", SMALL)
    assert len(objects.list()) == 7
    objects.put("k9", SMALL)
    assert [o.key for o in objects.list()] == ["k7", "k8", "k9"]
    evicted = [key for e in small.events.list(kind="object_evicted") for key in e.details["keys"]]
    assert evicted == ["k0", "k1", "k2", "k3", "k4", "k5", "k6"]


@pytest.mark.sqlite_only
def test_a_full_pipeline_takes_one_transaction_per_put(make_store: StoreFactory) -> None:
    store = make_store(object_store={"pipeline_object_limit": 2})
    objects = store.pipeline("default", "p").objects
    for key in ("z", "y", "x"):  # the third evicts: the pipeline is known to be full from here
        objects.put(key, b"v")
    statements: list[str] = []
    connection = store.object_db.connection()
    connection.set_trace_callback(statements.append)
    objects.put("w", b"v")
    with pytest.raises(AlreadyExists):
        objects.put("x", b"again")
    connection.set_trace_callback(None)
    begins = [s for s in statements if s.startswith("BEGIN")]
    assert len(begins) == 2, statements  # one transaction each, the failed put's included
    assert not any("RETURNING" in s for s in statements), statements
    assert [o.key for o in objects.list()] == ["x", "w"]


def test_runs_are_numbered_from_one(store: ObjStore) -> None:
    pipe = store.pipeline("default", "p")
    assert pipe.latest_run == 0
    assert [pipe.start_run().number for _ in range(3)] == [1, 2, 3]
    assert store.pipeline("default", "other").start_run().number == 1
    assert pipe.run(2).number == 2 and pipe.latest_run == 3
    assert [r.number for r in pipe.runs()] == [1, 2, 3]
    with pytest.raises(RunNotFound, match="latest run is 3"):
        pipe.run(4)
    with pytest.raises(InvalidValue):
        pipe.run(0)


def test_run_objects_expire_runs_later(make_store: StoreFactory) -> None:
    store = make_store(object_store={"run_object_expiry": 2})
    pipe = store.pipeline("default", "p")
    runs = [pipe.start_run() for _ in range(5)]
    runs[4].objects.put("junit.xml", b"<xml/>")  # stored on run 5
    pipe.start_run()  # run 6
    assert runs[4].objects.get("junit.xml") == b"<xml/>"
    pipe.start_run()  # run 7: an object stored on run 5 with expiry 2 is gone
    assert runs[4].objects.list() == []
    with pytest.raises(ObjectNotFound):
        runs[4].objects.get("junit.xml")
    with pytest.raises(RunExpired, match="run 5"):
        runs[4].objects.put("late.txt", b"x")
    with pytest.raises(RunExpired):
        pipe.run(5).objects.put("late.txt", io.BytesIO(LARGE))
    with pytest.raises(RunExpired):
        runs[3].objects.put("x", b"x")
    assert pipe.run(6).objects.put("ok", b"x").run == 6


def test_every_expired_run_goes_not_just_one(make_store: StoreFactory) -> None:
    store = make_store(object_store={"run_object_expiry": 50})
    pipe = store.pipeline("default", "p")
    for _ in range(10):
        run = pipe.start_run()
        run.objects.put("a", SMALL)
        run.objects.put("b", LARGE)
    store.close()
    lowered = make_store(object_store={"run_object_expiry": 2})
    pipe = lowered.pipeline("default", "p")
    run11 = pipe.start_run()
    assert run11.number == 11
    remaining = {n: len(pipe.run(n).objects.list()) for n in range(1, 11)}
    assert remaining == {**{n: 0 for n in range(1, 10)}, 10: 2}


def test_sweep_expires_without_a_new_run(make_store: StoreFactory) -> None:
    store = make_store(object_store={"run_object_expiry": 5})
    pipe = store.pipeline("default", "p")
    for _ in range(4):
        pipe.start_run().objects.put("k", SMALL)
    store.close()
    lowered = make_store(object_store={"run_object_expiry": 1})
    assert lowered.expire_run_objects(dry_run=True) == 3
    assert lowered.expire_run_objects() == 3
    pipe = lowered.pipeline("default", "p")
    assert [len(pipe.run(n).objects.list()) for n in range(1, 5)] == [0, 0, 0, 1]
    assert lowered.expire_run_objects() == 0


def test_scopes_never_collide(store: ObjStore) -> None:
    # Gofer joined "<ns>_<pipeline>_<run>_<key>": these pairs collided there.
    store.pipeline("a_b", "c").objects.put("k", b"1")
    store.pipeline("a", "b_c").objects.put("k", b"2")
    p = store.pipeline("default", "5_x")
    p.objects.put("k", b"3")
    run = store.pipeline("default", "5").start_run()
    run.objects.put("x_k", b"4")
    store.pipeline("default", "5").objects.put("x_k", b"5")
    assert store.pipeline("a_b", "c").objects.get("k") == b"1"
    assert store.pipeline("a", "b_c").objects.get("k") == b"2"
    assert p.objects.get("k") == b"3"
    assert run.objects.get("x_k") == b"4"
    assert store.pipeline("default", "5").objects.get("x_k") == b"5"


def test_identical_content_is_stored_once(store: ObjStore, data_dir: Path) -> None:
    objects = store.pipeline("default", "p").objects
    objects.put("one", LARGE)
    objects.put("two", io.BytesIO(LARGE))
    store.pipeline("default", "q").start_run().objects.put("three", LARGE)
    assert len(blob_files(data_dir)) == 1
    assert staging_files(data_dir) == []


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupted_blob_is_detected_on_read(store: ObjStore, data_dir: Path) -> None:
    objects = store.pipeline("default", "p").objects
    objects.put("big", LARGE)
    (blob,) = blob_files(data_dir)
    _corrupt(blob)
    with pytest.raises(IntegrityError, match="sha256"):
        objects.get("big")
    with pytest.raises(IntegrityError), objects.open("big") as reader:
        while reader.read(4096):
            pass
    report = store.check(verify=True)
    assert len(report.corrupt_content) == 1 and not report.ok


def test_corrupted_inline_value_is_detected_on_read(store: ObjStore, data_dir: Path) -> None:
    objects = store.pipeline("default", "p").objects
    objects.put("small", SMALL)
    run_sql(store.object_db, "UPDATE objects SET data = :data WHERE \"key\" = 'small'", {"data": b"y" * 100})
    with pytest.raises(IntegrityError):
        objects.get("small")
    with pytest.raises(IntegrityError), objects.open("small") as reader:
        reader.read()


def test_missing_blob_is_an_integrity_error_and_check_repairs(store: ObjStore, data_dir: Path) -> None:
    objects = store.pipeline("default", "p").objects
    objects.put("big", LARGE)
    objects.put("keep", SMALL)
    blob_files(data_dir)[0].unlink()
    with pytest.raises(IntegrityError):
        objects.get("big")
    report = store.check()
    assert report.missing_content == ["big in pipeline default/p"] and not report.fixed
    assert store.check(fix=True).fixed
    assert store.check().ok
    assert [o.key for o in objects.list()] == ["keep"]


def test_garbage_collection_removes_only_unreferenced_content(store: ObjStore, data_dir: Path) -> None:
    objects = store.pipeline("default", "p").objects
    other = LARGE[::-1]
    objects.put("gone", LARGE)
    objects.put("kept", other)
    objects.delete("gone")
    assert len(blob_files(data_dir)) == 2  # delete commits the row removal; content waits for GC
    assert store.collect_garbage().blobs_removed == 0  # within the default grace period
    assert store.collect_garbage(timedelta(0), dry_run=True).blobs_removed == 1
    assert len(blob_files(data_dir)) == 2
    report = store.collect_garbage(timedelta(0))
    assert (report.blobs_removed, report.bytes_removed) == (1, len(LARGE))
    assert [p.name for p in blob_files(data_dir)] == [hashlib.sha256(other).hexdigest()]
    assert objects.get("kept") == other


def test_check_reports_and_removes_orphan_content(store: ObjStore, data_dir: Path) -> None:
    objects = store.pipeline("default", "p").objects
    objects.put("a", LARGE)
    objects.delete("a")
    report = store.check()
    assert report.orphan_blobs == [hashlib.sha256(LARGE).hexdigest()]
    store.check(fix=True)
    assert blob_files(data_dir) == [] and store.check().ok


def test_close_is_idempotent_and_final(store: ObjStore) -> None:
    pipe = store.pipeline("default", "p")
    pipe.objects.put("k", SMALL)
    store.close()
    store.close()
    assert store.closed
    with pytest.raises(ObjStoreError, match="closed"):
        pipe.objects.get("k")
    with pytest.raises(ObjStoreError, match="closed"):
        store.pipeline("default", "p")


def test_context_manager_and_open_function(data_dir: Path) -> None:
    with objstore.open(
        None,
        object_store={"sqlite": {"path": data_dir / "o.db"}},
        secret_store={"sqlite": {"path": data_dir / "s.db"}},
        server={"storage_path": data_dir / "srv.db"},
    ) as store:
        store.pipeline("default", "p").objects.put("k", SMALL)
    assert store.closed
    with objstore.open(
        None,
        object_store={"sqlite": {"path": data_dir / "o.db"}},
        secret_store={"sqlite": {"path": data_dir / "s.db"}},
        server={"storage_path": data_dir / "srv.db"},
    ) as again:
        assert again.pipeline("default", "p").objects.get("k") == SMALL


def test_all_three_databases_in_one_file(tmp_path: Path) -> None:
    one = tmp_path / "all.db"
    with objstore.open(
        None,
        object_store={"sqlite": {"path": one}},
        secret_store={"sqlite": {"path": one}},
        server={"storage_path": one},
    ) as store:
        run = store.pipeline("default", "p").start_run()
        run.objects.put("k", LARGE)
        assert run.objects.get("k") == LARGE
        assert len(store.schema_status()) == 1
        # The event log shares the objects' file: each eviction is recorded in the evicting transaction.
        objects = store.pipeline("default", "p").objects
        limit = store.settings.object_store.pipeline_object_limit
        for i in range(limit + 3):
            objects.put(f"o{i}", b"v")
        evicted = [key for e in store.events.list(kind="object_evicted") for key in e.details["keys"]]
        assert evicted == ["o0", "o1", "o2"]


@pytest.mark.sqlite_only
def test_files_are_private_whatever_the_umask(make_store: StoreFactory, data_dir: Path) -> None:
    import os

    old = os.umask(0o022)
    try:
        store = make_store()
        store.pipeline("default", "p").objects.put("k", LARGE)
    finally:
        os.umask(old)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    for name in ("objects.db", "objects.db-wal", "objstore.db", "secrets.db"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name
    for blob in blob_files(data_dir):
        assert stat.S_IMODE(blob.stat().st_mode) == 0o600


def test_many_threads_share_one_store(make_store: StoreFactory) -> None:
    store = make_store(object_store={"pipeline_object_limit": 1000})
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            objects = store.pipeline("default", f"p{n % 2}").objects
            for i in range(50):
                value = f"{n}-{i}".encode() * (1 + (i % 3) * 40000)
                objects.put(f"t{n}/k{i}", value)
                assert objects.get(f"t{n}/k{i}") == value
        except BaseException as error:  # collected and re-raised in the main thread
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(len(store.pipeline("default", f"p{i}").objects.list()) for i in range(2)) == 400


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("a.tar", "application/x-tar"),
        ("cache/deps.tar.gz", "application/gzip"),
        ("REPORT.JSON", "application/json"),
        ("x/.bashrc", "application/octet-stream"),
        ("dir.d/file", "application/octet-stream"),
        ("noext", "application/octet-stream"),
    ],
)
def test_content_type_is_guessed_from_the_last_segment(store: ObjStore, key: str, expected: str) -> None:
    assert store.pipeline("default", "p").objects.put(key, b"x").content_type == expected


def test_fast_and_transaction_paths_agree_on_limits_and_errors(make_store: StoreFactory) -> None:
    # Small new values take a one-statement path while a pipeline has room; a full pipeline, an
    # existing key or an expired run falls back to the transaction. The outcomes must not differ.
    store = make_store(object_store={"pipeline_object_limit": 3, "run_object_expiry": 1})
    objects = store.pipeline("default", "p").objects
    for i in range(3):
        objects.put(f"k{i}", b"v")  # room: one statement each
    with pytest.raises(AlreadyExists):
        objects.put("k1", b"again")  # no room and an existing key: the transaction says which
    objects.put("k3", b"v")  # full: evicts k0
    objects.delete("k1")
    objects.put("k4", b"v")  # room again after a delete
    objects.put("k5", b"v")  # full again: evicts k2
    assert [o.key for o in objects.list()] == ["k3", "k4", "k5"]
    # A pipeline full at its last put skips the one statement: an existing key there changes nothing.
    with pytest.raises(AlreadyExists):
        objects.put("k4", b"again")
    objects.put("k6", b"v")
    assert [o.key for o in objects.list()] == ["k4", "k5", "k6"]
    assert objects.get("k4") == b"v"
    pipe = store.pipeline("default", "p")
    run1 = pipe.start_run()
    run1.objects.put("a", b"1")
    with pytest.raises(AlreadyExists):
        run1.objects.put("a", b"2")
    pipe.start_run()
    pipe.start_run()  # run 3 with expiry 1: run 1 and 2 expired
    with pytest.raises(RunExpired):
        run1.objects.put("b", b"3")
    assert run1.objects.list() == []


def _fast_path(store: ObjStore) -> tuple[int, InlineInsert]:
    """Pipeline default/p's scope id, and the fast path of its puts with a limit of 2."""
    scope = store.objects.scope_id("default", "p", create=True)
    assert scope is not None
    return scope, InlineInsert(store.object_db, lock_topic="scope", limit=2, expiry=1)


def _opens_no_temporary_table(store: ObjStore, statement: str, params: tuple[object, ...]) -> bool:
    plan = run_sql(store.object_db, f"EXPLAIN {statement}", params)  # type: ignore[arg-type]
    return "OpenEphemeral" not in {step[1] for step in plan}


@pytest.mark.sqlite_only
def test_the_one_statement_insert_stops_at_the_limit_without_a_temporary_table(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    scope, insert = _fast_path(store)
    rows = [(scope, 0, f"k{i}", 1, "0" * 64, "text/plain", i, b"v") for i in range(3)]
    assert [insert(row) for row in rows] == [True, True, False]  # the third: the pipeline is full
    assert insert(rows[0]) is False  # an existing key: nothing changes either
    assert run_sql(store.object_db, "SELECT key FROM objects ORDER BY key") == [("k0",), ("k1",)]
    # INSERT ... SELECT from the table being inserted into would copy the row through a temporary
    # table first (about 7 us of a 45 us put); the statement must not.
    assert _opens_no_temporary_table(store, _IF_ROOM, (*rows[2], 2))


@pytest.mark.sqlite_only
def test_a_full_pipeline_evicts_in_one_transaction_without_temporary_tables(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    scope, insert = _fast_path(store)
    seen: list[tuple[int, tuple[int, str]]] = []

    def then(conn: object, count: int, oldest: tuple[int, str]) -> str:
        seen.append((count, oldest))
        return "evicted"

    # Keys in descending order: the oldest object (smallest id) is the last in the key index.
    rows = [(scope, 0, f"k{9 - i}", 1, "0" * 64, "text/plain", i, b"v") for i in range(3)]
    assert [insert.evicting(row, then) for row in rows] == ["evicted"] * 3
    assert [(count, key) for count, (_, key) in seen] == [(1, "k9"), (2, "k9"), (3, "k9")]
    assert insert.evicting(rows[1], then) is None  # an existing key: nothing changes, no call
    assert len(seen) == 3
    # RETURNING, which these statements avoid, buffers its rows in a temporary table (about 5 us a put).
    assert _opens_no_temporary_table(store, _INSERT, rows[0])
    assert _opens_no_temporary_table(store, _COUNT_AND_OLDEST, (scope,))
