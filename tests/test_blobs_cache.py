"""CachedBlobBackend: the shared blob contract, plus hits, LRU eviction, verified fills, sharing a folder."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from blob_contract import MIB, BlobBackendContract, far_future, payload

from objstore.blobs.base import BlobBackend, BlobMissing, StagedBlob
from objstore.blobs.cache import CachedBlobBackend
from objstore.blobs.filesystem import FilesystemBlobBackend
from objstore.blobs.verify import read_verified
from objstore.errors import IntegrityError, InvalidValue, StorageError

KIB = 1 << 10


class TestCacheContract(BlobBackendContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[BlobBackend]:
        store = CachedBlobBackend(
            FilesystemBlobBackend(tmp_path / "slow"), tmp_path / "cache", max_bytes=8 * MIB
        )
        yield store
        store.close()


class CountingBackend(FilesystemBlobBackend):
    """The real filesystem backend, counting calls; ``wrap`` may replace the readers it hands out."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.calls: Counter[str] = Counter()
        self.wrap: Callable[[BinaryIO], Any] | None = None
        self.before_open: Callable[[], object] | None = None

    def open(self, sha256: str) -> BinaryIO:
        self.calls["open"] += 1
        if self.before_open is not None:
            self.before_open()
        reader = super().open(sha256)
        return self.wrap(reader) if self.wrap is not None else reader

    def stat(self, sha256: str) -> Any:
        self.calls["stat"] += 1
        return super().stat(sha256)

    def exists(self, sha256: str) -> bool:
        self.calls["exists"] += 1
        return super().exists(sha256)


class FailingReader:
    """A slow-store reader that raises after ``limit`` bytes, like a dropped connection."""

    def __init__(self, raw: BinaryIO, limit: int) -> None:
        self.raw, self.limit, self.done = raw, limit, 0

    def read(self, n: int = -1) -> bytes:
        if self.done >= self.limit:
            raise StorageError("connection reset by peer while downloading")
        data = self.raw.read(min(n if n >= 0 else self.limit, self.limit - self.done))
        self.done += len(data)
        return data

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> FailingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DeleteAtEnd:
    """A slow-store reader that runs ``at_end`` once it has handed out the last byte."""

    def __init__(self, raw: BinaryIO, at_end: Callable[[], object]) -> None:
        self.raw, self.at_end = raw, at_end

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        if not data:
            self.at_end()
        return data

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> DeleteAtEnd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def slow(tmp_path: Path) -> CountingBackend:
    return CountingBackend(tmp_path / "slow")


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def make_cache(slow: BlobBackend, cache_dir: Path, max_bytes: int = 10 * KIB, **kw: Any) -> CachedBlobBackend:
    return CachedBlobBackend(slow, cache_dir, max_bytes=max_bytes, **kw)


def put(backend: BlobBackend, data: bytes) -> str:
    staged = backend.stage([data])
    backend.publish(staged)
    backend.discard(staged)
    return staged.sha256


def read(cache: BlobBackend, digest: str, size: int) -> bytes:
    return read_verified(cache.open(digest), digest, size, "test blob")


def cached(cache_dir: Path) -> set[str]:
    return {p.name for p in cache_dir.glob("[0-9a-f][0-9a-f]/*")}


def staging(cache_dir: Path) -> list[str]:
    folder = cache_dir / ".staging"
    return sorted(os.listdir(folder)) if folder.exists() else []


def disk_bytes(cache_dir: Path) -> int:
    return sum(p.stat().st_size for p in cache_dir.glob("[0-9a-f][0-9a-f]/*"))


# -- hits and misses -------------------------------------------------------------------------------------


def test_second_open_is_a_hit(slow: CountingBackend, cache_dir: Path) -> None:
    cache = make_cache(slow, cache_dir)
    data = payload(3 * KIB, seed=1)
    digest = put(cache, data)
    assert cached(cache_dir) == set()  # filled on first read, not on publish
    assert read(cache, digest, len(data)) == data
    assert slow.calls["open"] == 1
    slow.calls.clear()
    assert read(cache, digest, len(data)) == data
    assert slow.calls == Counter()  # the slow store is not touched at all
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.bytes, stats.entries) == (1, 1, len(data), 1)
    assert cached(cache_dir) == {digest}
    assert cache.name == f"cache:{cache_dir} -> {slow.name}"


def test_cache_files_are_private(slow: CountingBackend, cache_dir: Path) -> None:
    cache = make_cache(slow, cache_dir)
    old = os.umask(0o022)
    try:
        digest = put(cache, b"private")
        read(cache, digest, 7)
    finally:
        os.umask(old)
    assert (cache_dir / digest[:2] / digest).stat().st_mode & 0o777 == 0o600
    for folder in (cache_dir, cache_dir / digest[:2], cache_dir / ".staging"):
        assert folder.stat().st_mode & 0o777 == 0o700


def test_bad_settings_refused(slow: CountingBackend, tmp_path: Path) -> None:
    with pytest.raises(InvalidValue):
        make_cache(slow, tmp_path / "cache", max_bytes=-1)
    for overlapping in (tmp_path / "slow", tmp_path / "slow" / "cache", tmp_path):
        with pytest.raises(InvalidValue, match="overlaps"):
            make_cache(slow, overlapping)


# -- eviction --------------------------------------------------------------------------------------------


def test_total_bytes_stay_under_max(slow: CountingBackend, cache_dir: Path) -> None:
    cache = make_cache(slow, cache_dir, max_bytes=10 * KIB)
    blobs = [payload(1000 + 97 * i, seed=i) for i in range(40)]
    digests = [put(cache, b) for b in blobs]
    for rounds in range(3):
        for i, (digest, data) in enumerate(zip(digests, blobs, strict=True)):
            if (i + rounds) % 3:
                assert read(cache, digest, len(data)) == data
                assert cache.bytes <= 10 * KIB
                assert disk_bytes(cache_dir) == cache.bytes
    assert cache.evictions > 0
    assert staging(cache_dir) == []


def test_least_recently_used_is_evicted(slow: CountingBackend, cache_dir: Path) -> None:
    cache = make_cache(slow, cache_dir, max_bytes=10 * KIB)
    a, b, c = (payload(4 * KIB, seed=s) for s in (1, 2, 3))
    da, db, dc = (put(cache, x) for x in (a, b, c))
    read(cache, da, len(a))
    read(cache, db, len(b))
    read(cache, da, len(a))  # A is now more recent than B
    read(cache, dc, len(c))
    assert cached(cache_dir) == {da, dc}
    assert cache.evictions == 1


def test_entry_open_for_reading_is_not_evicted(slow: CountingBackend, cache_dir: Path) -> None:
    cache = make_cache(slow, cache_dir, max_bytes=10 * KIB)
    a, b, c, d = (payload(4 * KIB, seed=s) for s in (1, 2, 3, 4))
    da, db, dc, dd = (put(cache, x) for x in (a, b, c, d))
    reader = cache.open(da)  # A stays open (and is the least recently used)
    first = reader.read(100)
    read(cache, db, len(b))
    read(cache, dc, len(c))  # needs room: A is skipped, B goes
    assert cached(cache_dir) == {da, dc}
    assert first + reader.read() == a
    reader.close()
    read(cache, dd, len(d))  # now A is the least recently used and closed
    assert cached(cache_dir) == {dc, dd}


def test_everything_open_means_streaming(slow: CountingBackend, cache_dir: Path) -> None:
    cache = make_cache(slow, cache_dir, max_bytes=10 * KIB)
    a, b, c = (payload(4 * KIB, seed=s) for s in (1, 2, 3))
    da, db, dc = (put(cache, x) for x in (a, b, c))
    with cache.open(da), cache.open(db):
        assert read(cache, dc, len(c)) == c  # no room: served from the slow store, nothing evicted
    assert cached(cache_dir) == {da, db}
    assert (cache.evictions, cache.uncached) == (0, 1)
    # Room for 7 KiB needs both A and B gone; only B is closed, so B is not evicted in vain.
    bigger = payload(7 * KIB, seed=4)
    with cache.open(da):
        assert read(cache, put(cache, bigger), len(bigger)) == bigger
    assert cached(cache_dir) == {da, db}


def test_blob_bigger_than_max_streams_uncached(slow: CountingBackend, cache_dir: Path) -> None:
    cache = make_cache(slow, cache_dir, max_bytes=10 * KIB)
    small, big = payload(2 * KIB, seed=1), payload(11 * KIB, seed=2)
    ds, dbig = put(cache, small), put(cache, big)
    read(cache, ds, len(small))
    assert read(cache, dbig, len(big)) == big
    assert read(cache, dbig, len(big)) == big
    assert cached(cache_dir) == {ds}  # the small entry was not evicted to make useless room
    assert staging(cache_dir) == []
    assert slow.calls["open"] == 3
    assert cache.uncached == 2


def test_restart_keeps_entries_and_their_order(slow: CountingBackend, cache_dir: Path) -> None:
    cache = make_cache(slow, cache_dir, max_bytes=10 * KIB)
    a, b, c = (payload(4 * KIB, seed=s) for s in (1, 2, 3))
    da, db, dc = (put(cache, x) for x in (a, b, c))
    read(cache, da, len(a))
    read(cache, db, len(b))
    read(cache, da, len(a))  # A used after B: recorded in A's mtime
    cache.close()
    again = make_cache(slow, cache_dir, max_bytes=10 * KIB)
    read(again, dc, len(c))  # needs room: B is the least recently used, as before the restart
    assert cached(cache_dir) == {da, dc}
    slow.calls.clear()
    assert read(again, da, len(a)) == a
    assert slow.calls["open"] == 0  # an entry from before the restart is a hit
    assert (again.hits, again.misses, again.bytes) == (1, 1, 8 * KIB)


def test_restart_with_a_smaller_max_evicts_down(slow: CountingBackend, cache_dir: Path) -> None:
    cache = make_cache(slow, cache_dir, max_bytes=20 * KIB)
    blobs = [payload(4 * KIB, seed=s) for s in range(4)]
    digests = [put(cache, b) for b in blobs]
    for d, b in zip(digests, blobs, strict=True):
        read(cache, d, len(b))
    smaller = make_cache(slow, cache_dir, max_bytes=10 * KIB)
    extra = payload(KIB, seed=9)
    read(smaller, put(smaller, extra), len(extra))
    assert disk_bytes(cache_dir) <= 10 * KIB
    assert digests[3] in cached(cache_dir)  # the most recent survives


# -- verified fills --------------------------------------------------------------------------------------


def test_corrupt_slow_blob_is_not_cached(slow: CountingBackend, cache_dir: Path, tmp_path: Path) -> None:
    cache = make_cache(slow, cache_dir)
    data = payload(5 * KIB, seed=4)
    digest = put(cache, data)
    damaged = bytearray(data)
    damaged[2000] ^= 0xFF
    (tmp_path / "slow" / digest[:2] / digest).write_bytes(damaged)
    with pytest.raises(IntegrityError, match=digest):
        read(cache, digest, len(data))
    (tmp_path / "slow" / digest[:2] / digest).write_bytes(data[:-1])  # a partial upload
    with pytest.raises(IntegrityError, match="ends after"):
        read(cache, digest, len(data))
    assert cached(cache_dir) == set()
    assert staging(cache_dir) == []
    assert cache.bytes == 0


def test_interrupted_fill_leaves_nothing(slow: CountingBackend, cache_dir: Path) -> None:
    cache = make_cache(slow, cache_dir, max_bytes=8 * MIB)
    data = payload(3 * MIB, seed=5)
    digest = put(cache, data)
    slow.wrap = lambda raw: FailingReader(raw, MIB + 5)
    with pytest.raises(StorageError, match="connection reset"):
        cache.open(digest)
    assert cached(cache_dir) == set()
    assert staging(cache_dir) == []
    assert cache.remove_stale_staging(far_future()) == 0
    assert cache.bytes == 0
    slow.wrap = None
    assert read(cache, digest, len(data)) == data  # the next read fills it properly


def test_damaged_cache_file_is_caught_and_evicted(slow: CountingBackend, cache_dir: Path) -> None:
    cache = make_cache(slow, cache_dir)
    data = payload(6 * KIB, seed=6)
    digest = put(cache, data)
    read(cache, digest, len(data))
    entry = cache_dir / digest[:2] / digest
    damaged = bytearray(data)
    damaged[10] ^= 0x01
    entry.write_bytes(damaged)  # the disk went bad later
    with pytest.raises(IntegrityError):
        read(cache, digest, len(data))
    assert cache.evict(digest) is True
    assert cache.evict(digest) is False
    assert read(cache, digest, len(data)) == data
    assert entry.read_bytes() == data


def test_local_disk_failure_falls_back_to_the_slow_store(
    slow: CountingBackend, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = make_cache(slow, cache_dir)
    data = payload(3 * KIB, seed=7)
    digest = put(cache, data)
    real_fsync = os.fsync

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    assert read(cache, digest, len(data)) == data
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert cached(cache_dir) == set()
    assert staging(cache_dir) == []
    assert cache.uncached == 1


# -- the slow store is the truth -------------------------------------------------------------------------


def test_delete_removes_from_both(slow: CountingBackend, cache_dir: Path) -> None:
    cache = make_cache(slow, cache_dir)
    data = payload(2 * KIB, seed=8)
    digest = put(cache, data)
    read(cache, digest, len(data))
    assert cache.delete(digest) is True
    assert cached(cache_dir) == set()
    assert not slow.exists(digest)
    assert not cache.exists(digest)
    with pytest.raises(BlobMissing):
        cache.open(digest)
    assert cache.bytes == 0


def test_cached_copy_does_not_resurrect_deleted_content(slow: CountingBackend, cache_dir: Path) -> None:
    # Another process deletes the content after this one downloaded it, before the fill lands.
    cache = make_cache(slow, cache_dir)
    other = make_cache(slow, cache_dir)
    data = payload(2 * KIB, seed=9)
    digest = put(cache, data)
    slow.wrap = lambda raw: DeleteAtEnd(raw, lambda: other.delete(digest))
    with pytest.raises(BlobMissing):
        cache.open(digest)
    assert cached(cache_dir) == set()
    assert staging(cache_dir) == []
    assert cache.bytes == 0
    assert not cache.exists(digest)


def test_slow_store_failing_after_the_fill_leaves_an_evictable_entry(
    slow: CountingBackend, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = make_cache(slow, cache_dir, max_bytes=10 * KIB)
    a, b, c = (payload(4 * KIB, seed=s) for s in (1, 2, 3))
    da, db, dc = (put(cache, x) for x in (a, b, c))

    def unreachable(sha256: str) -> bool:
        raise StorageError("the slow store timed out")

    monkeypatch.setattr(slow, "exists", unreachable)
    with pytest.raises(StorageError, match="timed out"):
        cache.open(da)
    monkeypatch.undo()
    read(cache, db, len(b))
    read(cache, dc, len(c))  # A must not be stuck as "open for reading"
    assert cached(cache_dir) == {db, dc}


def test_exists_and_stat_ask_the_slow_store(slow: CountingBackend, cache_dir: Path, tmp_path: Path) -> None:
    cache = make_cache(slow, cache_dir)
    data = payload(KIB, seed=10)
    digest = put(cache, data)
    read(cache, digest, len(data))
    (tmp_path / "slow" / digest[:2] / digest).unlink()  # removed behind the cache's back
    assert not cache.exists(digest)
    assert cache.stat(digest) is None
    assert list(cache.iter_blobs()) == []


def test_remove_stale_staging_cleans_the_cache_staging(slow: CountingBackend, cache_dir: Path) -> None:
    cache = make_cache(slow, cache_dir)
    (cache_dir / ".staging").mkdir(parents=True)
    leftover = cache_dir / ".staging" / "123-0123456789abcdef.tmp"
    leftover.write_bytes(b"a crashed fill")
    hour_ago = time.time() - 3600
    os.utime(leftover, (hour_ago, hour_ago))
    staged: StagedBlob = cache.stage([b"pending"])
    assert cache.remove_stale_staging(datetime.now(UTC) - timedelta(minutes=30)) == 1
    assert staging(cache_dir) == []
    cache.discard(staged)
