"""Task execution logs: one append-only file per task of a run, and their expiry by run number.

Layout under ``api.task_execution_logs_dir``: ``<namespace>/<pipeline>/<run>/<task>.log``, and beside it
``<task>.done`` once the task has finished (written after the log is fsynced), so a reader can tell
"still running" from "done" and knows the final size.

Expiry races with writers without locks: a writer creates its file *first* and only then checks that the
run has not expired (and removes the file again if it has); expiry publishes the new latest run *first*
(in the server database) and only then removes folders. Either the writer sees the expiry, or its file
existed before the removal began and is removed with the rest. A write into a file that expiry removed
meanwhile is detected (the file has no name left) and raises ``RunExpired``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType

from objstore.blobs.fsutil import storage_error
from objstore.clock import Clock
from objstore.errors import InvalidValue, RunExpired, StorageError, TaskLogNotFound
from objstore.masking import Masker
from objstore.private_files import FILE_MODE, fsync_dir, make_private_dirs
from objstore.stores.batches import Checkpoint, no_checkpoint
from objstore.timestamps import to_micros

__all__ = ["TaskLog", "TaskLogStore"]

LOG_SUFFIX = ".log"
DONE_SUFFIX = ".done"
_SETTING = "api.task_execution_logs_dir"

# The latest run number of a pipeline (0 if none), from the runs database.
LatestRun = Callable[[str, str], int]


def _error(exc: OSError, action: str, path: Path) -> StorageError:
    return storage_error(
        exc, action, path, store="the task log folder", folder="task log folder", setting=_SETTING
    )


class TaskLogStore:
    """The task log files of every pipeline, under one folder."""

    def __init__(self, root: Path, *, expiry: int, latest_run: LatestRun, clock: Clock) -> None:
        self.root = root
        self.expiry = expiry
        self.latest_run = latest_run
        self.clock = clock

    def pipeline_dir(self, namespace: str, pipeline: str) -> Path:
        return self.root / namespace / pipeline

    def log(
        self, namespace: str, pipeline: str, run: int, task: str, *, masker: Masker | None = None
    ) -> TaskLog:
        """The handle of one task's log (names already validated); nothing is created until a write."""
        return TaskLog(self, namespace, pipeline, run, task, masker=masker)

    def tasks(self, namespace: str, pipeline: str, run: int) -> list[str]:
        """The tasks of a run that have a log, sorted."""
        folder = self.pipeline_dir(namespace, pipeline) / str(run)
        return sorted(name[: -len(LOG_SUFFIX)] for name in _listdir(folder) if name.endswith(LOG_SUFFIX))

    def expired_through(self, namespace: str, pipeline: str, latest: int | None = None) -> int:
        """Logs of runs numbered up to this are expired."""
        last = self.latest_run(namespace, pipeline) if latest is None else latest
        return max(last - self.expiry, 0)

    def expire(
        self,
        namespace: str,
        pipeline: str,
        latest: int,
        *,
        dry_run: bool = False,
        checkpoint: Checkpoint = no_checkpoint,
    ) -> int:
        """Remove the logs of every run numbered ``latest - expiry`` or lower; how many task logs.
        ``checkpoint`` runs before each run's folder."""
        through = self.expired_through(namespace, pipeline, latest)
        if through < 1:
            return 0
        removed = 0
        for run, folder in self._run_dirs(namespace, pipeline):
            if run > through:
                continue
            checkpoint()
            removed += sum(1 for name in _listdir(folder) if name.endswith(LOG_SUFFIX))
            if not dry_run:
                _remove_tree(folder)
        return removed

    def sweep(
        self,
        pipelines: Iterable[tuple[str, str, int]],
        *,
        dry_run: bool = False,
        checkpoint: Checkpoint = no_checkpoint,
    ) -> dict[tuple[str, str], int]:
        """Expire the logs of every pipeline given as (namespace, pipeline, latest run); removed per
        pipeline (only those with something removed)."""
        removed: dict[tuple[str, str], int] = {}
        for namespace, pipeline, latest in pipelines:
            count = self.expire(namespace, pipeline, latest, dry_run=dry_run, checkpoint=checkpoint)
            if count:
                removed[(namespace, pipeline)] = count
        return removed

    def usage(self) -> tuple[int, int]:
        """How many task logs there are and how many bytes they take."""
        count = size = 0
        if not self.root.is_dir():
            return 0, 0
        for folder, _, files in os.walk(self.root):
            for name in files:
                if name.endswith(LOG_SUFFIX):
                    count += 1
                    with contextlib.suppress(FileNotFoundError):  # expired while we looked
                        size += os.stat(os.path.join(folder, name)).st_size
        return count, size

    def _run_dirs(self, namespace: str, pipeline: str) -> Iterator[tuple[int, Path]]:
        folder = self.pipeline_dir(namespace, pipeline)
        for name in _listdir(folder):
            if name.isdigit():
                yield int(name), folder / name


def _listdir(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise _error(exc, "list", folder) from exc


def _remove_tree(folder: Path) -> None:
    try:
        shutil.rmtree(folder)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise _error(exc, "remove", folder) from exc


class TaskLog:
    """The execution log of one task of one run: append with :meth:`write`, read whole or streamed.

    One handle may be shared by threads. Used as a context manager, it finishes the log on exit.
    Writes are not fsynced one by one (a log is written in many small pieces); :meth:`finish` makes the
    whole log durable before marking it done.
    """

    def __init__(
        self,
        store: TaskLogStore,
        namespace: str,
        pipeline: str,
        run: int,
        task: str,
        *,
        masker: Masker | None = None,
    ) -> None:
        self._store = store
        self.namespace = namespace
        self.pipeline = pipeline
        self.run = run
        self.task = task
        folder = store.pipeline_dir(namespace, pipeline) / str(run)
        self.path = folder / f"{task}{LOG_SUFFIX}"
        self._done_path = folder / f"{task}{DONE_SUFFIX}"
        self._masker = masker.stream() if masker is not None else None
        self._fd: int | None = None
        self._lock = threading.Lock()

    # -- writing ----------------------------------------------------------------------------------------

    def write(self, data: str | bytes) -> int:
        """Append ``data`` (str is written as UTF-8); how many bytes were given.

        With secret masking on, secret values are replaced by ``****`` (a value split across two writes
        included, so up to the longest value's length is held back until the next write or ``finish``).
        Raises ``RunExpired`` when the run's logs have expired, ``InvalidValue`` once finished.
        """
        if isinstance(data, str):
            raw = data.encode("utf-8", "surrogateescape")
        elif isinstance(data, bytes | bytearray | memoryview):
            raw = bytes(data)
        else:
            raise InvalidValue(f"a task log takes str or bytes, not {type(data).__name__}")
        with self._lock:
            fd = self._open_for_append()
            out = self._masker.feed(raw) if self._masker is not None else raw
            self._write_all(fd, out)
        return len(raw)

    def finish(self) -> None:
        """Mark the log done (after making it durable); finishing twice is harmless."""
        with self._lock:
            if self._done_path.exists():
                self._close()
                return
            fd = self._open_for_append()
            if self._masker is not None:
                self._write_all(fd, self._masker.flush())
            try:
                os.fsync(fd)
                size = os.fstat(fd).st_size
            except OSError as exc:
                raise _error(exc, "fsync", self.path) from exc
            self._close()
            marker = {"finished_at": to_micros(self._store.clock.now()), "size": size}
            temp = self._done_path.with_name(f".{self._done_path.name}.{os.getpid()}.tmp")
            try:
                with open(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE), "w") as out:
                    json.dump(marker, out)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temp, self._done_path)
                fsync_dir(self._done_path.parent)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise _error(exc, "mark finished", self._done_path) from exc

    def close(self) -> None:
        """Close the file without finishing the log (another handle may finish it)."""
        with self._lock:
            self._close()

    def _open_for_append(self) -> int:
        if self._fd is not None:
            return self._fd
        if self._done_path.exists():
            raise InvalidValue(f"{self._what()} is finished; write to a new task's log instead")
        try:
            make_private_dirs(self.path.parent)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        except OSError as exc:
            raise _error(exc, "open", self.path) from exc
        # Created first, checked second: see the module docstring.
        if self.run <= self._store.expired_through(self.namespace, self.pipeline):
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            with contextlib.suppress(OSError):
                os.rmdir(self.path.parent)
            raise self._expired()
        self._fd = fd
        return fd

    def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view) :]
            linked = os.fstat(fd).st_nlink
        except OSError as exc:
            raise _error(exc, "write", self.path) from exc
        if linked == 0:  # expiry removed the file while we held it open
            self._close()
            raise self._expired()

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- reading ----------------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """True once the task's log is complete (``finish`` was called)."""
        return self._done_path.exists()

    def exists(self) -> bool:
        """True if anything was written to this log (and it has not expired)."""
        return self.path.exists()

    def size(self) -> int:
        """Bytes written so far. Raises ``TaskLogNotFound``."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            raise self._not_found() from None
        except OSError as exc:
            raise _error(exc, "read", self.path) from exc

    def read(self) -> bytes:
        """The whole log as written so far. Raises ``TaskLogNotFound``."""
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            raise self._not_found() from None
        except OSError as exc:
            raise _error(exc, "read", self.path) from exc

    def stream(
        self,
        *,
        follow: bool = False,
        poll_interval: float = 0.2,
        timeout: float | None = None,
        chunk_size: int = 65536,
    ) -> Iterator[bytes]:
        """The log in chunks. With ``follow``, keep waiting for new bytes until the log is finished
        (or ``timeout`` seconds pass without it finishing, which ends the stream quietly).

        Raises ``TaskLogNotFound`` if the log does not exist (and, following, does not appear in time).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        handle = self._open_for_reading(follow, poll_interval, deadline)
        with handle:
            while True:
                chunk = handle.read(chunk_size)
                if chunk:
                    yield chunk
                    continue
                if not follow or self._complete(handle.tell()):
                    return
                if deadline is not None and time.monotonic() >= deadline:
                    return
                time.sleep(poll_interval)

    def _open_for_reading(self, follow: bool, poll: float, deadline: float | None) -> io.BufferedReader:
        while True:
            try:
                return open(self.path, "rb")
            except FileNotFoundError:
                if not follow or (deadline is not None and time.monotonic() >= deadline):
                    raise self._not_found() from None
                time.sleep(poll)
            except OSError as exc:
                raise _error(exc, "read", self.path) from exc

    def _complete(self, position: int) -> bool:
        try:
            marker = json.loads(self._done_path.read_text())
        except (FileNotFoundError, ValueError):
            return False
        return position >= int(marker.get("size", 0))

    # -- helpers ----------------------------------------------------------------------------------------

    def _what(self) -> str:
        return f"the log of task {self.task!r} in run {self.run} of pipeline {self.namespace}/{self.pipeline}"

    def _expired(self) -> RunExpired:
        return RunExpired(
            f"run {self.run} of pipeline {self.namespace}/{self.pipeline} has expired "
            f"(api.task_execution_log_expiry = {self._store.expiry}); its task logs are removed"
        )

    def _not_found(self) -> TaskLogNotFound:
        expired = self.run <= self._store.expired_through(self.namespace, self.pipeline)
        why = (
            f"; the run has expired (api.task_execution_log_expiry = {self._store.expiry})"
            if expired
            else "; nothing has been written to it"
        )
        return TaskLogNotFound(f"no {self._what()}{why}")

    def __enter__(self) -> TaskLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.finish()
            return
        # The task ended with an error: its log is still complete, but the error is what the caller sees.
        with contextlib.suppress(Exception):
            self.finish()

    def __repr__(self) -> str:
        return f"<TaskLog {self.namespace}/{self.pipeline} run {self.run} task {self.task}>"
