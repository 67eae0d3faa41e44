"""A raw, streaming, file-like reader over one S3 object, resuming after transient network errors.

Bytes are pulled from obstore's response stream in chunks of about ``chunk_size`` (1 MiB; obstore joins
what the connection delivers until it has at least that much, so a chunk may be somewhat larger). If the
connection breaks part-way, the reader asks again for the rest (a ranged GET from the last byte received,
``If-Match`` the ETag it started with, so it never splices two versions of an object) under the backend's
retry policy. It does not verify anything: wrap it in :class:`objstore.blobs.verify.VerifiedReader`.

Reading ahead: obstore's stream only pulls from the connection when asked for the next chunk, so a
consumer that hashes each chunk (as ``VerifiedReader`` does) would leave the network idle while it
hashes. With ``read_ahead=n`` a background thread pulls up to ``n`` chunks ahead of the consumer (obstore
and hashlib both release the GIL while they work, so the download and the hash proceed together). Memory
stays bounded: at most ``n`` chunks wait in the queue, plus the one the thread is receiving and the one
the consumer is reading. Closing the reader (or dropping it) stops the thread: at once if it waits for
room in the queue or between retries, else as soon as the chunk it is receiving arrives (the backend's
read timeout bounds that wait); the thread then drops obstore's stream, which releases the connection.
Errors met by the thread reach the consumer after the chunks received before them, as they would
without the thread.
"""

from __future__ import annotations

import io
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from obstore.exceptions import BaseError

from objstore.blobs.s3_retry import Retrier, classify
from objstore.errors import ObjStoreError

__all__ = ["THREAD_NAME", "S3Reader"]

# fetch(offset) -> the response body from ``offset`` to the end, as a stream of bytes chunks.
Fetch = Callable[[int], Iterator[bytes]]

#: The name of read-ahead threads (the tests look for leftovers by it).
THREAD_NAME = "objstore-s3-read-ahead"


class _Source:
    """The object's chunks in order, from obstore's stream, resumed after transient network errors.

    Used by one thread at a time: the consumer's, or the read-ahead thread's once that has started.
    """

    def __init__(
        self,
        stream: Iterator[bytes],
        *,
        size: int,
        fetch: Fetch,
        retrier: Retrier,
        what: str,
    ) -> None:
        self._stream: Iterator[bytes] | None = stream
        self._size = size
        self._fetch = fetch
        self._retrier = retrier
        self._what = what
        self.received = 0  # bytes pulled from the server so far: where a resumed request starts
        # Waits between retries; returns False if the reader was closed meanwhile (read-ahead thread).
        self.pause: Callable[[float], bool] = self.sleep

    def sleep(self, seconds: float) -> bool:
        self._retrier.sleep(seconds)
        return True

    def next(self) -> bytes | None:
        """The next non-empty chunk; None at the end of the object."""
        retry = 0
        while self._stream is not None:
            try:
                chunk = next(self._stream)
            except StopIteration:
                self._stream = None
                break
            except ObjStoreError:
                raise
            except (BaseError, OSError) as exc:
                if self.received >= self._size:
                    self._stream = None  # every byte arrived; what follows is verified by the consumer
                    break
                failure = classify(exc)
                policy = self._retrier.policy
                if failure.kind != "transient" or retry >= policy.max_retries:
                    raise self._retrier.failure_error(f"read {self._what}", exc, retry + 1) from None
                retry += 1
                if not self.pause(policy.wait(retry, self._retrier.rng)):
                    self._stream = None  # closed meanwhile: nobody wants the rest
                    break
                # The ranged request is itself retried; its failure ends the read with a StorageError.
                self._stream = self._fetch(self.received)
                continue
            if chunk:
                self.received += len(chunk)
                return chunk
        return None

    def close(self) -> None:
        self._stream = None  # dropping obstore's stream releases the connection


class _ReadAhead:
    """Runs a :class:`_Source` in a daemon thread, at most ``depth`` chunks ahead of the consumer.

    The thread holds no reference to the reader, so a reader dropped without ``close`` is still
    collected, and its ``close`` (from ``IOBase.__del__``) stops the thread.
    """

    def __init__(self, source: _Source, depth: int) -> None:
        self._source = source
        self._depth = depth
        self._cond = threading.Condition(threading.Lock())
        self._chunks: deque[bytes] = deque()
        self._held = 0  # bytes in _chunks
        self._ended = False  # the source is exhausted, or failed (then _error is set)
        self._error: BaseException | None = None
        self._stopped = False  # the consumer closed the reader
        self._wake = threading.Event()  # set on stop: cuts a wait between retries short
        self.thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        source.pause = self._pause
        try:
            self.thread.start()
        except BaseException:
            source.pause = source.sleep
            raise

    @property
    def held(self) -> int:
        """Bytes received and waiting for the consumer."""
        return self._held

    def _pause(self, seconds: float) -> bool:
        return not self._wake.wait(seconds)

    def _run(self) -> None:
        source = self._source
        cond = self._cond
        try:
            while True:
                with cond:
                    while len(self._chunks) >= self._depth and not self._stopped:
                        cond.wait()
                    if self._stopped:
                        return
                chunk = source.next()  # obstore releases the GIL while it waits for the network
                with cond:
                    if chunk is None:
                        self._ended = True
                    elif not self._stopped:
                        self._chunks.append(chunk)
                        self._held += len(chunk)
                    cond.notify_all()
                if chunk is None:
                    return
        except BaseException as exc:  # handed to the consumer, which raises it in its own thread
            with cond:
                self._error = exc
                self._ended = True
                cond.notify_all()
        finally:
            source.close()

    def take(self) -> bytes | None:
        """The next chunk (waiting for it); None at the end; raises what the thread met."""
        cond = self._cond
        with cond:
            while not self._chunks and not self._ended:
                cond.wait()
            if self._chunks:
                chunk = self._chunks.popleft()
                self._held -= len(chunk)
                if len(self._chunks) == self._depth - 1:
                    cond.notify_all()  # there is room again
                return chunk
            if self._error is not None:
                raise self._error
            return None

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._chunks.clear()
            self._held = 0
            self._cond.notify_all()
        self._wake.set()


class S3Reader(io.RawIOBase):
    """Non-seekable raw reader; ``read(n)`` may return fewer than ``n`` bytes (one chunk at a time).

    ``read_ahead``: how many chunks a background thread may receive ahead of the consumer (0: none, the
    consumer's own thread pulls each chunk when it needs it). The thread starts at the first read; if no
    thread can be started, the consumer's thread reads.
    """

    def __init__(
        self,
        stream: Iterator[bytes],
        *,
        size: int,
        fetch: Fetch,
        retrier: Retrier,
        what: str,
        read_ahead: int = 0,
    ) -> None:
        super().__init__()
        self._source: _Source | None = _Source(stream, size=size, fetch=fetch, retrier=retrier, what=what)
        self._size = size
        self._what = what
        self._read_ahead = read_ahead
        self._ahead: _ReadAhead | None = None
        self._chunk = b""
        self._offset = 0  # into _chunk
        self._pos = 0  # bytes handed to the caller so far

    @property
    def size(self) -> int:
        """The object's size as reported when it was opened."""
        return self._size

    @property
    def buffered(self) -> int:
        """Bytes received but not read yet: the rest of the current chunk and the read-ahead queue."""
        held = self._ahead.held if self._ahead is not None else 0
        return len(self._chunk) - self._offset + held

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def _next_chunk(self) -> bytes | None:
        if self._ahead is not None:
            return self._ahead.take()
        source = self._source
        if source is None:
            return None
        if self._read_ahead > 0:
            try:
                self._ahead = _ReadAhead(source, self._read_ahead)
            except RuntimeError:  # no thread to be had (a process limit): read in this one instead
                self._read_ahead = 0
            else:
                self._source = None  # the thread owns it from now on
                return self._ahead.take()
        chunk = source.next()
        if chunk is None:
            self._source = None
        return chunk

    def _fill(self) -> bool:
        """Make ``_chunk[_offset:]`` non-empty; False at the end of the object."""
        if self._offset < len(self._chunk):
            return True
        if self.closed:
            raise ValueError(f"I/O operation on closed reader of {self._what}")
        chunk = self._next_chunk()
        self._chunk = chunk or b""
        self._offset = 0
        return chunk is not None

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        if size == 0 or not self._fill():
            return b""
        start = self._offset
        end = min(start + size, len(self._chunk))
        # A whole chunk goes out as is (no copy); a part of one is sliced.
        data = self._chunk if start == 0 and end == len(self._chunk) else self._chunk[start:end]
        self._offset = end
        self._pos += end - start
        return data

    def readall(self) -> bytes:
        parts = []
        while self._fill():
            parts.append(self.read(len(self._chunk) - self._offset))
        return b"".join(parts)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if not len(view) or not self._fill():
            return 0
        start = self._offset
        n = min(len(view), len(self._chunk) - start)
        view[:n] = memoryview(self._chunk)[start : start + n]
        self._offset = start + n
        self._pos += n
        return n

    def close(self) -> None:
        if not self.closed:
            if self._ahead is not None:
                self._ahead.stop()  # the thread drops obstore's stream when it sees this
            elif self._source is not None:
                self._source.close()
            self._source = None
            self._chunk = b""
        super().close()
