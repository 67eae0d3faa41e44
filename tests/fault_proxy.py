"""A fault-injecting HTTP proxy for the S3 tests (stdlib only, one thread per connection).

:class:`FaultProxy` sits between a backend and an S3 server and forwards every request unchanged, except
that it can answer an error status to the next ``k`` requests, hold requests without ever answering (a
stalled server, to provoke client timeouts), or hang up part-way through a GET's body. It records every
request it saw, so tests can count retries.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FaultProxy", "Seen"]

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
)
_COPY = 1 << 16
_ERROR_CODES = {403: "AccessDenied", 500: "InternalError", 503: "SlowDown"}


@dataclass(frozen=True)
class Seen:
    """One request the proxy received, and what it answered (None: held, never answered)."""

    method: str
    path: str
    status: int | None
    range: str | None = None  # the Range header, if any


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hang up on held or failed requests all the time here; that is the point of the proxy.
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class FaultProxy:
    """A threaded HTTP proxy in front of ``upstream`` that can fail or stall requests on demand."""

    def __init__(self, upstream: str) -> None:
        scheme, _, hostport = upstream.partition("://")
        if scheme != "http":
            raise ValueError("the fault proxy forwards to plain-http upstreams only")
        host, _, port = hostport.partition(":")
        self.upstream = (host, int(port or 80))
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._fail_next = 0
        self._fail_status = 503
        self._cut_next = 0
        self._cut_after = 0
        self._stall = False
        self._released = threading.Event()
        self._server = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- what to do with the next requests ---------------------------------------------------------

    def fail_next(self, count: int, status: int = 503) -> None:
        """Answer ``status`` (with an S3-style error body) to the next ``count`` requests."""
        with self._lock:
            self._fail_next = count
            self._fail_status = status

    def cut_next_gets(self, count: int, after: int) -> None:
        """Drop the connection of the next ``count`` successful GETs after ``after`` bytes of body."""
        with self._lock:
            self._cut_next = count
            self._cut_after = after

    def stall(self) -> None:
        """Read every following request but never answer it, until :meth:`release`."""
        with self._lock:
            self._released.clear()
            self._stall = True

    def release(self) -> None:
        """Stop stalling; held requests get their connection closed without an answer."""
        with self._lock:
            self._stall = False
            self._released.set()

    def count(self, *, status: int | None = None, method: str | None = None) -> int:
        with self._lock:
            return sum(
                1
                for s in self.seen
                if (status is None or s.status == status) and (method is None or s.method == method)
            )

    def reset(self) -> None:
        with self._lock:
            self.seen.clear()
            self._fail_next = 0
            self._cut_next = 0
            self._stall = False
            self._released.set()

    def close(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- plumbing ------------------------------------------------------------------------------------

    def _decide(self) -> tuple[str, int]:
        with self._lock:
            if self._stall:
                return "stall", 0
            if self._fail_next > 0:
                self._fail_next -= 1
                return "fail", self._fail_status
            return "forward", 0

    def _record(self, method: str, path: str, status: int | None, range_: str | None = None) -> None:
        with self._lock:
            self.seen.append(Seen(method, path, status, range_))

    def _cut_point(self, method: str, status: int) -> int | None:
        with self._lock:
            if method == "GET" and status in (200, 206) and self._cut_next > 0:
                self._cut_next -= 1
                return self._cut_after
            return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like a real S3 server

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts: list[bytes] = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                body = self._body()
                action, status = proxy._decide()
                if action == "stall":
                    proxy._record(self.command, self.path, None)
                    proxy._released.wait(timeout=300)
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if action == "fail":
                    proxy._record(self.command, self.path, status)
                    code = _ERROR_CODES.get(status, "InternalError")
                    message = (
                        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                        "<Message>injected by the test proxy</Message></Error>"
                    ).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(message)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(message)
                    return
                self._forward(body)

            def _forward(self, body: bytes) -> None:
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=120)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                    headers["Content-Length"] = str(len(body))
                    if self.command in ("GET", "HEAD", "DELETE") and not body:
                        headers.pop("Content-Length")
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    proxy._record(self.command, self.path, response.status, self.headers.get("Range"))
                    cut = proxy._cut_point(self.command, response.status)
                    self.send_response_only(response.status, response.reason)
                    length = response.getheader("Content-Length")
                    for key, value in response.getheaders():
                        if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                            self.send_header(key, value)
                    if length is None and self.command != "HEAD":
                        data = response.read()  # moto always sends a length; be safe anyway
                        length = str(len(data))
                        self.send_header("Content-Length", length)
                        self.end_headers()
                        self.wfile.write(data)
                        return
                    if length is not None:
                        self.send_header("Content-Length", length)
                    self.end_headers()
                    if self.command == "HEAD":
                        return
                    sent = 0
                    while data := response.read(_COPY):
                        if cut is not None and sent + len(data) >= cut:
                            # Promise the whole body, send part of it, hang up: a connection lost mid-read.
                            self.wfile.write(data[: cut - sent])
                            self.wfile.flush()
                            self.close_connection = True
                            self.connection.shutdown(socket.SHUT_RDWR)
                            return
                        self.wfile.write(data)
                        sent += len(data)
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        return Handler
