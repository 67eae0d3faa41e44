"""What the HTTP blob store tests share: a BlobServer over a FilesystemBlobBackend in tmp_path, clients,
the server's log records, and raw requests. Test modules import the fixtures they use by name."""

from __future__ import annotations

import http.client
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from blob_contract import far_future

from objstore.blobs.base import BlobBackend
from objstore.blobs.filesystem import FilesystemBlobBackend
from objstore.blobs.http import HttpBlobBackend
from objstore.blobs.http_server import BlobServer

TOKEN = "test-token-0123456789abcdef"
WRONG = "wrong-token-fedcba9876543210"

Answer = tuple[int, http.client.HTTPMessage, bytes]


@pytest.fixture
def stored(tmp_path: Path) -> FilesystemBlobBackend:
    """The backend the server serves."""
    return FilesystemBlobBackend(tmp_path / "server")


@pytest.fixture
def serve(stored: FilesystemBlobBackend) -> Iterator[Callable[..., BlobServer]]:
    servers: list[BlobServer] = []

    def start(**options: Any) -> BlobServer:
        options.setdefault("token", TOKEN)
        server = BlobServer(stored, "127.0.0.1", 0, **options)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(serve: Callable[..., BlobServer]) -> BlobServer:
    return serve()


@pytest.fixture
def connect(tmp_path: Path) -> Iterator[Callable[..., HttpBlobBackend]]:
    clients: list[HttpBlobBackend] = []

    def make(port: int, **options: Any) -> HttpBlobBackend:
        options.setdefault("token", TOKEN)
        options.setdefault("staging_dir", tmp_path / "client-staging")
        client = HttpBlobBackend(f"127.0.0.1:{port}", **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(server: BlobServer, connect: Callable[..., HttpBlobBackend]) -> HttpBlobBackend:
    return connect(server.port)


@pytest.fixture
def server_log(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> Iterator[pytest.LogCaptureFixture]:
    """The server's records, whatever an earlier `setup_logging` did to propagation."""
    logger = logging.getLogger("objstore.blob_server")
    monkeypatch.setattr(logger, "propagate", False)
    caplog.set_level(logging.DEBUG, logger=logger.name)
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


def request(
    port: int, method: str, path: str, body: bytes | None = None, *, token: str | None = TOKEN, **headers: str
) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=body, headers={k.replace("_", "-"): v for k, v in headers.items()})
        response = conn.getresponse()
        return response.status, response.msg, response.read()
    finally:
        conn.close()


def put(client: BlobBackend, data: bytes) -> str:
    staged = client.stage([data])
    try:
        client.publish(staged)
    finally:
        client.discard(staged)
    return staged.sha256


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def logged(log: pytest.LogCaptureFixture, method: str, status: int) -> bool:
    return any(
        getattr(r, "method", None) == method and getattr(r, "status", None) == status for r in log.records
    )


def nothing_stored(stored: FilesystemBlobBackend) -> bool:
    """No visible blob and no staging leftover on the server (leftovers are removed while counting)."""
    return list(stored.iter_blobs()) == [] and stored.remove_stale_staging(far_future()) == 0
