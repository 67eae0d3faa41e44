"""A size-bounded local cache folder in front of a slower blob backend (object storage, a network disk).

Writes, ``exists``, ``stat`` and listings go to the slow store, which stays the truth. Reads: a hit
streams the local copy; a miss downloads into the cache's own ``.staging`` folder while hashing, and the
file is fsynced and renamed to ``cache_dir/<2 hex>/<sha256>`` only if its bytes hash to that address, so
a corrupt or partial download never becomes an entry. The cache fills on first read, not on publish:
content written here is often read elsewhere, and a write-through fill would add a local write and fsync
to every put (see ``bench/bench_cache.py``).

Eviction is least recently used first, keeps the entries' bytes at or under ``max_bytes`` and never
evicts an entry one of this process's readers has open. Recency lives in memory and in each file's
mtime, set on every fill and hit, so it survives restarts and is shared between processes. Several
processes may use one folder: each keeps its own index (re-read from the folder every
``rescan_interval`` seconds), files vanishing underneath are treated as misses, and an eviction first
moves the file aside and checks it is the copy it meant to evict, unused since, so that it never deletes
a copy another process filled or read after this process last looked.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import secrets
import stat as stat_mod
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from objstore.blobs.base import BlobBackend, BlobMissing, BlobStat, StagedBlob
from objstore.blobs.fsutil import FILE_MODE, check_sha256, make_private_dirs, storage_error
from objstore.errors import InvalidValue, StorageError

__all__ = ["CacheStats", "CachedBlobBackend"]

STAGING = ".staging"

_CHUNK = 1 << 20
_SHARD = re.compile(r"[0-9a-f]{2}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_O_BINARY: int = getattr(os, "O_BINARY", 0)


@dataclass(frozen=True, slots=True)
class CacheStats:
    hits: int
    misses: int
    evictions: int
    bytes: int
    entries: int
    uncached: int  # misses served straight from the slow store: too big, no room, bad bytes, local error


@dataclass(slots=True)
class _Entry:
    size: int
    ident: tuple[int, int]  # (st_dev, st_ino) of the copy this process knows
    used_ns: int  # last use: our own touch, or the file's mtime if another process used it later
    readers: int = 0


@dataclass(slots=True)
class _FillSlot:
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0


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
        self.max_bytes = max_bytes
        self.rescan_interval = rescan_interval
        self.name = f"cache:{cache_dir} -> {slow.name}"
        self._root = str(self.cache_dir)
        self._staging = os.path.join(self._root, STAGING)
        # One RLock: a reader collected by the GC may release its entry inside a locked section.
        self._lock = threading.RLock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._bytes = 0
        self._reserved = 0  # room promised to fills in progress
        self._fills: dict[str, _FillSlot] = {}
        self._loaded = False
        self._scanning = False
        self._scanned_at = 0.0
        self._last_ns = 0
        self.hits = self.misses = self.evictions = self.uncached = 0

    # -- counters --------------------------------------------------------------------------------------

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                self.hits, self.misses, self.evictions, self._bytes, len(self._entries), self.uncached
            )

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
        with self._fill_lock(sha256):
            removed = self.slow.delete(sha256)
            self._forget(sha256, strict=True)
        return removed

    def evict(self, sha256: str) -> bool:
        """Drop the local copy (e.g. after a verified read found it damaged); True if a file was removed.

        Open readers keep their bytes; the next open downloads the content again.
        """
        check_sha256(sha256)
        with self._fill_lock(sha256):
            return self._forget(sha256, strict=False)

    def remove_stale_staging(self, older_than: datetime) -> int:
        removed = self.slow.remove_stale_staging(older_than)  # also checks that older_than is aware
        cutoff = older_than.timestamp()
        try:
            with os.scandir(self._staging) as it:
                entries = list(it)
        except FileNotFoundError:
            return removed
        except OSError as exc:
            raise self._error(exc, "list cache staging folder", self._staging) from exc
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
                if not stat_mod.S_ISREG(st.st_mode) or st.st_mtime >= cutoff:
                    continue
                os.unlink(entry.path)
            except FileNotFoundError:
                continue  # finished or cleaned up by another process meanwhile
            except OSError as exc:
                raise self._error(exc, "remove cache staging file", entry.path) from exc
            removed += 1
        return removed

    def close(self) -> None:
        self.slow.close()

    # -- reading ---------------------------------------------------------------------------------------

    def open(self, sha256: str) -> BinaryIO:
        check_sha256(sha256)
        self._ensure_loaded()
        reader = self._open_entry(sha256)
        if reader is None:
            with self._fill_lock(sha256):
                # Another thread may have filled it while we waited, or another process before.
                reader = self._open_entry(sha256) or self._adopt(sha256)
                if reader is None:
                    return self._miss(sha256)
        with self._lock:
            self.hits += 1
        return reader

    def _open_entry(self, sha: str, *, pinned: _Entry | None = None) -> BinaryIO | None:
        """Pin the entry (unless ``pinned`` already is), touch its mtime and open it; None if it is gone."""
        entry = pinned
        if entry is None:
            with self._lock:
                entry = self._entries.get(sha)
                if entry is None:
                    return None
                entry.readers += 1
                entry.used_ns = self._now_ns()
                self._entries.move_to_end(sha)
        path = self._path(sha)
        pin = entry
        try:
            # Touch before opening: another process's eviction then sees the use and keeps the file.
            os.utime(path, ns=(pin.used_ns, pin.used_ns))
            return io.BufferedReader(_EntryFile(path, lambda: self._release(pin)), buffer_size=_CHUNK)
        except OSError:
            with self._lock:
                pin.readers -= 1
                self._drop(sha, pin)  # evicted by another process, or unreadable: refill it
            return None

    def _release(self, entry: _Entry) -> None:
        with self._lock:
            entry.readers -= 1

    def _adopt(self, sha: str) -> BinaryIO | None:
        """Take in a complete copy another process filled (fills land by rename, so it is whole)."""
        try:
            st = os.stat(self._path(sha))
        except OSError:
            return None
        if not stat_mod.S_ISREG(st.st_mode):
            return None
        with self._lock:
            self._add(sha, st.st_size, (st.st_dev, st.st_ino), st.st_mtime_ns)
        return self._open_entry(sha)

    def _miss(self, sha: str) -> BinaryIO:
        with self._lock:
            self.misses += 1
        info = self.slow.stat(sha)
        if info is None:
            raise BlobMissing(f"blob {sha} is not stored in {self.name}")
        if not self._reserve(info.size):
            return self._uncached(sha)
        try:
            entry = self._fill(sha, info.size)  # on success the reservation became the entry
        except BaseException:
            self._unreserve(info.size)
            raise
        if entry is None:
            self._unreserve(info.size)
            return self._uncached(sha)
        if not self.slow.exists(sha):
            # Deleted from the slow store while we downloaded (another process): no resurrection.
            with self._lock:
                entry.readers -= 1
            self._forget(sha, strict=False)
            raise BlobMissing(f"blob {sha} is not stored in {self.name}")
        return self._open_entry(sha, pinned=entry) or self._uncached(sha)

    def _uncached(self, sha: str) -> BinaryIO:
        with self._lock:
            self.uncached += 1
        return self.slow.open(sha)

    # -- filling ---------------------------------------------------------------------------------------

    def _fill(self, sha: str, size: int) -> _Entry | None:
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
        with self._lock:
            now = self._now_ns()
        try:
            os.utime(temp, ns=(now, now))  # recency survives restarts; exact, unlike the kernel's stamp
            final = self._path(sha)
            make_private_dirs(Path(os.path.dirname(final)))
            # A cache entry may vanish in a crash (that is a miss): no folder fsync. If another process
            # landed the same content meanwhile, replacing it with identical bytes is harmless.
            os.replace(temp, final)
        except OSError:
            _unlink_quietly(temp)
            return None
        with self._lock:
            self._reserved -= size
            return self._add(sha, st.st_size, (st.st_dev, st.st_ino), now, readers=1)

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

    @contextlib.contextmanager
    def _fill_lock(self, sha: str) -> Iterator[None]:
        """One thread at a time per address: concurrent misses download once, deletes wait for fills."""
        with self._lock:
            slot = self._fills.get(sha)
            if slot is None:
                slot = self._fills[sha] = _FillSlot()
            slot.users += 1
        slot.lock.acquire()
        try:
            yield
        finally:
            slot.lock.release()
            with self._lock:
                slot.users -= 1
                if not slot.users:
                    del self._fills[sha]

    # -- room and eviction -----------------------------------------------------------------------------

    def _reserve(self, size: int) -> bool:
        """Promise ``size`` bytes to a fill, evicting as needed; False if it cannot fit (stream it)."""
        if size > self.max_bytes:
            return False
        self._maybe_rescan()
        with self._lock:
            if not self._make_room(size):
                return False
            self._reserved += size
            return True

    def _unreserve(self, size: int) -> None:
        with self._lock:
            self._reserved -= size

    def _make_room(self, size: int) -> bool:
        excess = self._bytes + self._reserved + size - self.max_bytes
        kept: set[str] = set()
        while excess > 0:
            victims: list[tuple[str, _Entry]] = []
            planned = 0
            for sha, entry in self._entries.items():  # least recently used first
                if planned >= excess:
                    break
                if entry.readers or sha in kept or sha in self._fills:
                    continue  # being read, put back, or being filled or deleted right now
                victims.append((sha, entry))
                planned += entry.size
            if planned < excess:
                return False  # not enough unread entries: evict nothing, stream this one
            for sha, entry in victims:
                if self._evict_entry(sha, entry):
                    excess -= entry.size
                else:
                    kept.add(sha)
        return True

    def _evict_entry(self, sha: str, entry: _Entry) -> bool:
        """Remove one unread entry (lock held); False if another process filled or used it since."""
        path = self._path(sha)
        aside = os.path.join(self._staging, f"{os.getpid()}-{secrets.token_hex(8)}.evict")
        try:
            # Move it aside first: what we then inspect is exactly what a later unlink removes, even if
            # another process renames a fresh copy into place meanwhile.
            try:
                os.rename(path, aside)
            except FileNotFoundError:
                if not os.path.lexists(path):
                    self._drop(sha, entry)  # another process evicted it already
                    return True
                make_private_dirs(Path(self._staging))
                os.rename(path, aside)
            st = os.stat(aside)
        except FileNotFoundError:
            self._drop(sha, entry)
            return True
        except OSError:
            return False
        if (st.st_dev, st.st_ino) != entry.ident or st.st_mtime_ns > entry.used_ns:
            _put_back(aside, path)
            entry.ident, entry.used_ns = (st.st_dev, st.st_ino), max(entry.used_ns, st.st_mtime_ns)
            self._entries.move_to_end(sha)
            return False
        _unlink_quietly(aside)
        self._drop(sha, entry)
        self.evictions += 1
        return True

    def _forget(self, sha: str, *, strict: bool) -> bool:
        """Remove the local copy whoever filled it; ``strict`` raises if it cannot be removed."""
        with self._lock:
            entry = self._entries.get(sha)
            if entry is not None:
                self._drop(sha, entry)
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

    # -- the index -------------------------------------------------------------------------------------

    def _add(self, sha: str, size: int, ident: tuple[int, int], used_ns: int, readers: int = 0) -> _Entry:
        old = self._entries.pop(sha, None)
        if old is not None:
            self._bytes -= old.size  # its readers release the old object, which is harmless
        entry = self._entries[sha] = _Entry(size, ident, used_ns, readers)
        self._bytes += size
        return entry

    def _drop(self, sha: str, entry: _Entry) -> None:
        if self._entries.get(sha) is entry:  # never a newer entry for the same address
            del self._entries[sha]
            self._bytes -= entry.size

    def _now_ns(self) -> int:
        """Wall-clock ns (comparable across processes via mtimes), strictly increasing in this process."""
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        return self._last_ns

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            with self._lock:
                if not self._loaded:  # the first read pays for the scan, not the constructor
                    self._merge(self._scan(), 0)
                    self._scanned_at = time.monotonic()
                    self._loaded = True

    def _maybe_rescan(self) -> None:
        """Re-read the folder now and then: other processes' fills count against ``max_bytes`` too."""
        with self._lock:
            if self._scanning or time.monotonic() - self._scanned_at < self.rescan_interval:
                return
            self._scanning = True
            started = self._now_ns()
        try:
            found = self._scan()  # without the lock: hits go on meanwhile
            with self._lock:
                self._merge(found, started)
        finally:
            with self._lock:
                self._scanning = False
                self._scanned_at = time.monotonic()

    def _merge(self, found: dict[str, os.stat_result], started: int) -> None:
        """Fold a listing of the folder into the index, then order it by last use (ours or others')."""
        for sha, entry in list(self._entries.items()):
            st = found.pop(sha, None)
            if st is None:
                if not entry.readers and entry.used_ns < started:
                    self._drop(sha, entry)  # gone, and not filled by us since the listing began
                continue
            entry.ident = (st.st_dev, st.st_ino)
            entry.used_ns = max(entry.used_ns, st.st_mtime_ns)
        for sha, st in found.items():
            if sha not in self._fills:
                self._add(sha, st.st_size, (st.st_dev, st.st_ino), st.st_mtime_ns)
        self._entries = OrderedDict(sorted(self._entries.items(), key=lambda item: item[1].used_ns))

    def _scan(self) -> dict[str, os.stat_result]:
        found: dict[str, os.stat_result] = {}
        try:
            with os.scandir(self._root) as it:
                shards = [e.path for e in it if _SHARD.fullmatch(e.name) and e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return found
        except OSError as exc:
            raise self._error(exc, "list cache folder", self._root) from exc
        for shard in shards:
            prefix = os.path.basename(shard)
            try:
                with os.scandir(shard) as it:
                    names = [e for e in it if _SHA256.fullmatch(e.name) and e.name.startswith(prefix)]
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise self._error(exc, "list cache folder", shard) from exc
            for entry in names:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # evicted since listed
                except OSError as exc:
                    raise self._error(exc, "stat cached blob", entry.path) from exc
                if stat_mod.S_ISREG(st.st_mode):
                    found[entry.name] = st
        return found

    def _path(self, sha: str) -> str:
        return os.path.join(self._root, sha[:2], sha)

    def _error(self, exc: OSError, action: str, path: str) -> StorageError:
        return storage_error(
            exc, action, path, store=self.name, folder="cache folder", setting="cache folder"
        )

    # Last in the class body: the property's name would shadow the builtin in the annotations above.
    @property
    def bytes(self) -> int:
        """Bytes of the entries this process knows (other processes' recent fills show after a rescan)."""
        return self._bytes


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


def _sync_and_stat(fd: int) -> os.stat_result:
    try:
        os.fsync(fd)
        return os.fstat(fd)
    except OSError as exc:
        raise _LocalFailure(str(exc)) from exc


def _put_back(aside: str, path: str) -> None:
    """Return a file moved aside to its address, without replacing a copy that landed meanwhile."""
    try:
        os.link(aside, path)
    except FileExistsError:
        pass  # the same bytes are there again
    except OSError:
        with contextlib.suppress(OSError):
            os.rename(aside, path)
        return
    _unlink_quietly(aside)


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
