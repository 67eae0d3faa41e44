"""CachedBlobBackend under concurrency: threads missing at once, and several processes sharing one folder.

Separate instances on one folder stand for separate processes (each has its own index, like a process
would); the last test runs real processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from blob_contract import MIB, payload, sha
from test_blobs_cache import (
    KIB,
    CountingBackend,
    cache_dir,
    cached,
    disk_bytes,
    make_cache,
    put,
    read,
    slow,
    staging,
)

from objstore.blobs.filesystem import FilesystemBlobBackend

__all__ = ["cache_dir", "slow"]  # fixtures, imported to be used here


def test_concurrent_misses_download_once(slow: CountingBackend, cache_dir: Path) -> None:
    cache = make_cache(slow, cache_dir, max_bytes=8 * MIB)
    data = payload(2 * MIB, seed=11)
    digest = put(cache, data)
    slow.before_open = lambda: time.sleep(0.2)  # both threads are inside open() by then
    start = threading.Barrier(4)
    results: list[bytes] = []
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            start.wait()
            results.append(read(cache, digest, len(data)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results == [data] * 4
    assert slow.calls["open"] == 1
    assert (cache.misses, cache.hits) == (1, 3)


def test_eviction_keeps_a_copy_another_process_used_since(slow: CountingBackend, cache_dir: Path) -> None:
    # Two instances stand for two processes: each has its own index of the shared folder.
    mine = make_cache(slow, cache_dir, max_bytes=10 * KIB, rescan_interval=3600)
    a, b, c = (payload(4 * KIB, seed=s) for s in (1, 2, 3))
    da, db, dc = (put(mine, x) for x in (a, b, c))
    read(mine, da, len(a))
    read(mine, db, len(b))
    theirs = make_cache(slow, cache_dir, max_bytes=10 * KIB, rescan_interval=3600)
    read(theirs, da, len(a))  # the other process uses A after this one did
    read(mine, dc, len(c))  # A is this process's LRU, but it was used since: B goes instead
    assert cached(cache_dir) == {da, dc}


def test_eviction_keeps_a_newer_copy_of_the_same_content(slow: CountingBackend, cache_dir: Path) -> None:
    mine = make_cache(slow, cache_dir, max_bytes=10 * KIB, rescan_interval=3600)
    a, b, c = (payload(4 * KIB, seed=s) for s in (1, 2, 3))
    da, db, dc = (put(mine, x) for x in (a, b, c))
    read(mine, da, len(a))
    read(mine, db, len(b))
    # Another process evicts A and fills it again: a newer file under the same address.
    theirs = make_cache(slow, cache_dir, max_bytes=10 * KIB, rescan_interval=3600)
    assert theirs.evict(da)
    read(theirs, da, len(a))
    read(mine, dc, len(c))
    assert cached(cache_dir) == {da, dc}
    assert (cache_dir / da[:2] / da).read_bytes() == a


def test_eviction_keeps_a_different_file_even_with_an_old_mtime(
    slow: CountingBackend, cache_dir: Path
) -> None:
    mine = make_cache(slow, cache_dir, max_bytes=10 * KIB, rescan_interval=3600)
    a, b, c = (payload(4 * KIB, seed=s) for s in (1, 2, 3))
    da, db, dc = (put(mine, x) for x in (a, b, c))
    read(mine, da, len(a))
    read(mine, db, len(b))
    # A fill in another process lands over A (a distinct file: created while the old one exists).
    landed = cache_dir / ".staging" / "999-0123456789abcdef.tmp"
    landed.write_bytes(a)
    os.utime(landed, ns=(1, 1))
    entry = cache_dir / da[:2] / da
    os.replace(landed, entry)
    read(mine, dc, len(c))
    assert cached(cache_dir) == {da, dc}
    assert entry.read_bytes() == a
    assert staging(cache_dir) == []


def test_files_vanishing_underneath_are_misses(slow: CountingBackend, cache_dir: Path) -> None:
    cache = make_cache(slow, cache_dir, max_bytes=10 * KIB, rescan_interval=3600)
    blobs = [payload(3 * KIB, seed=s) for s in range(3)]
    digests = [put(cache, b) for b in blobs]
    for d, b in zip(digests, blobs, strict=True):
        read(cache, d, len(b))
    for d in digests[:2]:
        (cache_dir / d[:2] / d).unlink()  # another process evicted them
    assert read(cache, digests[0], len(blobs[0])) == blobs[0]  # refilled
    extra = [payload(3 * KIB, seed=s) for s in (7, 8)]
    for b in extra:
        read(cache, put(cache, b), len(b))  # eviction meets a file that is gone: no error
    assert disk_bytes(cache_dir) <= 10 * KIB
    assert cache.bytes == disk_bytes(cache_dir)


def test_rescan_counts_other_processes_fills(slow: CountingBackend, cache_dir: Path) -> None:
    mine = make_cache(slow, cache_dir, max_bytes=10 * KIB, rescan_interval=0)
    theirs = make_cache(slow, cache_dir, max_bytes=10 * KIB, rescan_interval=0)
    blobs = [payload(3 * KIB, seed=s) for s in range(6)]
    digests = [put(mine, b) for b in blobs]
    for i, (d, b) in enumerate(zip(digests, blobs, strict=True)):
        assert read(mine if i % 2 else theirs, d, len(b)) == b
        assert disk_bytes(cache_dir) <= 10 * KIB


def test_shared_folder_under_load(slow: CountingBackend, cache_dir: Path) -> None:
    instances = [make_cache(slow, cache_dir, max_bytes=40 * KIB, rescan_interval=0.01) for _ in range(3)]
    blobs = [payload(2 * KIB + 37 * s, seed=s) for s in range(30)]
    digests = [put(instances[0], b) for b in blobs]
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(150):
                k = (i * 7 + n * 13) % len(blobs)
                cache = instances[(i + n) % len(instances)]
                assert read(cache, digests[k], len(blobs[k])) == blobs[k]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert staging(cache_dir) == []
    assert all(c.bytes <= 40 * KIB for c in instances)


CHILD = """
import random, sys
from pathlib import Path
from objstore.blobs.cache import CachedBlobBackend
from objstore.blobs.filesystem import FilesystemBlobBackend
from objstore.blobs.verify import read_verified

slow_dir, cache_dir, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
blobs = [(d, int(n)) for d, n in (line.split() for line in sys.stdin.read().splitlines())]
slow = FilesystemBlobBackend(Path(slow_dir))
cache = CachedBlobBackend(slow, Path(cache_dir), max_bytes=40 * 1024, rescan_interval=0.02)
rng = random.Random(seed)
for _ in range(300):
    digest, size = rng.choice(blobs)
    read_verified(cache.open(digest), digest, size, "blob")
print(cache.hits, cache.misses, cache.evictions)
"""


@pytest.mark.slow
def test_processes_sharing_a_folder(tmp_path: Path, cache_dir: Path) -> None:
    slow = FilesystemBlobBackend(tmp_path / "slow")
    blobs = [payload(3 * KIB + 101 * s, seed=s) for s in range(25)]
    listing = "".join(f"{put(slow, b)} {len(b)}\n" for b in blobs)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path / "slow"), str(cache_dir), str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(3)
    ]
    for child in children:
        out, err = child.communicate(listing, timeout=120)
        assert child.returncode == 0, err
        hits, misses, evictions = map(int, out.split())
        assert hits and misses and evictions
    assert staging(cache_dir) == []
    # Every entry left is a whole, verified copy.
    for path in cache_dir.glob("[0-9a-f][0-9a-f]/*"):
        assert sha(path.read_bytes()) == path.name
    # While several fill at once the folder may briefly hold more (each counts the others' fills at its
    # next rescan); once they stop, the next fill brings it back under max_bytes.
    last = make_cache(slow, cache_dir, max_bytes=40 * KIB)
    extra = payload(2 * KIB, seed=99)
    assert read(last, put(slow, extra), len(extra)) == extra
    assert disk_bytes(cache_dir) <= 40 * KIB
