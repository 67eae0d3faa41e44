"""An HTTP server for any blob backend, so that CI workers without database access share one store's content.

``PUT/GET/HEAD/DELETE /blobs/{sha256}`` and ``GET /blobs?after=SHA&limit=N`` (a JSON page of the listing,
ordered by address), all behind ``Authorization: Bearer <token>``. :class:`~objstore.blobs.http.
HttpBlobBackend` is the client.

A PUT streams the body into ``backend.stage`` and publishes only if the bytes hash to the address, so a
truncated or wrong upload never becomes visible. A GET streams the stored file as is (``sendfile`` when the
backend gives a real file): readers verify end to end (``objstore.blobs.verify``), which also covers damage
in transit that a server-side check could not see. Every response carries ``X-Objstore-Blobs: 1`` so that a
client pointed at some other web server does not take its 404s for missing content.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import hmac
import ipaddress
import json
import logging
import os
import re
import socket
import stat
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from email.utils import format_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlsplit

from objstore.blobs.base import BlobBackend, BlobMissing
from objstore.errors import ConfigError, InvalidValue, ObjStoreError, StorageError

__all__ = ["LIMIT_HEADER", "MARKER_HEADER", "BlobServer", "check_token", "is_loopback"]

_log = logging.getLogger("objstore.blob_server")

MARKER_HEADER = "X-Objstore-Blobs"
LIMIT_HEADER = "X-Max-Blob-Size"
CHUNK = 1 << 20
LIST_DEFAULT = 1000
LIST_MAX = 10_000
_DRAIN_LIMIT = 1 << 20  # unread request bodies up to this size are read and dropped to keep the connection
_LINGER = 2.0  # seconds a refused larger upload may go on being sent before the connection closes
_MIN_TOKEN = 16
_TOKEN = re.compile(r"[\x21-\x7e]+")  # what fits in a header after "Bearer "
_SHA256 = re.compile(r"[0-9a-f]{64}")
_BLOB_PATH = re.compile(r"/blobs/([^/]*)")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")
_CLIENT_GONE = 499  # logged only (nginx's "client closed request"): there is nobody left to answer


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (where only local users can connect)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_token(token: object) -> bytes:
    """The token as bytes, or ConfigError if it is too short or does not fit in a header."""
    if not isinstance(token, str) or _TOKEN.fullmatch(token) is None or len(token) < _MIN_TOKEN:
        raise ConfigError(
            f"the blob server token must be at least {_MIN_TOKEN} printable ASCII characters without "
            "spaces; make one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    return token.encode("ascii")


class _BodyError(Exception):
    """The request body cannot be stored; raised inside the chunk iterator, so staging cleans up."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _ClientGone(Exception):
    """The client disconnected or stalled mid-request: nobody to answer."""


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True  # BlobServer.stop joins the handler threads itself, after cutting idle ones
    blob_server: BlobServer

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) that can hang for seconds.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        _log.exception("blob server: unexpected error on a connection from %s", client_address[0])


class _HttpServer6(_HttpServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients pool their connections
    server_version = "objstore-blobs"
    sys_version = ""
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms delayed-ACK stall
    owner: BlobServer

    # -- connection life ---------------------------------------------------------------------------

    def setup(self) -> None:
        server = self.server
        assert isinstance(server, _HttpServer)
        self.owner = server.blob_server
        self.thread = threading.current_thread()
        super().setup()
        self.connection.settimeout(self.owner.timeout)  # also bounds a stalled upload or download
        self.owner._track(self, busy=False)

    def finish(self) -> None:
        try:
            if getattr(self, "_linger", False):
                self._drain_before_close()
            super().finish()
        finally:
            self.owner._untrack(self)

    def _drain_before_close(self) -> None:
        """Closing with unread input makes the kernel send a reset, which can destroy the answer before
        the client reads it: end our side, then let the client finish sending for a moment."""
        deadline = time.monotonic() + _LINGER
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.2)
            while time.monotonic() < deadline and self.connection.recv(CHUNK):
                pass

    def cut(self) -> None:
        """Shut the socket down so that a thread blocked reading or writing it returns at once."""
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    # -- entry points ------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def handle_expect_100(self) -> bool:
        # Refuse a wrong token before the client sends a large body (curl waits for the 100).
        if self._authorized():
            return super().handle_expect_100()
        self._handle(self.command)
        self.close_connection = True
        return False

    def _handle(self, method: str) -> None:
        started = time.perf_counter()
        self._status, self._sent, self._received, self._note = 0, 0, 0, ""
        self._exc: BaseException | None = None
        self._replied = self._linger = False
        self._body_left: int | None = 0
        self.owner._track(self, busy=True)
        try:
            self._body_left = self._declared_body()
            self._route(method)
        except _BodyError as error:
            self.close_connection = True  # where the next request would start is unknown
            self._body_left = 0
            self._fail(error.status, str(error))
        except _ClientGone as gone:
            self.close_connection = True
            self._status, self._note = _CLIENT_GONE, str(gone)
        except ObjStoreError as error:
            self._fail(*_status_for(error))
        except Exception as error:  # a bug or an unexpected driver error: answer 500 and log the traceback
            self._exc = error
            self._fail(500, "internal error in the blob server; see its log")
        finally:
            if self.owner._stopping:
                self.close_connection = True
            self.owner._track(self, busy=False)
            self._log_request(method, started)

    def _fail(self, status: int, message: str) -> None:
        if self._replied:
            self.close_connection = True  # the body is under way: cutting it short is the only signal left
            self._note = message
        else:
            self._send_json(status, {"error": message})

    # -- routing -----------------------------------------------------------------------------------

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        if not self._authorized():
            self._send_json(
                401,
                {"error": "missing or wrong bearer token"},
                {"WWW-Authenticate": 'Bearer realm="objstore"'},
            )
            return
        if url.path in ("/blobs", "/blobs/"):
            if method in ("GET", "HEAD"):
                self._list(url.query)
            else:
                self._send_json(405, {"error": f"{method} is not allowed on /blobs"}, {"Allow": "GET, HEAD"})
            return
        match = _BLOB_PATH.fullmatch(url.path)
        if match is None:
            self._send_json(404, {"error": "no such endpoint: use /blobs/{sha256} or /blobs"})
            return
        sha256 = match.group(1)
        if _SHA256.fullmatch(sha256) is None:
            self._send_json(400, {"error": "invalid sha256 address: expected 64 lower-case hex characters"})
        elif method in ("GET", "HEAD"):
            self._get(sha256, send_body=method == "GET")
        elif method == "PUT":
            self._put(sha256)
        else:
            self._delete(sha256)

    def _authorized(self) -> bool:
        expected = self.owner._token
        if expected is None:
            return True
        scheme, _, given = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode("latin-1", "replace"), expected)

    # -- blobs -------------------------------------------------------------------------------------

    def _get(self, sha256: str, *, send_body: bool) -> None:
        backend = self.owner.backend
        try:
            reader = backend.open(sha256)
        except BlobMissing:
            self._send_json(404, {"error": f"blob {sha256} is not stored here"})
            return
        with reader:
            found = _size_and_mtime(reader, backend, sha256)
            if found is None:
                self._send_json(404, {"error": f"blob {sha256} is not stored here"})
                return
            size, modified_at = found
            headers = {
                "Content-Type": "application/octet-stream",
                "ETag": f'"{sha256}"',
                "Accept-Ranges": "bytes",
                "Last-Modified": format_datetime(modified_at, usegmt=True),
                "X-Modified-At": modified_at.isoformat(),
                "Cache-Control": "private, max-age=31536000, immutable",  # content never changes
            }
            start, length, status = 0, size, 200
            try:
                wanted = _parse_range(self.headers.get("Range"), size)
            except _Unsatisfiable:
                self._send_json(416, {"error": "range not satisfiable"}, {"Content-Range": f"bytes */{size}"})
                return
            if wanted is not None:
                start, end = wanted
                length, status = end - start + 1, 206
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            self._start(status, headers, length)
            if send_body and length:
                self._send_file(reader, start, length)

    def _send_file(self, reader: BinaryIO, start: int, length: int) -> None:
        sent = 0
        try:
            if _has_fd(reader):
                sent = self.connection.sendfile(reader, start, length)
            else:
                if start:
                    reader.seek(start)
                while sent < length and (data := reader.read(min(CHUNK, length - sent))):
                    self.wfile.write(data)
                    sent += len(data)
        except OSError as error:
            raise _ClientGone(f"transfer stopped after {self._sent + sent} bytes: {error}") from None
        finally:
            self._sent += sent
        if sent < length:
            # The stored file is shorter than when it was measured: close instead of padding.
            self.close_connection = True
            self._note = f"stored file ended after {sent} of {length} bytes; connection closed"

    def _put(self, sha256: str) -> None:
        length = self._body_left
        if length is None and "Transfer-Encoding" not in self.headers:
            self._send_json(411, {"error": "a PUT needs Content-Length (or chunked transfer encoding)"})
            return
        limit = self.owner.max_blob_size
        if limit is not None and length is not None and length > limit:
            self._send_json(413, {"error": f"the body of {length} bytes exceeds the limit of {limit} bytes"})
            return
        backend = self.owner.backend
        staged = backend.stage(self._body_chunks())  # _BodyError and _ClientGone pass through, cleaned up
        existed = matches = staged.sha256 == sha256
        try:
            if matches:
                existed = backend.exists(sha256)
                backend.publish(staged)
        finally:
            backend.discard(staged)  # before answering: the client may look for leftovers at once
        if not matches:
            message = f"the body hashes to {staged.sha256}, not to its address; nothing was stored"
            self._send_json(400, {"error": message})
        else:
            self._send_json(200 if existed else 201, {"sha256": sha256, "size": staged.size})

    def _delete(self, sha256: str) -> None:
        if self.owner.backend.delete(sha256):
            self._send_json(200, {"sha256": sha256, "deleted": True})
        else:
            self._send_json(404, {"error": f"blob {sha256} is not stored here"})

    def _list(self, query: str) -> None:
        try:
            params = parse_qs(query, keep_blank_values=True, max_num_fields=10)
            after = params.get("after", [""])[-1]
            limit = int(params.get("limit", [str(LIST_DEFAULT)])[-1])
        except ValueError:
            after, limit = "", 0
        if (after and _SHA256.fullmatch(after) is None) or not 1 <= limit <= LIST_MAX:
            message = f"expected after=<sha256> and limit=1..{LIST_MAX}"
            self._send_json(400, {"error": message})
            return
        # Backends list in no particular order: one pass keeps the limit + 1 smallest addresses after the
        # cursor (bounded memory; each page costs a full listing of the backend).
        blobs = (blob for blob in self.owner.backend.iter_blobs() if blob.sha256 > after)
        page = heapq.nsmallest(limit + 1, blobs, key=lambda blob: blob.sha256)
        more = len(page) > limit
        page = page[:limit]
        self._send_json(
            200,
            {
                "blobs": [
                    {"sha256": b.sha256, "size": b.size, "modified_at": b.modified_at.isoformat()}
                    for b in page
                ],
                "next": page[-1].sha256 if more else None,
            },
        )

    # -- request bodies ----------------------------------------------------------------------------

    def _declared_body(self) -> int | None:
        """Bytes of body to read (0: none), or None for a chunked body (or a PUT that declares none)."""
        chunked = self.headers.get("Transfer-Encoding")
        declared = self.headers.get("Content-Length")
        if chunked is not None:
            # Both headers at once is how requests are smuggled past proxies: refuse.
            if declared is not None or chunked.strip().lower() != "chunked":
                raise _BodyError(400, "unsupported Transfer-Encoding (only chunked, without Content-Length)")
            return None
        if declared is None:
            return None if self.command == "PUT" else 0
        if not declared.strip().isdigit():
            raise _BodyError(400, "malformed Content-Length")
        return int(declared)

    def _body_chunks(self) -> Iterator[bytes]:
        if self._body_left is None:
            yield from self._chunked_body()
            return
        read = self.rfile.read
        while self._body_left:
            try:
                data = read(min(CHUNK, self._body_left))
            except OSError as error:
                raise _ClientGone(f"upload stopped after {self._received} bytes: {error}") from None
            if not data:
                raise _ClientGone(f"upload ended after {self._received} bytes, before its Content-Length")
            self._body_left -= len(data)
            self._received += len(data)
            yield data

    def _chunked_body(self) -> Iterator[bytes]:
        limit = self.owner.max_blob_size
        self._body_left = 0  # whatever happens, no more body is read on this connection
        keep = self.close_connection
        self.close_connection = True  # unless the whole body arrives well-formed (set back below)
        try:
            while True:
                line = self.rfile.readline(1024)
                if not line.endswith(b"\n"):
                    raise _ClientGone(f"upload ended after {self._received} bytes, mid chunk header")
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise _BodyError(400, "malformed chunked encoding") from None
                if size == 0:
                    while self.rfile.readline(1024).strip():  # trailers: ignored
                        pass
                    self.close_connection = keep
                    return
                if limit is not None and self._received + size > limit:
                    raise _BodyError(413, f"the body exceeds the limit of {limit} bytes")
                while size:
                    data = self.rfile.read(min(CHUNK, size))
                    if not data:
                        raise _ClientGone(f"upload ended after {self._received} bytes, mid chunk")
                    size -= len(data)
                    self._received += len(data)
                    yield data
                if self.rfile.read(2) != b"\r\n":
                    raise _BodyError(400, "malformed chunked encoding")
        except OSError as error:
            raise _ClientGone(f"upload stopped after {self._received} bytes: {error}") from None

    def _skip_body(self) -> None:
        """Before answering without reading the body: drop a small one, else close after the answer."""
        left, self._body_left = self._body_left, 0
        if not left:
            return
        if left is None or left > _DRAIN_LIMIT:
            self.close_connection = self._linger = True
            return
        try:
            while left and (data := self.rfile.read(min(CHUNK, left))):
                left -= len(data)
        except OSError:
            left = 1
        if left:
            self.close_connection = True

    # -- responses and logging ---------------------------------------------------------------------

    def _start(self, status: int, headers: Mapping[str, str], length: int) -> None:
        self._skip_body()
        self.send_response(status)
        self.send_header(MARKER_HEADER, "1")
        if self.owner.max_blob_size is not None:
            self.send_header(LIMIT_HEADER, str(self.owner.max_blob_size))  # clients check before uploading
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self._status, self._replied = status, True

    def _send_json(self, status: int, document: object, headers: Mapping[str, str] | None = None) -> None:
        body = json.dumps(document).encode()
        self._start(status, {"Content-Type": "application/json", **(headers or {})}, len(body))
        if self.command != "HEAD":
            self.wfile.write(body)
            self._sent += len(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors found by http.server itself (malformed request, unknown method): JSON too, and logged."""
        started = time.perf_counter()
        self._status, self._sent, self._received, self._note, self._exc = 0, 0, 0, "", None
        self._body_left, self.close_connection = 0, True
        self._send_json(code, {"error": message or HTTPStatus(code).phrase})
        self._log_request(getattr(self, "command", None) or "-", started)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Replaced by the one line per request of ``_log_request``."""

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("blob server: " + format, *args)

    def _log_request(self, method: str, started: float) -> None:
        ms = (time.perf_counter() - started) * 1000
        path = _UNPRINTABLE.sub("?", getattr(self, "path", "") or "-")[:300]  # no forged log lines
        status = self._status
        count = self._received if method == "PUT" else self._sent
        if status >= 500 and status != _CLIENT_GONE:
            level = logging.ERROR
        else:
            level = logging.WARNING if status == 401 else logging.INFO
        note = f" ({self._note})" if self._note else ""
        _log.log(
            level,
            "%s %s %d %d bytes %.1f ms%s",
            method,
            path,
            status,
            count,
            ms,
            note,
            exc_info=self._exc,
            extra={"method": method, "path": path, "status": status, "bytes": count, "ms": round(ms, 2)},
        )


def _status_for(error: ObjStoreError) -> tuple[int, str]:
    if isinstance(error, BlobMissing):
        return 404, str(error)
    if isinstance(error, InvalidValue):
        return 400, str(error)
    if isinstance(error, StorageError) and error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return 507, str(error)
    return 500, str(error)


def _has_fd(reader: BinaryIO) -> bool:
    try:
        return stat.S_ISREG(os.fstat(reader.fileno()).st_mode)
    except (OSError, ValueError, AttributeError):
        return False


def _size_and_mtime(reader: BinaryIO, backend: BlobBackend, sha256: str) -> tuple[int, datetime] | None:
    """Measured on the open file when there is one, so a concurrent delete cannot get in between."""
    if _has_fd(reader):
        st = os.fstat(reader.fileno())
        return st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)
    info = backend.stat(sha256)
    return None if info is None else (info.size, info.modified_at)


class _Unsatisfiable(Exception):
    """The range asked for starts after the end of the content."""


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One ``bytes=a-b`` range as (first, last), or None to send everything (RFC 9110 lets a server
    ignore ranges it does not support, such as several at once); raises _Unsatisfiable."""
    match = _RANGE.fullmatch(header.strip()) if header else None
    if match is None or match.group(0) == "bytes=-":
        return None
    first, last = match.groups()
    if not first:  # the last N bytes
        count = int(last)
        if not count or not size:
            raise _Unsatisfiable
        return max(size - count, 0), size - 1
    start, end = int(first), int(last) if last else size - 1
    if start >= size:
        raise _Unsatisfiable
    if end < start:
        return None
    return start, min(end, size - 1)


class BlobServer:
    """Serves ``backend`` over HTTP on ``host:port`` (port 0: any free port, see :attr:`port`).

    ``token`` is required unless ``allow_anonymous`` is set and ``host`` is a loopback address.
    ``max_blob_size`` (bytes) refuses larger uploads with 413. ``timeout`` (seconds) closes connections
    idle or stalled that long. The socket is bound here; :meth:`start` serves from a background thread,
    :meth:`serve_forever` from the calling one until :meth:`request_stop` (safe in a signal handler).
    """

    def __init__(
        self,
        backend: BlobBackend,
        host: str = "127.0.0.1",
        port: int = 7777,
        *,
        token: str | None = None,
        allow_anonymous: bool = False,
        max_blob_size: int | None = None,
        timeout: float = 60.0,
    ) -> None:
        if token is None:
            if not allow_anonymous:
                raise ConfigError(
                    "the blob server needs a token (allow_anonymous=True: none, on loopback only)"
                )
            if not is_loopback(host):
                raise ConfigError(
                    f"refusing to serve blobs without a token on {host}, which is not a loopback address: "
                    "anyone who can reach it could read, overwrite and delete content; give a token"
                )
        self._token = None if token is None else check_token(token)
        if max_blob_size is not None and max_blob_size < 0:
            raise InvalidValue(f"max_blob_size must be non-negative, got {max_blob_size}")
        if not timeout > 0:
            raise InvalidValue(f"timeout must be positive, got {timeout}")
        self.backend = backend
        self.host = host
        self.max_blob_size = max_blob_size
        self.timeout = timeout
        server_class = _HttpServer6 if ":" in host else _HttpServer
        try:
            self._httpd = server_class((host.strip("[]"), port), _Handler)
        except OSError as error:
            code = errno.errorcode.get(error.errno or 0, type(error).__name__)
            raise StorageError(
                f"cannot listen on {host}:{port} ({code}: {error.strerror or error}): choose another "
                "address or port, or stop the process that uses it"
            ) from None
        self._httpd.blob_server = self
        self.port: int = self._httpd.server_address[1]
        self._handlers: dict[_Handler, bool] = {}  # open connections -> busy with a request
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop_requested = threading.Event()
        self._stopping = False
        self._stopped = False

    @property
    def url(self) -> str:
        host = f"[{self.host.strip('[]')}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        """Serve from a background thread; returns at once."""
        if self._thread is not None or self._stopped:
            raise RuntimeError("a BlobServer starts once")
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name=f"blob-server-{self.port}", daemon=True
        )
        self._thread.start()

    def serve_forever(self) -> None:
        """Serve until :meth:`request_stop` or :meth:`stop` is called (from a signal handler or a thread)."""
        if self._thread is None:
            self.start()
        while not self._stop_requested.wait(0.5):
            pass
        self.stop()

    def request_stop(self) -> None:
        """Ask :meth:`serve_forever` to stop; only sets a flag, so it is safe in a signal handler."""
        self._stop_requested.set()

    def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let requests in progress finish (up to ``grace`` seconds), close everything."""
        with self._changed:
            if self._stopped:
                return
            self._stopped = self._stopping = True
        self._stop_requested.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
        with self._changed:
            idle = [handler for handler, busy in self._handlers.items() if not busy]
        for handler in idle:
            handler.cut()  # waiting for a next request that will not be served
        deadline = time.monotonic() + grace
        with self._changed:
            while any(self._handlers.values()) and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(left)
            remaining = list(self._handlers)
        for handler in remaining:
            handler.cut()
        for handler in remaining:
            handler.thread.join(timeout=5)
        self._httpd.server_close()

    def _track(self, handler: _Handler, *, busy: bool) -> None:
        with self._changed:
            self._handlers[handler] = busy
            self._changed.notify_all()

    def _untrack(self, handler: _Handler) -> None:
        with self._changed:
            self._handlers.pop(handler, None)
            self._changed.notify_all()

    def __enter__(self) -> BlobServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:  # the token is never shown
        auth = "token" if self._token is not None else "anonymous"
        return f"<BlobServer {self.url} ({auth}) serving {self.backend.name}>"
