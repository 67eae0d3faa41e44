"""One process's LRU index of a cache folder that other processes may share (see ``objstore.blobs.cache``).

The index knows each entry's size, which file it is (device and inode), when it was last used and how
many of this process's readers have it open. Recency is also written to the files' mtimes (by the
cache, on every fill and hit), which is how it survives restarts and reaches other processes: the index
re-reads the folder every ``rescan_interval`` seconds and takes the newer of its own and the file's time.

Eviction never deletes a file it did not mean to: it moves the file aside (an atomic rename into the
staging folder), then checks that what it moved is the copy it knows and that nobody used it since; if
not, it puts the file back. So a fresh copy that another process renamed into place, or read, after this
process last looked is never deleted for an older one.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat as stat_mod
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from objstore.blobs.fsutil import make_private_dirs

__all__ = ["CacheEntry", "CacheIndex"]

_SHARD = re.compile(r"[0-9a-f]{2}")
_SHA256 = re.compile(r"[0-9a-f]{64}")

# Translates an OSError met while listing the folder: (error, action, path) -> the error to raise.
ErrorFn = Callable[[OSError, str, str], Exception]


@dataclass(slots=True)
class CacheEntry:
    size: int
    ident: tuple[int, int]  # (st_dev, st_ino) of the copy this process knows
    used_ns: int  # last use: our own touch, or the file's mtime if another process used it later
    readers: int = 0


@dataclass(slots=True)
class _FillSlot:
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0


class CacheIndex:
    """Entries in least-recently-used order, their bytes, and the room promised to fills in progress."""

    def __init__(
        self, root: str, staging: str, *, max_bytes: int, rescan_interval: float, error: ErrorFn
    ) -> None:
        self.root = root
        self.staging = staging
        self.max_bytes = max_bytes
        self.rescan_interval = rescan_interval
        self._error = error
        # One RLock: a reader collected by the GC may release its entry inside a locked section.
        self.lock = threading.RLock()
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()  # least recently used first
        self.bytes = 0
        self.evictions = 0
        self._reserved = 0
        self._fills: dict[str, _FillSlot] = {}
        self._loaded = False
        self._scanning = False
        self._scanned_at = 0.0
        self._last_ns = 0

    def __len__(self) -> int:
        return len(self._entries)

    def path(self, sha: str) -> str:
        return os.path.join(self.root, sha[:2], sha)

    def now_ns(self) -> int:
        """Wall-clock ns (comparable across processes via mtimes), strictly increasing in this process."""
        with self.lock:
            self._last_ns = max(time.time_ns(), self._last_ns + 1)
            return self._last_ns

    # -- entries ---------------------------------------------------------------------------------------

    def pin(self, sha: str) -> CacheEntry | None:
        """Count a reader on the entry and make it the most recently used; None if there is none."""
        with self.lock:
            entry = self._entries.get(sha)
            if entry is not None:
                entry.readers += 1
                entry.used_ns = self.now_ns()
                self._entries.move_to_end(sha)
            return entry

    def release(self, entry: CacheEntry) -> None:
        with self.lock:
            entry.readers -= 1

    def add(self, sha: str, st: os.stat_result, used_ns: int, *, readers: int = 0) -> CacheEntry:
        with self.lock:
            old = self._entries.pop(sha, None)
            if old is not None:
                self.bytes -= old.size  # its readers release the old object, which is harmless
            entry = self._entries[sha] = CacheEntry(st.st_size, (st.st_dev, st.st_ino), used_ns, readers)
            self.bytes += st.st_size
            return entry

    def drop(self, sha: str, entry: CacheEntry | None = None) -> None:
        """Forget ``entry`` (default: whatever is indexed under ``sha``), never a newer one."""
        with self.lock:
            current = self._entries.get(sha)
            if current is not None and (entry is None or current is entry):
                del self._entries[sha]
                self.bytes -= current.size

    @contextlib.contextmanager
    def fill_lock(self, sha: str) -> Iterator[None]:
        """One thread at a time per address: concurrent misses download once, deletes wait for fills."""
        with self.lock:
            slot = self._fills.get(sha)
            if slot is None:
                slot = self._fills[sha] = _FillSlot()
            slot.users += 1
        slot.lock.acquire()
        try:
            yield
        finally:
            slot.lock.release()
            with self.lock:
                slot.users -= 1
                if not slot.users:
                    del self._fills[sha]

    # -- room and eviction -----------------------------------------------------------------------------

    def reserve(self, size: int) -> bool:
        """Promise ``size`` bytes to a fill, evicting as needed; False if it cannot fit (stream it)."""
        if size > self.max_bytes:
            return False
        self._maybe_rescan()
        with self.lock:
            if not self._make_room(size):
                return False
            self._reserved += size
            return True

    def unreserve(self, size: int) -> None:
        with self.lock:
            self._reserved -= size

    def land(self, sha: str, st: os.stat_result, used_ns: int, reserved: int) -> CacheEntry:
        """A fill landed: its reservation becomes an entry, pinned for the reader that filled it."""
        with self.lock:
            self._reserved -= reserved
            return self.add(sha, st, used_ns, readers=1)

    def _make_room(self, size: int) -> bool:
        excess = self.bytes + self._reserved + size - self.max_bytes
        kept: set[str] = set()
        while excess > 0:
            victims: list[tuple[str, CacheEntry]] = []
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
                if self._evict(sha, entry):
                    excess -= entry.size
                else:
                    kept.add(sha)
        return True

    def _evict(self, sha: str, entry: CacheEntry) -> bool:
        """Remove one unread entry (lock held); False if another process filled or used it since."""
        path = self.path(sha)
        aside = os.path.join(self.staging, f"{os.getpid()}-{secrets.token_hex(8)}.evict")
        try:
            # Move it aside first: what we then inspect is exactly what a later unlink removes, even if
            # another process renames a fresh copy into place meanwhile.
            try:
                os.rename(path, aside)
            except FileNotFoundError:
                if not os.path.lexists(path):
                    self.drop(sha, entry)  # another process evicted it already
                    return True
                make_private_dirs(Path(self.staging))
                os.rename(path, aside)
            st = os.stat(aside)
        except FileNotFoundError:
            self.drop(sha, entry)
            return True
        except OSError:
            return False
        if (st.st_dev, st.st_ino) != entry.ident or st.st_mtime_ns > entry.used_ns:
            _put_back(aside, path)
            entry.ident, entry.used_ns = (st.st_dev, st.st_ino), max(entry.used_ns, st.st_mtime_ns)
            self._entries.move_to_end(sha)
            return False
        with contextlib.suppress(OSError):
            os.unlink(aside)
        self.drop(sha, entry)
        self.evictions += 1
        return True

    # -- the folder ------------------------------------------------------------------------------------

    def ensure_loaded(self) -> None:
        if not self._loaded:
            with self.lock:
                if not self._loaded:  # the first read pays for the scan, not the constructor
                    self._merge(self._scan(), 0)
                    self._scanned_at = time.monotonic()
                    self._loaded = True

    def _maybe_rescan(self) -> None:
        """Re-read the folder now and then: other processes' fills count against ``max_bytes`` too."""
        with self.lock:
            if self._scanning or time.monotonic() - self._scanned_at < self.rescan_interval:
                return
            self._scanning = True
            started = self.now_ns()
        try:
            found = self._scan()  # without the lock: hits go on meanwhile
            with self.lock:
                self._merge(found, started)
        finally:
            with self.lock:
                self._scanning = False
                self._scanned_at = time.monotonic()

    def _merge(self, found: dict[str, os.stat_result], started: int) -> None:
        """Fold a listing of the folder into the index, then order it by last use (ours or others')."""
        for sha, entry in list(self._entries.items()):
            st = found.pop(sha, None)
            if st is None:
                if not entry.readers and entry.used_ns < started:
                    self.drop(sha, entry)  # gone, and not filled by us since the listing began
                continue
            entry.ident = (st.st_dev, st.st_ino)
            entry.used_ns = max(entry.used_ns, st.st_mtime_ns)
        for sha, st in found.items():
            if sha not in self._fills:
                self.add(sha, st, st.st_mtime_ns)
        self._entries = OrderedDict(sorted(self._entries.items(), key=lambda item: item[1].used_ns))

    def _scan(self) -> dict[str, os.stat_result]:
        found: dict[str, os.stat_result] = {}
        try:
            with os.scandir(self.root) as it:
                shards = [e.path for e in it if _SHARD.fullmatch(e.name) and e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return found
        except OSError as exc:
            raise self._error(exc, "list cache folder", self.root) from exc
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
    with contextlib.suppress(OSError):
        os.unlink(aside)
