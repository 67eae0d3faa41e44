"""Blob backend on a local folder: ``root/<2 hex>/<sha256>`` for content, ``root/.staging/`` for writes.

Write order (see DESIGN.md, "Storage rules that keep data safe"): stream into a temp file in
``.staging`` while hashing, fsync it, then hard-link it to its content address and fsync the shard folder.
Staging lives under the same root so the link (or the rename fallback) never crosses filesystems.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import stat as stat_mod
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from objstore.blobs.base import BlobBackend, BlobMissing, BlobStat, StagedBlob
from objstore.blobs.fsutil import (
    FILE_MODE,
    check_sha256,
    fsync_dir,
    make_private_dirs,
    remove_file,
    remove_stale_files,
    storage_error,
)
from objstore.errors import InvalidValue, StorageError

__all__ = ["FilesystemBlobBackend"]

STAGING = ".staging"

_TEMP_NAME = re.compile(r"[0-9]+-[0-9a-f]{16}\.tmp")
_SHARD = re.compile(r"[0-9a-f]{2}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# errnos meaning "this filesystem cannot hard-link here": publish falls back to copy + rename.
_NO_HARDLINK = frozenset(
    {errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS}
)
_O_BINARY: int = getattr(os, "O_BINARY", 0)


def _byte_view(chunk: object) -> memoryview:
    """A flat byte view of a bytes-like chunk that is not ``bytes`` (so ``len`` counts bytes)."""
    try:
        view = memoryview(chunk)  # type: ignore[arg-type]  # anything else is refused below
        return view if view.format == "B" and view.ndim == 1 else view.cast("B")
    except TypeError:
        raise InvalidValue(f"blob chunks must be bytes-like, got {type(chunk).__name__}") from None


def _write_all(fd: int, data: bytes | memoryview, done: int) -> None:
    """Finish a short ``os.write`` (rare on regular files; happens above ~2 GiB per call on Linux)."""
    view = memoryview(data)
    end = len(view)
    while done < end:
        written = os.write(fd, view[done:])
        if not written:
            # A regular file that accepts nothing would loop forever; report it as a full disk.
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        done += written


class FilesystemBlobBackend(BlobBackend):
    """Content-addressed blobs in a local folder; folders 0700, files 0600 whatever the umask."""

    def __init__(self, root: Path, *, chunk_size: int = 1 << 20) -> None:
        if chunk_size < 1:
            raise InvalidValue(f"chunk_size must be positive, got {chunk_size}")
        self.root = Path(root)
        self.chunk_size = chunk_size
        self.name = f"filesystem:{root}"
        self._root = str(self.root)
        self._staging = os.path.join(self._root, STAGING)
        self._staging_ready = False

    # -- paths -----------------------------------------------------------------------------------------

    def _content_path(self, sha256: str) -> str:
        sha256 = check_sha256(sha256)
        return os.path.join(self._root, sha256[:2], sha256)

    def _error(self, exc: OSError, action: str, path: str) -> StorageError:
        return storage_error(exc, action, path, store=self.name)

    def _temp_path(self, staged: StagedBlob) -> str:
        """The staged temp file, refusing tokens that point anywhere but our staging folder."""
        token = staged.token
        if (
            type(token) is not str
            or os.path.dirname(token) != self._staging
            or _TEMP_NAME.fullmatch(os.path.basename(token)) is None
        ):
            raise InvalidValue(f"staged blob token {token!r} was not issued by {self.name}")
        return token

    def _new_temp(self) -> tuple[str, int]:
        """Create a uniquely named 0600 temp file in ``.staging``; return its path and a write fd."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY
        for attempt in (1, 2):
            path = os.path.join(self._staging, f"{os.getpid()}-{secrets.token_hex(8)}.tmp")
            try:
                if not self._staging_ready:
                    make_private_dirs(Path(self._staging))
                    self._staging_ready = True
                fd = os.open(path, flags, FILE_MODE)
            except FileNotFoundError as exc:
                # Someone removed the staging folder since we created it: create it again, once.
                self._staging_ready = False
                if attempt == 2:
                    raise storage_error(exc, "create staging file", path, store=self.name) from exc
                continue
            except OSError as exc:
                raise storage_error(exc, "create staging file", path, store=self.name) from exc
            try:
                # The umask may have narrowed the mode given to open(); make it exactly 0600.
                os.fchmod(fd, FILE_MODE)
            except OSError as exc:
                os.close(fd)
                _unlink_quietly(path)
                raise storage_error(exc, "set the mode of staging file", path, store=self.name) from exc
            return path, fd
        raise AssertionError("unreachable")  # pragma: no cover

    # -- writing ---------------------------------------------------------------------------------------

    def stage(self, chunks: Iterable[bytes]) -> StagedBlob:
        temp, fd = self._new_temp()
        hasher = hashlib.sha256()
        try:
            update = hasher.update
            write = os.write
            size = 0
            # Exceptions from the iterator itself leave this loop untranslated; only our own OS calls
            # are wrapped (a try block costs nothing per iteration on 3.11+).
            for chunk in chunks:
                data = chunk if type(chunk) is bytes else _byte_view(chunk)
                n = len(data)
                if not n:
                    continue
                update(data)
                try:
                    done = write(fd, data)
                    if done != n:
                        _write_all(fd, data, done)
                except OSError as exc:
                    raise storage_error(exc, "write staging file", temp, store=self.name) from exc
                size += n
            try:
                os.fsync(fd)
            except OSError as exc:
                raise storage_error(exc, "fsync staging file", temp, store=self.name) from exc
        except BaseException:
            _close_quietly(fd)
            _unlink_quietly(temp)
            raise
        try:
            os.close(fd)
        except OSError as exc:
            _unlink_quietly(temp)
            raise storage_error(exc, "close staging file", temp, store=self.name) from exc
        return StagedBlob(sha256=hasher.hexdigest(), size=size, token=temp)

    def publish(self, staged: StagedBlob) -> None:
        final = self._content_path(staged.sha256)
        temp = self._temp_path(staged)
        if os.path.exists(final):
            return
        shard = os.path.dirname(final)
        try:
            # Creating the shard fsyncs the root too, so the new folder's name is durable.
            make_private_dirs(Path(shard))
        except OSError as exc:
            raise storage_error(exc, "create blob folder", shard, store=self.name) from exc
        try:
            self._link_or_copy(temp, final)
        except StorageError:
            raise
        except OSError as exc:
            raise storage_error(exc, "publish blob", final, store=self.name) from exc
        try:
            fsync_dir(shard)
        except OSError as exc:
            raise storage_error(exc, "fsync blob folder", shard, store=self.name) from exc

    def _link_or_copy(self, temp: str, final: str) -> None:
        """Give ``final`` the temp file's bytes atomically, keeping the temp file for a later re-publish."""
        try:
            os.link(temp, final)
            return
        except FileExistsError:
            return  # a concurrent writer published the same content
        except FileNotFoundError:
            if not os.path.exists(temp):
                raise StorageError(
                    f"cannot publish blob {os.path.basename(final)} in {self.name}: its staging file {temp} "
                    "is gone (discarded, or removed as stale); stage the content again"
                ) from None
            # The shard folder vanished between creation and link: recreate it once.
            make_private_dirs(Path(os.path.dirname(final)))
            try:
                os.link(temp, final)
                return
            except FileExistsError:
                return
        except OSError as exc:
            if exc.errno not in _NO_HARDLINK:
                raise
        self._copy_into_place(temp, final)

    def _copy_into_place(self, temp: str, final: str) -> None:
        """Fallback without hard links: copy to a second temp file, fsync, then rename over ``final``."""
        copy, fd = self._new_temp()
        try:
            with open(temp, "rb", buffering=0) as src:
                buf = bytearray(self.chunk_size)
                view = memoryview(buf)
                readinto = src.readinto
                while n := readinto(buf):
                    done = os.write(fd, view[:n])
                    if done != n:
                        _write_all(fd, view[:n], done)
            os.fsync(fd)
            os.close(fd)
            fd = -1
            # Same content under the same name, so replacing a concurrent publisher's file is harmless.
            os.replace(copy, final)
        except BaseException:
            if fd != -1:
                _close_quietly(fd)
            _unlink_quietly(copy)
            raise

    def discard(self, staged: StagedBlob) -> None:
        remove_file(self._temp_path(staged), self._error)

    # -- reading and housekeeping ----------------------------------------------------------------------

    def exists(self, sha256: str) -> bool:
        path = self._content_path(sha256)
        try:
            return stat_mod.S_ISREG(os.stat(path).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise storage_error(exc, "look up blob", path, store=self.name) from exc

    def open(self, sha256: str) -> BinaryIO:
        path = self._content_path(sha256)
        try:
            return open(path, "rb", buffering=self.chunk_size)  # the caller closes it
        except (FileNotFoundError, NotADirectoryError):
            raise BlobMissing(f"blob {sha256} is not stored in {self.name}") from None
        except OSError as exc:
            raise storage_error(exc, "open blob", path, store=self.name) from exc

    def delete(self, sha256: str) -> bool:
        path = self._content_path(sha256)
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise storage_error(exc, "delete blob", path, store=self.name) from exc
        return True

    def stat(self, sha256: str) -> BlobStat | None:
        path = self._content_path(sha256)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise storage_error(exc, "stat blob", path, store=self.name) from exc
        if not stat_mod.S_ISREG(st.st_mode):
            return None
        return BlobStat(sha256, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def iter_blobs(self) -> Iterator[BlobStat]:
        for shard_name, shard_path in self._list_dirs(self._root):
            if _SHARD.fullmatch(shard_name) is None:
                continue  # .staging and anything that is not ours
            try:
                with os.scandir(shard_path) as it:
                    # Collect per shard so no folder handle stays open while the caller works.
                    entries = [e for e in it if _SHA256.fullmatch(e.name) and e.name.startswith(shard_name)]
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                raise storage_error(exc, "list blob folder", shard_path, store=self.name) from exc
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted since listed
                except OSError as exc:
                    raise storage_error(exc, "stat blob", entry.path, store=self.name) from exc
                if stat_mod.S_ISREG(st.st_mode):
                    yield BlobStat(entry.name, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def _list_dirs(self, path: str) -> list[tuple[str, str]]:
        try:
            with os.scandir(path) as it:
                return [(e.name, e.path) for e in it if e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise storage_error(exc, "list blob folder", path, store=self.name) from exc

    def remove_stale_staging(self, older_than: datetime) -> int:
        return remove_stale_files(self._staging, older_than, self._error)

    def close(self) -> None:
        """Nothing is held open between calls."""


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
