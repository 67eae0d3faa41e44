"""A size-bounded local cache folder in front of a slower blob backend (object storage, a network disk).

Writes, ``exists``, ``stat`` and listings go to the slow store, which stays the truth. Reads: a hit
streams the local copy; a miss downloads into the cache's own ``.staging`` folder while hashing, and the
file is fsynced and renamed to ``cache_dir/<2 hex>/<sha256>`` only if its bytes hash to that address, so
a corrupt or partial download never becomes an entry. The cache fills on first read, not on publish:
content written here is often read elsewhere, and a write-through fill would add a local write and fsync
to every put (see ``bench/bench_cache.py``).

A miss costs the slow store a ``stat`` (the size decides whether it fits), the download, and an
``exists`` once the file has landed: content another process deleted meanwhile is dropped again, never
resurrected. Streamed from the slow store without caching: blobs larger than ``max_bytes``, misses when
every entry that could make room is open, downloads that fail verification (the caller's verified read
then raises on the slow store's bytes) and fills the cache folder fails (disk full): a broken cache
disk slows reads down but never fails them.

Eviction, recency and sharing one folder between processes: see ``objstore.blobs.cache_index``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import secrets
import stat as stat_mod
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from objstore.blobs.base import BlobBackend, BlobMissing, BlobStat, StagedBlob
from objstore.blobs.cache_index import CacheEntry, CacheIndex
from objstore.blobs.fsutil import (
    DIR_MODE,
    FILE_MODE,
    check_sha256,
    make_private_dirs,
    remove_stale_files,
    storage_error,
)
from objstore.errors import InvalidValue, StorageError

__all__ = ["CacheStats", "CachedBlobBackend"]

STAGING = ".staging"

_CHUNK = 1 << 20
_O_BINARY: int = getattr(os, "O_BINARY", 0)


@dataclass(frozen=True, slots=True)
class CacheStats:
    hits: int
    misses: int
    evictions: int
    bytes: int
    entries: int
    uncached: int  # misses served straight from the slow store: too big, no room, bad bytes, local error


class _LocalFailure(Exception):
    """The cache folder failed during a fill (disk full, I/O error): the read falls back to the slow store."""


class _EntryFile(io.FileIO):
    """A cache file that releases its entry's reader count exactly once, when closed or collected."""

    def __init__(self, path: str, release: Callable[[], None]) -> None:
        self._release: Callable[[], None] | None = None  # nothing to release if opening fails
        super().__init__(path, "rb")
        self._release = release

    def close(self) -> None:
        try:
            super().close()
        finally:
            release, self._release = getattr(self, "_release", None), None
            if release is not None:
                release()


class CachedBlobBackend(BlobBackend):
    """``slow`` behind a local LRU cache of at most ``max_bytes`` bytes in ``cache_dir``."""

    def __init__(
        self, slow: BlobBackend, cache_dir: Path, *, max_bytes: int, rescan_interval: float = 10.0
    ) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise InvalidValue(f"cache max_bytes must be a non-negative int, got {max_bytes!r}")
        if rescan_interval < 0:
            raise InvalidValue(f"cache rescan_interval must not be negative, got {rescan_interval!r}")
        _refuse_overlap(slow, Path(cache_dir))
        self.slow = slow
        self.cache_dir = Path(cache_dir)
        self.name = f"cache:{cache_dir} -> {slow.name}"
        self._staging = os.path.join(cache_dir, STAGING)
        self._index = CacheIndex(
            str(cache_dir),
            self._staging,
            max_bytes=max_bytes,
            rescan_interval=rescan_interval,
            error=self._error,
        )
        self._counts_lock = threading.Lock()
        self.hits = self.misses = self.uncached = 0

    # -- counters --------------------------------------------------------------------------------------

    @property
    def max_bytes(self) -> int:
        return self._index.max_bytes

    @property
    def evictions(self) -> int:
        return self._index.evictions

    def stats(self) -> CacheStats:
        index = self._index
        with index.lock, self._counts_lock:
            return CacheStats(self.hits, self.misses, index.evictions, index.bytes, len(index), self.uncached)

    def _count(self, name: str) -> None:
        with self._counts_lock:
            setattr(self, name, getattr(self, name) + 1)

    # -- the slow store is the truth -------------------------------------------------------------------

    def stage(self, chunks: Iterable[bytes]) -> StagedBlob:
        return self.slow.stage(chunks)

    def publish(self, staged: StagedBlob) -> None:
        self.slow.publish(staged)

    def discard(self, staged: StagedBlob) -> None:
        self.slow.discard(staged)

    def exists(self, sha256: str) -> bool:
        return self.slow.exists(sha256)

    def stat(self, sha256: str) -> BlobStat | None:
        return self.slow.stat(sha256)

    def iter_blobs(self) -> Iterator[BlobStat]:
        return self.slow.iter_blobs()

    def delete(self, sha256: str) -> bool:
        check_sha256(sha256)
        # Slow store first: a fill racing in another process re-checks it after landing and drops its copy.
        with self._index.fill_lock(sha256):
            removed = self.slow.delete(sha256)
            self._forget(sha256, strict=True)
        return removed

    def evict(self, sha256: str) -> bool:
        """Drop the local copy (e.g. after a verified read found it damaged); True if a file was removed.

        Open readers keep their bytes; the next open downloads the content again.
        """
        check_sha256(sha256)
        with self._index.fill_lock(sha256):
            return self._forget(sha256, strict=False)

    def remove_stale_staging(self, older_than: datetime) -> int:
        removed = self.slow.remove_stale_staging(older_than)
        return removed + remove_stale_files(self._staging, older_than, self._error, what="cache staging")

    def close(self) -> None:
        self.slow.close()

    # -- reading ---------------------------------------------------------------------------------------

    def open(self, sha256: str) -> BinaryIO:
        check_sha256(sha256)
        index = self._index
        index.ensure_loaded()
        reader = self._open_entry(sha256, index.pin(sha256))
        if reader is None:
            with index.fill_lock(sha256):
                # Another thread may have filled it while we waited, or another process before.
                reader = self._open_entry(sha256, index.pin(sha256)) or self._adopt(sha256)
                if reader is None:
                    return self._miss(sha256)
        self._count("hits")
        return reader

    def _open_entry(self, sha: str, entry: CacheEntry | None) -> BinaryIO | None:
        """Touch and open a pinned entry; None (and the entry forgotten) if its file is gone."""
        if entry is None:
            return None
        path = self._path(sha)
        index = self._index
        try:
            # Touch before opening: another process's eviction then sees the use and keeps the file.
            os.utime(path, ns=(entry.used_ns, entry.used_ns))
            raw = _EntryFile(path, lambda: index.release(entry))
        except OSError:
            index.release(entry)
            index.drop(sha, entry)  # evicted by another process, or unreadable: refill it
            return None
        return io.BufferedReader(raw, buffer_size=_CHUNK)

    def _adopt(self, sha: str) -> BinaryIO | None:
        """Take in a complete copy another process filled (fills land by rename, so it is whole)."""
        try:
            st = os.stat(self._path(sha))
        except OSError:
            return None
        if not stat_mod.S_ISREG(st.st_mode):
            return None
        self._index.add(sha, st, st.st_mtime_ns)
        return self._open_entry(sha, self._index.pin(sha))

    def _miss(self, sha: str) -> BinaryIO:
        self._count("misses")
        info = self.slow.stat(sha)
        if info is None:
            raise BlobMissing(f"blob {sha} is not stored in {self.name}")
        if not self._index.reserve(info.size):
            return self._uncached(sha)
        try:
            entry = self._fill(sha, info.size)  # on success the reservation became the entry
        except BaseException:
            self._index.unreserve(info.size)
            raise
        if entry is None:
            self._index.unreserve(info.size)
            return self._uncached(sha)
        try:
            still_there = self.slow.exists(sha)
        except BaseException:
            self._index.release(entry)  # the copy is good; only the pin must not outlive this call
            raise
        if not still_there:
            # Deleted from the slow store while we downloaded (another process): no resurrection.
            self._index.release(entry)
            self._forget(sha, strict=False)
            raise BlobMissing(f"blob {sha} is not stored in {self.name}")
        return self._open_entry(sha, entry) or self._uncached(sha)

    def _uncached(self, sha: str) -> BinaryIO:
        self._count("uncached")
        return self.slow.open(sha)

    def _forget(self, sha: str, *, strict: bool) -> bool:
        """Remove the local copy whoever filled it; ``strict`` raises if it cannot be removed."""
        self._index.drop(sha)
        path = self._path(sha)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            if strict:
                raise self._error(exc, "remove cached blob", path) from exc
            return False
        return True

    # -- filling ---------------------------------------------------------------------------------------

    def _fill(self, sha: str, size: int) -> CacheEntry | None:
        """Download, verify, fsync and rename into place; the new entry, pinned for the caller.

        None if the bytes do not hash to ``sha`` or the cache folder failed. The slow store's own errors
        propagate. No temp file is left behind either way.
        """
        try:
            temp, fd = self._new_temp()
        except OSError:
            return None
        st: os.stat_result | None = None
        try:
            with self.slow.open(sha) as src:
                good = _copy_verified(src, fd, sha, size)  # the slow store's errors propagate
            if good:
                st = _sync_and_stat(fd)  # the bytes are durable before their name appears
        except _LocalFailure:
            pass
        finally:
            _close_quietly(fd)
            if st is None:
                _unlink_quietly(temp)
        if st is None:
            return None
        now = self._index.now_ns()
        try:
            os.utime(temp, ns=(now, now))  # recency survives restarts; exact, unlike the kernel's stamp
            final = self._path(sha)
            _make_shard(os.path.dirname(final))
            # A cache entry may vanish in a crash (that is a miss): no folder fsync. If another process
            # landed the same content meanwhile, replacing it with identical bytes is harmless.
            os.replace(temp, final)
        except OSError:
            _unlink_quietly(temp)
            return None
        return self._index.land(sha, st, now, reserved=size)

    def _new_temp(self) -> tuple[str, int]:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY
        path = os.path.join(self._staging, f"{os.getpid()}-{secrets.token_hex(8)}.tmp")
        try:
            fd = os.open(path, flags, FILE_MODE)
        except FileNotFoundError:
            make_private_dirs(Path(self._staging))
            fd = os.open(path, flags, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)  # the umask may have narrowed it
        except OSError:
            os.close(fd)
            _unlink_quietly(path)
            raise
        return path, fd

    def _path(self, sha: str) -> str:
        return self._index.path(sha)

    def _error(self, exc: OSError, action: str, path: str) -> StorageError:
        return storage_error(
            exc, action, path, store=self.name, folder="cache folder", setting="cache folder"
        )

    # Last in the class body: the property's name would shadow the builtin in the annotations above.
    @property
    def bytes(self) -> int:
        """Bytes of the entries this process knows (other processes' recent fills show after a rescan)."""
        return self._index.bytes


def _copy_verified(src: BinaryIO, fd: int, sha: str, size: int) -> bool:
    """Copy ``src`` to ``fd`` while hashing; True if it is exactly ``size`` bytes hashing to ``sha``."""
    hasher = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    readinto = getattr(src, "readinto", None)
    written = 0
    while True:
        if readinto is not None:
            n = readinto(buf) or 0
            data: bytes | memoryview = view[:n]
        else:
            data = src.read(_CHUNK)
            n = len(data)
        if not n:
            break
        written += n
        if written > size:
            return False  # longer than the slow store says: not this content; never fill a disk with it
        hasher.update(data)
        try:
            done = os.write(fd, data)
            while done < n:
                done += os.write(fd, data[done:])
        except OSError as exc:
            raise _LocalFailure(str(exc)) from exc
    return written == size and hasher.hexdigest() == sha


def _make_shard(path: str) -> None:
    """A 0700 shard folder. Its parent is not fsynced (8 ms per new shard measured): a shard lost in a
    crash costs misses, never wrong bytes, because each file is fsynced before its name appears."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        return
    os.chmod(path, DIR_MODE)  # the umask may have narrowed it


def _sync_and_stat(fd: int) -> os.stat_result:
    try:
        os.fsync(fd)
        return os.fstat(fd)
    except OSError as exc:
        raise _LocalFailure(str(exc)) from exc


def _refuse_overlap(slow: BlobBackend, cache_dir: Path) -> None:
    """A cache folder inside a filesystem backend's root (or around it) would evict the truth."""
    root = getattr(slow, "root", None)
    if not isinstance(root, str | Path):
        return
    mine, theirs = os.path.realpath(cache_dir), os.path.realpath(root)
    if os.path.commonpath([mine, theirs]) in (mine, theirs):
        raise InvalidValue(
            f"cache folder {cache_dir} overlaps the blob folder of {slow.name}; use a separate one"
        )


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
