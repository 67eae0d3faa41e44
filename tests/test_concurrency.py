"""Several processes on one set of databases: the pipeline limit and run numbering stay exact."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

from objstore.config import Settings
from objstore.engine import ObjStore

LIMIT = 10


def _put_many(data_dir: str, worker: int, start_at: float) -> int:
    with ObjStore(Settings.for_directory(data_dir, object_store={"pipeline_object_limit": LIMIT})) as store:
        objects = store.pipeline("default", "shared").objects
        time.sleep(max(0.0, start_at - time.time()))  # start together, so the puts really overlap
        for i in range(50):
            objects.put(f"w{worker}/k{i}", f"{worker}:{i}".encode() * (1 + 3000 * (i % 7 == 0)))
    return worker


def _start_runs(data_dir: str, start_at: float) -> list[int]:
    with ObjStore(Settings.for_directory(data_dir)) as store:
        pipe = store.pipeline("default", "shared")
        time.sleep(max(0.0, start_at - time.time()))
        return [pipe.start_run().number for _ in range(25)]


def test_pipeline_limit_holds_across_processes(data_dir: Path, engine: str) -> None:
    watcher_store = ObjStore(Settings.for_directory(data_dir))  # creates the schema before the race
    count_objects = watcher_store.object_db.sql("SELECT count(*) FROM objects WHERE run = 0")
    highest = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal highest
        while not stop.is_set():
            (count,) = watcher_store.object_db.query_one(count_objects, {}) or (0,)
            highest = max(highest, count)

    watcher = threading.Thread(target=watch)
    watcher.start()
    start_at = time.time() + 1.5
    context = multiprocessing.get_context("spawn")
    try:
        with context.Pool(4) as pool:
            results = [pool.apply_async(_put_many, (str(data_dir), w, start_at)) for w in range(4)]
            assert sorted(r.get(timeout=120) for r in results) == [0, 1, 2, 3]  # no error surfaced
    finally:
        stop.set()
        watcher.join()
        watcher_store.close()
    assert highest <= LIMIT
    with ObjStore(Settings.for_directory(data_dir, object_store={"pipeline_object_limit": LIMIT})) as store:
        objects = store.pipeline("default", "shared").objects.list()
        assert len(objects) == LIMIT
        # What remains is the newest of each writer's sequence (no gaps inside one writer's tail).
        for info in objects:
            worker, i = info.key.split("/")
            assert (
                store.pipeline("default", "shared")
                .objects.get(info.key)
                .startswith(f"{worker[1:]}:{i[1:]}".encode())
            )


def test_concurrent_start_run_yields_distinct_consecutive_numbers(data_dir: Path, engine: str) -> None:
    ObjStore(Settings.for_directory(data_dir)).close()
    start_at = time.time() + 1.5
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = [pool.apply_async(_start_runs, (str(data_dir), start_at)) for _ in range(4)]
        numbers = [n for r in results for n in r.get(timeout=120)]
    assert sorted(numbers) == list(range(1, 101))
    for r in results:  # each process saw its own numbers increase
        mine = r.get()
        assert mine == sorted(mine)
