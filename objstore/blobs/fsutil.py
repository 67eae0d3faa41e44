"""Small filesystem helpers for blob backends: content addresses, OS error translation and removing
staged files (private folders and folder fsync come from ``objstore.private_files``, shared with the
databases)."""

from __future__ import annotations

import errno
import os
import re
import stat as stat_mod
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from objstore.errors import InvalidValue, StorageError
from objstore.private_files import DIR_MODE, FILE_MODE, fsync_dir, make_private_dirs

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "check_sha256",
    "fsync_dir",
    "make_private_dirs",
    "remove_file",
    "remove_stale_files",
    "storage_error",
]

# A backend's translation of an OSError: (error, action completing "cannot ...", path).
ErrorFor = Callable[[OSError, str, str], StorageError]

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


def storage_error(
    exc: OSError,
    action: str,
    path: Path | str,
    *,
    store: str,
    folder: str = "blob folder",
    setting: str = "`blobs` path (blobs.stores path in the config)",
) -> StorageError:
    """Translate an OSError into a StorageError naming the path, the errno meaning and what to do.

    ``action`` completes "cannot ..." (e.g. "write staging file"); ``store`` names the backend;
    ``folder`` and ``setting`` name, in the advice, what the user can check or move.
    """
    code = exc.errno
    if code is not None:
        meaning = f"{errno.errorcode.get(code, f'errno {code}')}: {exc.strerror or os.strerror(code)}"
    else:
        meaning = str(exc) or type(exc).__name__
    advice: str
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        advice = f"the disk is full; free space on that filesystem or move the {setting} to a larger disk"
    elif code in (errno.EACCES, errno.EPERM):
        advice = f"permission denied; check the owner and mode of the {folder} (objstore uses 0700/0600)"
    elif code == errno.EROFS:
        advice = f"the filesystem is read-only; remount it read-write or move the {setting}"
    elif code == errno.EIO:
        advice = "the disk reported an I/O error; check the device and run `objstore check` afterwards"
    else:
        advice = f"check the {folder} and the filesystem holding it"
    err = StorageError(f"cannot {action} {path} in {store} ({meaning}): {advice}")
    # Keep the errno machine-readable for callers that branch on it (StorageError is an OSError).
    err.errno = code
    return err


def remove_file(path: str, error: ErrorFor, *, what: str = "staging") -> None:
    """Remove ``path`` if it is still there (a staged file nobody will publish)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise error(exc, f"remove {what} file", path) from exc


def remove_stale_files(
    folder: Path | str,
    older_than: datetime,
    error: ErrorFor,
    *,
    what: str = "staging",
    name: re.Pattern[str] | None = None,
) -> int:
    """Remove the regular files directly in ``folder`` (only those whose name matches ``name``, if given)
    last modified before ``older_than`` (an aware datetime); how many were removed."""
    if older_than.tzinfo is None or older_than.utcoffset() is None:
        raise InvalidValue("remove_stale_staging needs an aware datetime (UTC)")
    cutoff = older_than.timestamp()
    try:
        with os.scandir(folder) as it:
            entries = [entry for entry in it if name is None or name.fullmatch(entry.name)]
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise error(exc, f"list {what} folder", str(folder)) from exc
    removed = 0
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat_mod.S_ISREG(st.st_mode) or st.st_mtime >= cutoff:
                continue
            os.unlink(entry.path)
        except FileNotFoundError:
            continue  # finished or cleaned up by another process meanwhile
        except OSError as exc:
            raise error(exc, f"remove {what} file", entry.path) from exc
        removed += 1
    return removed
