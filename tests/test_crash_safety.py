"""Killing a writer at random moments never loses or corrupts what was committed."""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import random
import time
from datetime import timedelta
from pathlib import Path

from conftest import blob_files, staging_files

from objstore.config import Settings
from objstore.engine import ObjStore
from objstore.errors import ObjectNotFound

KEYS = [f"cache/k{i}" for i in range(16)]
SIZES = [100, 2_000, 70_000, 300_000, 3_000_000]  # inline and blob, one and several chunks


def make_value(key: str, nonce: int, size: int) -> bytes:
    """Self-describing content: a header naming key and nonce, then bytes derived from both."""
    header = f"{key}|{nonce}|{size}|".encode()
    seed = hashlib.sha256(header).digest()
    body = (seed * (size // 32 + 1))[: max(size - len(header), 0)]
    return header + body


def check_value(key: str, value: bytes) -> None:
    name, nonce, size, _ = value.split(b"|", 3)
    assert name.decode() == key
    assert value == make_value(key, int(nonce), int(size))


def _writer(data_dir: str, seed: int) -> None:
    rng = random.Random(seed)
    with ObjStore(Settings.for_directory(data_dir, object_store={"pipeline_object_limit": 12})) as store:
        pipe = store.pipeline("default", "crash")
        nonce = seed * 1_000_000
        while True:
            key = rng.choice(KEYS)
            action = rng.random()
            if action < 0.65:
                nonce += 1
                pipe.objects.put(key, make_value(key, nonce, rng.choice(SIZES)), overwrite=True)
            elif action < 0.85:
                with contextlib.suppress(ObjectNotFound):
                    pipe.objects.delete(key)
            elif action < 0.95:
                run = pipe.start_run()
                nonce += 1
                run.objects.put(key, make_value(key, nonce, rng.choice(SIZES)))
            else:
                store.collect_garbage(timedelta(0))


def test_sigkill_at_random_moments_loses_nothing_committed(data_dir: Path) -> None:
    ObjStore(Settings.for_directory(data_dir)).close()
    context = multiprocessing.get_context("fork")  # fast to start: the kills land mid-operation
    rng = random.Random(20261121)
    kills = 0
    for attempt in range(60):
        process = context.Process(target=_writer, args=(str(data_dir), attempt + 1))
        process.start()
        time.sleep(rng.uniform(0.05, 0.4))
        process.kill()  # SIGKILL: no clean-up of any kind
        process.join()
        kills += process.exitcode == -9
    assert kills >= 50

    with ObjStore(Settings.for_directory(data_dir, object_store={"pipeline_object_limit": 12})) as store:
        pipe = store.pipeline("default", "crash")
        scopes = [pipe.objects] + [pipe.run(n).objects for n in range(1, pipe.latest_run + 1)]
        listed = 0
        for objects in scopes:
            for info in objects.list():
                value = objects.get(info.key)  # verified against its sha256
                assert len(value) == info.size
                check_value(info.key, value)
                listed += 1
        assert listed > 0
        assert len(pipe.objects.list()) <= 12
        report = store.check(verify=True)
        assert report.missing_content == [] and report.corrupt_content == []

        store.collect_garbage(timedelta(0), staging_grace=timedelta(0))
        store.check(fix=True)
        assert store.check().ok
        assert staging_files(data_dir) == []
        referenced = {
            info.sha256
            for objects in scopes
            for info in objects.list()
            if info.size > store.settings.blobs.threshold
        }
        assert {p.name for p in blob_files(data_dir)} == referenced
