"""Small filesystem helpers for blob backends: private folders, folder fsync, OS error translation."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from objstore.errors import InvalidValue, StorageError

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "check_sha256",
    "fsync_dir",
    "make_private_dirs",
    "storage_error",
]

DIR_MODE = 0o700
FILE_MODE = 0o600

_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_sha256(value: object) -> str:
    """Return ``value`` if it is a content address (64 lower-case hex characters), else raise InvalidValue.

    Checked before any path is built from it, so a bad address can never walk out of the store.
    """
    if type(value) is not str or _SHA256.fullmatch(value) is None:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        raise InvalidValue(f"invalid sha256 address {shown}: expected 64 lower-case hex characters")
    return value


def fsync_dir(path: Path | str) -> None:
    """Make the entries of a folder (new, renamed or linked names) durable."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(path, flags)
    except PermissionError:
        # Platforms that cannot open a folder (Windows) have no folder fsync; nothing more to do there.
        if os.name == "nt":
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some filesystems refuse fsync on folders; their metadata is then as durable as it gets.
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def make_private_dirs(path: Path) -> bool:
    """Create ``path`` and missing parents with mode 0700; True if ``path`` itself was created.

    Only folders created here are chmod-ed (umask may have narrowed the mode); pre-existing folders are
    left alone. The parent of each new folder is fsync-ed so that the new name survives a crash.
    """
    missing: list[Path] = []
    probe = path
    while not probe.is_dir():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    created_target = False
    for folder in reversed(missing):
        try:
            os.mkdir(folder, DIR_MODE)
        except FileExistsError:
            # Created concurrently by another writer: not ours to chmod.
            if not folder.is_dir():
                raise
            continue
        os.chmod(folder, DIR_MODE)
        fsync_dir(folder.parent)
        if folder == path:
            created_target = True
    return created_target


def storage_error(exc: OSError, action: str, path: Path | str, *, store: str) -> StorageError:
    """Translate an OSError into a StorageError naming the path, the errno meaning and what to do.

    ``action`` completes "cannot ..." (e.g. "write staging file"); ``store`` names the backend.
    """
    code = exc.errno
    if code is not None:
        meaning = f"{errno.errorcode.get(code, f'errno {code}')}: {exc.strerror or os.strerror(code)}"
    else:
        meaning = str(exc) or type(exc).__name__
    advice: str
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        advice = (
            "the disk is full; free space on that filesystem or move the `blobs` path "
            "(blobs.stores path in the config) to a larger disk"
        )
    elif code in (errno.EACCES, errno.EPERM):
        advice = "permission denied; check the owner and mode of the blob folder (objstore uses 0700/0600)"
    elif code == errno.EROFS:
        advice = "the filesystem is read-only; remount it read-write or move the `blobs` path"
    elif code == errno.EIO:
        advice = "the disk reported an I/O error; check the device and run `objstore check` afterwards"
    else:
        advice = "check the blob folder and the filesystem holding it"
    err = StorageError(f"cannot {action} {path} in {store} ({meaning}): {advice}")
    # Keep the errno machine-readable for callers that branch on it (StorageError is an OSError).
    err.errno = code
    return err
