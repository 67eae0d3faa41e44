"""One connection to the blob server: authentication, routing, and the five operations on a backend.

A PUT streams the body into ``backend.stage`` and publishes only if the bytes hash to the address, so a
truncated or wrong upload never becomes visible. A GET streams the stored file as is (``sendfile`` when the
backend gives a real file): readers verify end to end (``objstore.blobs.verify``), which also covers
damage in transit that a check on the server could not see.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import hmac
import json
import logging
import os
import re
import socket
import stat
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import format_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import parse_qs, urlsplit

from objstore.blobs.base import BlobBackend, BlobMissing
from objstore.blobs.http_bodies import BodyError, ClientGone, RequestBody
from objstore.blobs.http_protocol import (
    CHUNK,
    LIMIT_HEADER,
    LIST_DEFAULT,
    LIST_MAX,
    MARKER_HEADER,
    MODIFIED_HEADER,
    Unsatisfiable,
    parse_range,
)
from objstore.errors import InvalidValue, ObjStoreError, StorageError

if TYPE_CHECKING:
    from objstore.blobs.http_server import BlobServer

__all__ = ["BlobRequestHandler"]

_log = logging.getLogger("objstore.blob_server")

_LINGER = 2.0  # seconds a refused large upload may go on arriving before the connection closes
_SHA256 = re.compile(r"[0-9a-f]{64}")
_BLOB_PATH = re.compile(r"/blobs/([^/]*)")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")
_CLIENT_GONE = 499  # logged only (nginx's "client closed request"): there is nobody left to answer


class BlobRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients pool their connections
    server_version = "objstore-blobs"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no delayed-ACK stall
    owner: BlobServer
    _body: RequestBody
    _exc: BaseException | None

    def version_string(self) -> str:
        return self.server_version  # no Python version for the curious

    # -- connection life ---------------------------------------------------------------------------

    def setup(self) -> None:
        self.owner = self.server.blob_server  # type: ignore[attr-defined]  # set by BlobServer
        self.thread = threading.current_thread()
        self._linger = False
        super().setup()
        self.connection.settimeout(self.owner.timeout)  # also bounds a stalled upload or download
        self.owner._track(self, busy=False)

    def finish(self) -> None:
        try:
            if self._linger:
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
        self._reset()
        self.owner._track(self, busy=True)
        try:
            self._body = RequestBody(self.rfile, self.headers, self.owner.max_blob_size)
            self._route(method)
        except BodyError as error:
            self.close_connection = True  # where the next request would start is unknown
            self._fail(error.status, str(error))
        except ClientGone as gone:
            self.close_connection = True
            self._status, self._note = _CLIENT_GONE, str(gone)
        except ObjStoreError as error:
            self._fail(*_status_for(error))
        except Exception as error:  # a bug or an unexpected driver error: answer 500 and log the traceback
            self._exc = error
            self._fail(500, "internal error in the blob server; see its log")
        finally:
            if self.owner._stopping or not self._body.reusable:
                self.close_connection = True
            self._linger = self._body.linger
            self.owner._track(self, busy=False)
            self._log_request(method, started)

    def _reset(self) -> None:
        self._status, self._sent, self._note = 0, 0, ""
        self._exc = None
        self._replied = False
        self._body = _NoBody()

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
            headers = {"WWW-Authenticate": 'Bearer realm="objstore"'}
            self._send_json(401, {"error": "missing or wrong bearer token"}, headers)
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
        elif method == "GET":
            self._get(sha256)
        elif method == "HEAD":
            self._head(sha256)
        elif method == "PUT":
            self._put(sha256)
        elif self.owner.allow_delete:
            self._delete(sha256)
        else:
            message = "this blob server does not delete content (it was started without deletes)"
            self._send_json(405, {"error": message}, {"Allow": "GET, HEAD, PUT"})

    def _authorized(self) -> bool:
        expected = self.owner._token
        if expected is None:
            return True
        scheme, _, given = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode("latin-1", "replace"), expected)

    # -- blobs -------------------------------------------------------------------------------------

    def _head(self, sha256: str) -> None:
        info = self.owner.backend.stat(sha256)  # not open(): for S3 that would start a download
        if info is None:
            self._send_json(404, {"error": f"blob {sha256} is not stored here"})
        else:
            self._start(200, _content_headers(sha256, info.modified_at), info.size)

    def _get(self, sha256: str) -> None:
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
            headers = _content_headers(sha256, modified_at)
            start, length, status = 0, size, 200
            try:
                wanted = parse_range(self.headers.get("Range"), size)
            except Unsatisfiable:
                self._send_json(416, {"error": "range not satisfiable"}, {"Content-Range": f"bytes */{size}"})
                return
            if wanted is not None:
                start, end = wanted
                length, status = end - start + 1, 206
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            self._start(status, headers, length)
            if length:
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
            raise ClientGone(f"transfer stopped after {self._sent + sent} bytes: {error}") from None
        finally:
            self._sent += sent
        if sent < length:
            # The stored file is shorter than when it was measured: close instead of padding.
            self.close_connection = True
            self._note = f"stored file ended after {sent} of {length} bytes; connection closed"

    def _put(self, sha256: str) -> None:
        body, limit = self._body, self.owner.max_blob_size
        if body.missing:
            self._send_json(411, {"error": "a PUT needs Content-Length (or chunked transfer encoding)"})
            return
        if limit is not None and body.length is not None and body.length > limit:
            message = f"the body of {body.length} bytes exceeds the limit of {limit} bytes"
            self._send_json(413, {"error": message})
            return
        backend = self.owner.backend
        staged = backend.stage(body.chunks())  # BodyError and ClientGone pass through, cleaned up
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
            self._send_json(400, {"error": f"expected after=<sha256> and limit=1..{LIST_MAX}"})
            return
        # Backends list in no particular order: one pass keeps the limit + 1 smallest addresses after the
        # cursor (bounded memory; each page costs a full listing of the backend).
        blobs = (blob for blob in self.owner.backend.iter_blobs() if blob.sha256 > after)
        page = heapq.nsmallest(limit + 1, blobs, key=lambda blob: blob.sha256)
        more = len(page) > limit
        listed = [
            {"sha256": b.sha256, "size": b.size, "modified_at": b.modified_at.isoformat()}
            for b in page[:limit]
        ]
        self._send_json(200, {"blobs": listed, "next": page[limit - 1].sha256 if more else None})

    # -- responses and logging ---------------------------------------------------------------------

    def _start(self, status: int, headers: Mapping[str, str], length: int) -> None:
        self._body.skip()
        if not self._body.reusable or self.owner._stopping:
            self.close_connection = True
        self.send_response(status)
        self.send_header(MARKER_HEADER, "1")
        if self.owner.max_blob_size is not None:
            self.send_header(LIMIT_HEADER, str(self.owner.max_blob_size))
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
        self._reset()
        self.close_connection = True
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
        count = self._body.received if method == "PUT" else self._sent
        if status >= 500 and status != _CLIENT_GONE:
            level = logging.ERROR
        else:
            level = logging.WARNING if status == 401 else logging.INFO
        note = f" ({self._note})" if self._note else ""
        _log.log(
            level,
            "%s %s %d %d bytes %.1f ms%s",
            *(method, path, status, count, ms, note),
            exc_info=self._exc,
            extra={"method": method, "path": path, "status": status, "bytes": count, "ms": round(ms, 2)},
        )


class _NoBody(RequestBody):
    """Before the headers are parsed, or when http.server itself answers: nothing to read."""

    def __init__(self) -> None:
        self.received, self.reusable, self.linger, self.chunked, self.length = 0, True, False, False, 0

    def skip(self) -> None:
        pass


def _content_headers(sha256: str, modified_at: datetime) -> dict[str, str]:
    return {
        "Content-Type": "application/octet-stream",
        "ETag": f'"{sha256}"',
        "Accept-Ranges": "bytes",
        "Last-Modified": format_datetime(modified_at, usegmt=True),
        MODIFIED_HEADER: modified_at.isoformat(),
        "Cache-Control": "private, max-age=31536000, immutable",  # content never changes
    }


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
