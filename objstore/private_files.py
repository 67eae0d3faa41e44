"""Folders 0700 and files 0600 whatever the umask: databases and blobs are private to their owner.

New folders are made durable too (their parent is fsynced), so a name created before a crash is still
there after it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

__all__ = ["DIR_MODE", "FILE_MODE", "ensure_private_file", "fsync_dir", "make_private_dirs"]

DIR_MODE = 0o700
FILE_MODE = 0o600


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


def ensure_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist (its folder 0700 if missing)."""
    if path.exists():
        return
    make_private_dirs(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
