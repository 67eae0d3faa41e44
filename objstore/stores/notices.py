"""The engine's notices of what it did (an object evicted, a secret written), appended to the event log in
batches by a background thread.

Each notice is about an action that has already committed, so it is written best-effort after the fact
either way; writing one per action cost an evicting put a second durable commit (in the server database,
another file by default), which was half of its time. Now notices wait up to ``delay`` seconds and a batch
commits once. They keep their order and their time (taken when the action happened); evictions from one
pipeline that follow each other in a batch become one event listing their keys (see
:func:`_merge_key_lists`). A process that reads the event log first writes what it has pending
(:meth:`NoticeWriter.flush`), as does ``close()``; a process that dies without closing loses at most the
last ``delay`` of notices, as a crash between the action and its notice always could. The acting thread
never writes a batch itself: a put must not wait for the event log's database (a prune may hold it).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections.abc import Hashable, Mapping
from typing import Any

from objstore.errors import ObjStoreError
from objstore.stores.events import EventStore
from objstore.timestamps import to_micros

__all__ = ["MAX_MERGED_KEYS", "MERGED_KINDS", "NoticeWriter"]

_log = logging.getLogger("objstore.events")
# Notices whose details list "keys": those of one pipeline in one batch become one event (see flush).
MERGED_KINDS = frozenset({"object_evicted"})
MAX_MERGED_KEYS = 100  # keys are at most 255 characters: 100 stay well under the 64 KiB of details
# kind, details, namespace, pipeline, run, emitted at (microseconds)
_Notice = tuple[str, Mapping[str, Any], str | None, str | None, int | None, int]
_writers: weakref.WeakSet[NoticeWriter] = weakref.WeakSet()


class NoticeWriter:
    """An ``EventSink`` that batches: call it like ``EventStore.emit_quietly``."""

    def __init__(self, events: EventStore, *, delay: float = 0.05) -> None:
        self.events = events
        self.delay = delay
        self._reset()
        _writers.add(self)

    def _reset(self) -> None:
        self._pending: list[_Notice] = []
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
        # Only the time is taken here (``details`` must not change after the call); the row is made by the
        # thread that writes it, while this one (an evicting put) is back in the database driver.
        notice = (kind, details, namespace, pipeline, run, to_micros(self.events.clock.now()))
        with self._lock:
            first = not self._pending  # of a batch: only then does the thread need waking
            self._pending.append(notice)
            closed = self._stop.is_set()
            if not closed and self._thread is None:
                self._thread = threading.Thread(target=self._run, name="objstore-notices", daemon=True)
                self._thread.start()
        if closed:
            self.flush()  # no thread any more: write it now
        elif first:
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
            rows = []
            for kind, details, namespace, pipeline, run, at in _merge_key_lists(batch):
                try:
                    rows.append(self.events.row(kind, details, namespace, pipeline, run, at=at))
                except ObjStoreError as error:
                    _log.warning("could not record event %s: %s", kind, error)
            if not rows:
                return
            try:
                self.events.append_all(rows)
            except ObjStoreError as error:
                _log.warning("could not record %d events: %s", len(rows), error)

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


def _merge_group(notice: _Notice) -> Hashable | None:
    """What notices must share to merge (kind, pipeline, run, details but the keys); None: never merges."""
    kind, details, namespace, pipeline, run, _ = notice
    if kind not in MERGED_KINDS or not isinstance(details.get("keys"), list):
        return None
    try:
        return (kind, namespace, pipeline, run, frozenset(i for i in details.items() if i[0] != "keys"))
    except TypeError:  # a detail that cannot be compared cheaply: keep the notice as it is
        return None


def _merge_key_lists(batch: list[_Notice]) -> list[_Notice]:
    """The notices of a batch, where notices of a kind in ``MERGED_KINDS`` follow each other for the same
    pipeline (and run, and other details) merged into one that lists their keys in order, at the time of
    the first, with at most ``MAX_MERGED_KEYS`` keys. Only neighbours merge, so no event moves past
    another. A pipeline at its limit evicts on every put; an event per put would cost more than the put."""
    merged: list[_Notice] = []
    keys_of: dict[int, list[str]] = {}  # index in merged -> the keys gathered there
    previous: Hashable | None = None  # the merge group of the last notice in merged
    for notice in batch:
        group = _merge_group(notice)
        if group is not None:
            keys: list[str] = notice[1]["keys"]
            if group == previous and len(keys_of[len(merged) - 1]) + len(keys) <= MAX_MERGED_KEYS:
                keys_of[len(merged) - 1].extend(keys)  # the last notice has this group, so its keys
                continue
            keys_of[len(merged)] = list(keys)
        previous = group
        merged.append(notice)
    for index, keys in keys_of.items():
        kind, details, namespace, pipeline, run, at = merged[index]
        merged[index] = (kind, {**details, "keys": keys}, namespace, pipeline, run, at)
    return merged


def _flush_all_at_exit() -> None:
    for writer in list(_writers):
        writer.flush()


def _forget_after_fork() -> None:
    for writer in list(_writers):
        writer._after_fork()


atexit.register(_flush_all_at_exit)
os.register_at_fork(after_in_child=_forget_after_fork)
