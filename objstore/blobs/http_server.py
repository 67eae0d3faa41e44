"""An HTTP server for any blob backend, so that CI workers without database access share one store's content.

``PUT/GET/HEAD/DELETE /blobs/{sha256}`` and ``GET /blobs?after=SHA&limit=N`` (a JSON page of the listing,
ordered by address), all behind ``Authorization: Bearer <token>``; see ``objstore.blobs.http_handler`` for
what each request does and :class:`~objstore.blobs.http.HttpBlobBackend` for the client.

This module owns the listening socket and the connections' lifetime: :meth:`BlobServer.stop` stops
accepting, cuts idle keep-alive connections, lets requests in progress finish (up to a grace period) and
joins every connection's thread, so that a test or a SIGTERM leaves nothing running.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from http.server import ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any

from objstore.blobs.base import BlobBackend
from objstore.blobs.http_handler import BlobRequestHandler
from objstore.blobs.http_protocol import check_token, is_loopback
from objstore.errors import ConfigError, InvalidValue, StorageError

__all__ = ["BlobServer"]

_log = logging.getLogger("objstore.blob_server")


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


class BlobServer:
    """Serves ``backend`` over HTTP on ``host:port`` (port 0: any free port, see :attr:`port`).

    ``token`` is required unless ``allow_anonymous`` is set and ``host`` is a loopback address.
    ``max_blob_size`` (bytes) refuses larger uploads with 413. ``allow_delete`` False answers DELETE with
    405 (clients' garbage collection then fails instead of removing content). ``timeout`` (seconds)
    closes connections idle or stalled that long. The socket is bound here; :meth:`start` serves from a
    background thread, :meth:`serve_forever` from the calling one until :meth:`request_stop` (safe in a
    signal handler).
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
        allow_delete: bool = True,
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
                    "anyone who can reach it could read, add and delete content; give a token"
                )
        self._token = None if token is None else check_token(token)
        if max_blob_size is not None and max_blob_size < 0:
            raise InvalidValue(f"max_blob_size must be non-negative, got {max_blob_size}")
        if not timeout > 0:
            raise InvalidValue(f"timeout must be positive, got {timeout}")
        self.backend = backend
        self.host = host
        self.max_blob_size = max_blob_size
        self.allow_delete = allow_delete
        self.timeout = timeout
        server_class = _HttpServer6 if ":" in host else _HttpServer
        try:
            self._httpd = server_class((host.strip("[]"), port), BlobRequestHandler)
        except OSError as error:
            code = errno.errorcode.get(error.errno or 0, type(error).__name__)
            raise StorageError(
                f"cannot listen on {host}:{port} ({code}: {error.strerror or error}): choose another "
                "address or port, or stop the process that uses it"
            ) from None
        self._httpd.blob_server = self
        self.port: int = self._httpd.server_address[1]
        self._handlers: dict[BlobRequestHandler, bool] = {}  # open connections -> busy with a request
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

    def _track(self, handler: BlobRequestHandler, *, busy: bool) -> None:
        with self._changed:
            self._handlers[handler] = busy
            self._changed.notify_all()

    def _untrack(self, handler: BlobRequestHandler) -> None:
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
