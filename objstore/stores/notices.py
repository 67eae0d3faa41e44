"""The engine's notices of what it did (an object evicted, a secret written), appended to the event log in
batches by a background thread.

Each notice is about an action that has already committed, so it is written best-effort after the fact
either way; writing one per action cost an evicting put a second durable commit (in the server database,
another file by default), which was half of its time. Now notices wait up to ``delay`` seconds and a batch
commits once. They keep their order and their time (taken when the action happened). A process that
reads the event log first writes what it has pending (:meth:`NoticeWriter.flush`), as does ``close()``;
a process that dies without closing loses at most the last ``delay`` of notices, as a crash between the
action and its notice always could.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections.abc import Mapping
from typing import Any

from objstore.errors import ObjStoreError
from objstore.stores.events import EventStore

__all__ = ["NoticeWriter"]

_log = logging.getLogger("objstore.events")
_writers: weakref.WeakSet[NoticeWriter] = weakref.WeakSet()


class NoticeWriter:
    """An ``EventSink`` that batches: call it like ``EventStore.emit_quietly``."""

    def __init__(self, events: EventStore, *, delay: float = 0.05) -> None:
        self.events = events
        self.delay = delay
        self._reset()
        _writers.add(self)

    def _reset(self) -> None:
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()  # guards _pending, _thread and the setting of _stop
        self._flushing = threading.Lock()  # one batch at a time: ids follow the order of the notices
        self._wake = threading.Event()
        self._stop = threading.Event()  # set by close(): no thread from then on
        self._thread: threading.Thread | None = None

    def __call__(
        self,
        kind: str,
        details: Mapping[str, Any],
        *,
        namespace: str | None = None,
        pipeline: str | None = None,
        run: int | None = None,
    ) -> None:
        try:
            params = self.events.row(kind, details, namespace, pipeline, run)
        except ObjStoreError as error:
            _log.warning("could not record event %s: %s", kind, error)
            return
        with self._lock:
            self._pending.append(params)
            closed = self._stop.is_set()
            if not closed and self._thread is None:
                self._thread = threading.Thread(target=self._run, name="objstore-notices", daemon=True)
                self._thread.start()
        if closed:
            self.flush()  # no thread any more: write it now
        else:
            self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._stop.wait(self.delay)  # gather what the next moments add: one commit for all of it
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Write every pending notice now, in one transaction (a failure is logged, never raised)."""
        with self._flushing:
            with self._lock:
                batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                self.events.append_all(batch)
            except ObjStoreError as error:
                _log.warning("could not record %d events: %s", len(batch), error)

    def close(self) -> None:
        """Write what is pending and stop the thread; closing twice is harmless."""
        with self._lock:
            self._stop.set()
            thread, self._thread = self._thread, None
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self.flush()

    def _after_fork(self) -> None:
        # The parent writes its own pending notices; the child starts empty, without the parent's thread.
        self._reset()


def _flush_all_at_exit() -> None:
    for writer in list(_writers):
        writer.flush()


def _forget_after_fork() -> None:
    for writer in list(_writers):
        writer._after_fork()


atexit.register(_flush_all_at_exit)
os.register_at_fork(after_in_child=_forget_after_fork)
