"""Talking to one blob server: keep-alive connections per thread, retries with backoff, resumable GETs.

Requests are retried on connection errors and 502/503/504: every request of the blob protocol is
idempotent (a content-addressed PUT, a DELETE of an address, reads). The token is only ever put in the
Authorization header: it is kept in an object whose repr hides it, and appears in no message or log.
"""

from __future__ import annotations

import io
import logging
import os
import random
import ssl
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from http.client import HTTPConnection, HTTPException, HTTPResponse, HTTPSConnection
from typing import Any, BinaryIO

from objstore.blobs.base import BlobMissing
from objstore.blobs.http_protocol import CHUNK, MARKER_HEADER
from objstore.errors import StorageError

__all__ = ["Answer", "Download", "Transport"]

_log = logging.getLogger("objstore.blobs.http")

_RETRY_STATUS = frozenset({502, 503, 504})
_KEEP_IDLE = 4  # idle connections kept per thread
_MAX_RETRY_AFTER = 30.0


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole (small) answer."""

    status: int
    headers: Message
    body: bytes


class _Hidden:
    """A secret whose repr does not show it (debuggers and crash reports print ``vars``)."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<hidden>"


class _Idle:
    """One thread's idle connections (an object, so that the pool can hold it weakly)."""

    __slots__ = ("__weakref__", "conns")

    def __init__(self) -> None:
        self.conns: list[HTTPConnection] = []

    def __del__(self) -> None:  # the thread ended: its connections go with it
        for conn in self.conns:
            conn.close()


class _Pool:
    """A few keep-alive connections per thread (http.client connections are not thread-safe)."""

    def __init__(self, connect: Any) -> None:
        self._connect = connect
        self._pid = os.getpid()
        self._local = threading.local()
        self._all: weakref.WeakSet[_Idle] = weakref.WeakSet()
        self._lock = threading.Lock()

    def _idle(self) -> list[HTTPConnection]:
        if self._pid != os.getpid():
            # A forked child must not talk on its parent's connections: start afresh in the child.
            self._pid, self._local, self._all = os.getpid(), threading.local(), weakref.WeakSet()
        idle: _Idle | None = getattr(self._local, "idle", None)
        if idle is None:
            idle = self._local.idle = _Idle()
            with self._lock:
                self._all.add(idle)
        return idle.conns

    def acquire(self) -> tuple[HTTPConnection, bool]:
        """A connection, and whether it was used before (so the server may have closed it meanwhile)."""
        idle = self._idle()
        if idle:
            return idle.pop(), True
        return self._connect(), False

    def release(self, conn: HTTPConnection) -> None:
        idle = self._idle()
        if len(idle) < _KEEP_IDLE:
            idle.append(conn)
        else:
            conn.close()

    def clear(self) -> None:
        idle = self._idle()
        while idle:
            idle.pop().close()

    def close_all(self) -> None:
        with self._lock:
            pools = list(self._all)
        for idle in pools:
            while idle.conns:
                idle.conns.pop().close()


class Transport:
    """Requests to the blob server ``name`` at ``hostname:port``; ``setting`` names it in messages."""

    def __init__(
        self,
        name: str,
        hostname: str,
        port: int | None,
        *,
        https: bool,
        ssl_context: ssl.SSLContext | None,
        token: str | None,
        timeout: float,
        max_retries: int,
        delay: float,
        jitter: float,
        setting: str,
    ) -> None:
        self.name, self.setting = name, setting
        self.max_retries, self._delay, self._jitter = max_retries, delay, jitter
        self._https = https
        self._authorization = None if token is None else _Hidden(f"Bearer {token}")
        if https:
            context = ssl_context or ssl.create_default_context()
            self._pool = _Pool(lambda: HTTPSConnection(hostname, port, timeout=timeout, context=context))
        else:
            self._pool = _Pool(lambda: HTTPConnection(hostname, port, timeout=timeout, blocksize=CHUNK))

    def call(self, method: str, path: str, *, body: BinaryIO | None = None, size: int = 0) -> Answer:
        """A request whose whole (small) answer is read within the retries."""
        response, conn, data = self._request(method, path, body=body, size=size)
        _release(response, conn, self._pool)
        return Answer(response.status, response.msg, data)

    def stream(
        self, path: str, headers: Mapping[str, str] | None = None
    ) -> tuple[HTTPResponse, HTTPConnection]:
        """A GET whose body is left to read; :func:`finish` the answer when done with it."""
        response, conn, _ = self._request("GET", path, headers=headers, stream=True)
        return response, conn

    def finish(self, response: HTTPResponse, conn: HTTPConnection) -> Answer:
        """Read the rest of a streamed answer; its connection goes back to the pool if it can."""
        try:
            data = response.read()
        except (OSError, HTTPException):
            conn.close()
            data = b""
        else:
            _release(response, conn, self._pool)
        return Answer(response.status, response.msg, data)

    def close(self) -> None:
        self._pool.close_all()

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: BinaryIO | None = None,
        size: int = 0,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
    ) -> tuple[HTTPResponse, HTTPConnection, bytes]:
        attempt = 0
        while True:
            conn, reused = self._pool.acquire()
            retry_after: str | None = None
            data = b""
            try:
                response = self._send(conn, method, path, body=body, size=size, headers=headers or {})
                if not stream and response.status not in _RETRY_STATUS:
                    data = response.read()
            except ssl.SSLCertVerificationError as exc:
                conn.close()
                raise StorageError(
                    f"cannot trust the certificate of {self.name} ({exc.verify_message}); check the "
                    f"server's certificate and {self.setting}.host"
                ) from None
            except (OSError, HTTPException) as exc:
                conn.close()
                if reused and not isinstance(exc, TimeoutError):
                    self._pool.clear()  # the server closed idle connections: retry at once on a new one
                    continue
                failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.getheader(MARKER_HEADER) is None and response.status not in _RETRY_STATUS:
                    conn.close()
                    raise StorageError(
                        f"{self.name} answered {method} {path} with {response.status} {response.reason} "
                        f"but is not an objstore blob server; check {self.setting}.host"
                    )
                if response.status not in _RETRY_STATUS:
                    return response, conn, data
                retry_after = response.getheader("Retry-After")
                self.finish(response, conn)
                failure = f"{response.status} {response.reason}"
            if attempt >= self.max_retries:
                raise StorageError(
                    f"cannot reach the blob server {self.name} for {method} {path} after {attempt + 1} "
                    f"attempts (last: {failure}); check that it runs and that {self.setting}.host is right"
                )
            wait = self.backoff(attempt, retry_after)
            _log.warning(
                "blob server %s: %s %s failed (%s); retry %d of %d in %.2f s",
                *(self.name, method, path, failure, attempt + 1, self.max_retries, wait),
            )
            time.sleep(wait)
            attempt += 1

    def _send(
        self,
        conn: HTTPConnection,
        method: str,
        path: str,
        *,
        body: BinaryIO | None,
        size: int,
        headers: Mapping[str, str],
    ) -> HTTPResponse:
        conn.putrequest(method, path, skip_accept_encoding=True)
        if self._authorization is not None:
            conn.putheader("Authorization", self._authorization.value)
        for name, value in headers.items():
            conn.putheader(name, value)
        if method == "PUT":
            conn.putheader("Content-Type", "application/octet-stream")
            conn.putheader("Content-Length", str(size))
        conn.endheaders()
        if body is not None and size:
            try:
                if conn.sock is not None and not self._https:
                    conn.sock.sendfile(body, 0, size)  # zero-copy from the staging file
                else:
                    body.seek(0)
                    while data := body.read(CHUNK):
                        conn.send(data)
            except OSError:
                # The server may have answered early (401, 413) and closed: its answer says more.
                try:
                    return conn.getresponse()
                except (OSError, HTTPException):
                    pass
                raise
        return conn.getresponse()

    def backoff(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds before retry ``attempt`` (0-based): ``2**attempt * delay * (1 ± jitter/2)``, at least the
        server's Retry-After (capped)."""
        wait = (2.0**attempt) * self._delay * (1 + self._jitter * (random.random() - 0.5))
        if retry_after is not None and retry_after.strip().isdigit():
            wait = max(wait, min(float(retry_after), _MAX_RETRY_AFTER))
        return wait


class Download(io.RawIOBase):
    """The body of a GET of blob ``sha256``; if the connection breaks, continues from where it stopped
    with ``Range: bytes=<pos>-`` requests (up to the transport's ``max_retries`` times)."""

    def __init__(
        self, transport: Transport, sha256: str, path: str, response: HTTPResponse, conn: HTTPConnection
    ) -> None:
        super().__init__()
        self._transport, self._sha256, self._path = transport, sha256, path
        self._response: HTTPResponse | None = response
        self._conn: HTTPConnection | None = conn
        self.size = int(response.getheader("Content-Length") or 0)
        self._pos = 0
        self._attempt = 0
        if not self.size:
            self._finish()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")[: self.size - self._pos]
        while self._response is not None and len(view):
            error: BaseException | None = None
            try:
                n = self._response.readinto(view)
            except (OSError, HTTPException) as exc:
                n, error = 0, exc
            if n:
                self._pos += n
                if self._pos == self.size:
                    self._finish()
                return n
            self._resume(error)
        return 0

    def readall(self) -> bytes:
        data = bytearray(self.size - self._pos)
        view, done = memoryview(data), 0
        while done < len(data) and (n := self.readinto(view[done:])):
            done += n
        return bytes(data[:done])

    def _resume(self, error: BaseException | None) -> None:
        transport = self._transport
        self._drop_connection()
        if self._attempt >= transport.max_retries:
            raise StorageError(
                f"the download of blob {self._sha256} from {transport.name} broke after {self._pos} of "
                f"{self.size} bytes ({error or 'connection closed'}); retry later"
            )
        time.sleep(transport.backoff(self._attempt))
        self._attempt += 1
        response, conn = transport.stream(self._path, {"Range": f"bytes={self._pos}-"})
        if response.status == 206 and response.getheader("Content-Range") == (
            f"bytes {self._pos}-{self.size - 1}/{self.size}"
        ):
            self._response, self._conn = response, conn
            return
        transport.finish(response, conn)
        if response.status == 404:
            raise BlobMissing(f"blob {self._sha256} was deleted from {transport.name} while being read")
        raise StorageError(
            f"{transport.name} could not resume the download of blob {self._sha256} at byte {self._pos} "
            f"(answered {response.status}); retry later"
        )

    def _finish(self) -> None:
        if self._response is not None and self._conn is not None:
            self._transport.finish(self._response, self._conn)
        self._response = self._conn = None

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._response = self._conn = None

    def close(self) -> None:
        if not self.closed:
            self._drop_connection()  # mid-body: the connection cannot serve another request
            super().close()


def _release(response: HTTPResponse, conn: HTTPConnection, pool: _Pool) -> None:
    if response.isclosed() and not response.will_close:
        pool.release(conn)
    else:
        conn.close()
