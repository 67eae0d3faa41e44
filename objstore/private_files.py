"""Create folders 0700 and files 0600 whatever the umask: databases and blobs are private to their owner."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ensure_private_dir", "ensure_private_file"]

DIR_MODE = 0o700
FILE_MODE = 0o600


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` and any missing parents with mode 0700; folders that already exist are left alone."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # another process made it first; it chose its own mode, as we would have
        os.chmod(folder, DIR_MODE)  # mkdir's mode is filtered by the umask


def ensure_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist (its folder 0700 if missing)."""
    if path.exists():
        return
    ensure_private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
