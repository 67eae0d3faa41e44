"""HttpBlobBackend against a real BlobServer over real sockets: the shared contract, plus the wire protocol,
auth, hash checks, disconnects, corruption, concurrency, retries, logs, and the `serve-blobs` command."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click
import pytest
from blob_contract import MIB, BlobBackendContract, far_future, payload, sha
from click.testing import CliRunner

from objstore.blobs.base import BlobBackend, BlobMissing
from objstore.blobs.filesystem import FilesystemBlobBackend
from objstore.blobs.http import HttpBlobBackend
from objstore.blobs.http_server import BlobServer
from objstore.blobs.verify import read_verified
from objstore.cli.blob_server_cmd import serve_blobs
from objstore.cli.context import CliState
from objstore.cli.logs import JsonFormatter
from objstore.cli.main import ObjstoreGroup
from objstore.errors import ConfigError, IntegrityError, StorageError

TOKEN = "test-token-0123456789abcdef"
WRONG = "wrong-token-fedcba9876543210"

Answer = tuple[int, http.client.HTTPMessage, bytes]


class TestHttpContract(BlobBackendContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[BlobBackend]:
        with BlobServer(FilesystemBlobBackend(tmp_path / "server"), "127.0.0.1", 0, token=TOKEN) as server:
            server.start()
            client = HttpBlobBackend(
                f"127.0.0.1:{server.port}", token=TOKEN, staging_dir=tmp_path / "client-staging"
            )
            yield client
            client.close()


# -- fixtures and helpers --------------------------------------------------------------------------------


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


# -- the wire protocol -----------------------------------------------------------------------------------


def test_put_whose_body_does_not_hash_to_its_address_is_refused(
    server: BlobServer, stored: FilesystemBlobBackend, client: HttpBlobBackend
) -> None:
    status, _, body = request(server.port, "PUT", f"/blobs/{sha(b'right')}", b"wrong")
    assert status == 400
    assert "hashes to" in json.loads(body)["error"]
    assert nothing_stored(stored)
    assert not client.exists(sha(b"right"))
    assert request(server.port, "PUT", f"/blobs/{sha(b'right')}", b"right")[0] == 201
    assert request(server.port, "PUT", f"/blobs/{sha(b'right')}", b"right")[0] == 200  # already there
    assert [b.sha256 for b in stored.iter_blobs()] == [sha(b"right")]


def test_get_head_range_delete(server: BlobServer) -> None:
    data = bytes(range(256)) * 40
    digest = sha(data)
    assert request(server.port, "PUT", f"/blobs/{digest}", data)[0] == 201
    status, headers, body = request(server.port, "GET", f"/blobs/{digest}")
    assert (status, body) == (200, data)
    assert headers["Content-Length"] == str(len(data))
    assert headers["ETag"] == f'"{digest}"'
    status, headers, body = request(server.port, "HEAD", f"/blobs/{digest}")
    assert (status, headers["Content-Length"], body) == (200, str(len(data)), b"")
    status, headers, body = request(server.port, "GET", f"/blobs/{digest}", Range="bytes=10-19")
    assert (status, headers["Content-Range"], body) == (206, f"bytes 10-19/{len(data)}", data[10:20])
    assert request(server.port, "GET", f"/blobs/{digest}", Range="bytes=-5")[2] == data[-5:]
    assert request(server.port, "GET", f"/blobs/{digest}", Range="bytes=10000-")[2] == data[10000:]
    assert request(server.port, "GET", f"/blobs/{digest}", Range=f"bytes={len(data)}-")[0] == 416
    assert request(server.port, "GET", f"/blobs/{digest}", Range="bytes=0-1,5-6")[0] == 200  # ignored
    assert request(server.port, "DELETE", f"/blobs/{digest}")[0] == 200
    assert request(server.port, "DELETE", f"/blobs/{digest}")[0] == 404
    assert request(server.port, "HEAD", f"/blobs/{digest}")[0] == 404
    status, headers, body = request(server.port, "GET", f"/blobs/{digest}")
    assert status == 404
    assert headers["Content-Type"] == "application/json"
    assert digest in json.loads(body)["error"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/blobs/" + "A" * 64, 400),
        ("GET", "/blobs/abc", 400),
        ("PUT", "/blobs/..%2F..%2Fetc%2Fpasswd", 400),
        ("DELETE", "/blobs/" + "a" * 63, 400),
        ("GET", "/other", 404),
        ("GET", "/blobs/" + "a" * 64 + "/x", 404),
        ("POST", "/blobs/" + "a" * 64, 501),
        ("PUT", "/blobs", 405),
        ("GET", "/blobs?limit=0", 400),
        ("GET", "/blobs?limit=100000", 400),
        ("GET", "/blobs?after=xyz", 400),
    ],
)
def test_bad_requests(
    server: BlobServer, stored: FilesystemBlobBackend, method: str, path: str, status: int
) -> None:
    answer, headers, body = request(server.port, method, path, b"x" if method in ("PUT", "POST") else None)
    assert answer == status
    assert headers["X-Objstore-Blobs"] == "1"
    assert json.loads(body)["error"]
    assert nothing_stored(stored)


def test_put_without_length_and_chunked_put(server: BlobServer, stored: FilesystemBlobBackend) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    data = payload(3 * MIB + 5, seed=1)
    conn.request(
        "PUT",
        f"/blobs/{sha(data)}",
        body=iter([data[:MIB], data[MIB:]]),
        headers={"Authorization": f"Bearer {TOKEN}"},
        encode_chunked=True,
    )
    response = conn.getresponse()
    assert (response.status, json.loads(response.read())) == (201, {"sha256": sha(data), "size": len(data)})
    conn.putrequest("PUT", f"/blobs/{sha(b'')}")
    conn.putheader("Authorization", f"Bearer {TOKEN}")
    conn.endheaders()
    assert conn.getresponse().status == 411
    conn.close()
    assert [b.sha256 for b in stored.iter_blobs()] == [sha(data)]


def test_listing_pages_in_address_order(server: BlobServer, client: HttpBlobBackend) -> None:
    digests = sorted(put(client, payload(10, seed=i)) for i in range(25))
    seen: list[str] = []
    after = ""
    while True:
        query = "/blobs?limit=10" + (f"&after={after}" if after else "")
        status, _, body = request(server.port, "GET", query)
        page = json.loads(body)
        assert status == 200
        seen += [blob["sha256"] for blob in page["blobs"]]
        if page["next"] is None:
            break
        after = page["next"]
    assert seen == digests
    assert sorted(b.sha256 for b in client.iter_blobs()) == digests


def test_too_large_upload_is_refused(
    serve: Callable[..., BlobServer], stored: FilesystemBlobBackend, connect: Callable[..., HttpBlobBackend]
) -> None:
    server = serve(max_blob_size=2 * MIB)
    big = payload(3 * MIB)
    status, _, body = request(server.port, "PUT", f"/blobs/{sha(big)}", big)  # refused before reading
    assert status == 413
    assert json.loads(body)["error"] == f"the body of {3 * MIB} bytes exceeds the limit of {2 * MIB} bytes"
    assert request(server.port, "PUT", f"/blobs/{sha(big[:MIB])}", big[:MIB])[0] == 201
    with pytest.raises(StorageError, match=f"more than the {2 * MIB} that http://127.0.0.1"):
        put(connect(server.port), big)  # the client asks first, sending nothing
    assert [b.sha256 for b in stored.iter_blobs()] == [sha(big[:MIB])]


# -- auth ------------------------------------------------------------------------------------------------


def test_missing_or_wrong_token(server: BlobServer, connect: Callable[..., HttpBlobBackend]) -> None:
    digest = sha(b"x")
    for token in (None, WRONG, TOKEN[:-1]):
        status, headers, _ = request(server.port, "GET", f"/blobs/{digest}", token=token)
        assert status == 401
        assert headers["WWW-Authenticate"].startswith("Bearer")
    assert (
        request(server.port, "GET", f"/blobs/{digest}", token=None, Authorization=f"bearer {TOKEN}")[0] == 404
    )
    assert (
        request(server.port, "GET", f"/blobs/{digest}", token=None, Authorization=f"Basic {TOKEN}")[0] == 401
    )

    calls: list[Callable[[HttpBlobBackend], object]] = [
        lambda client: client.exists(digest),
        lambda client: client.open(digest),
        lambda client: client.delete(digest),
        lambda client: list(client.iter_blobs()),
        lambda client: put(client, b"x"),
        lambda client: put(client, payload(2 * MIB)),  # asks HEAD first
    ]
    for token, state in ((None, "missing"), (WRONG, "wrong")):
        client = connect(server.port, token=token, setting="blobs.stores[2]")
        for call in calls:
            with pytest.raises(StorageError, match=rf"token is {state}.*blobs\.stores\[2\]\.token"):
                call(client)


def test_token_required_unless_anonymous_on_loopback(
    stored: FilesystemBlobBackend, serve: Callable[..., BlobServer], connect: Callable[..., HttpBlobBackend]
) -> None:
    with pytest.raises(ConfigError, match="needs a token"):
        BlobServer(stored, "127.0.0.1", 0)
    for host in ("0.0.0.0", "192.0.2.1", "example.org"):
        with pytest.raises(ConfigError, match="not a loopback address"):
            BlobServer(stored, host, 0, allow_anonymous=True)
    with pytest.raises(ConfigError, match="at least 16"):
        BlobServer(stored, "127.0.0.1", 0, token="short")
    with pytest.raises(ConfigError, match="printable"):
        BlobServer(stored, "127.0.0.1", 0, token="has a space in it, sadly")
    server = serve(token=None, allow_anonymous=True)
    client = connect(server.port, token=None)
    assert read_verified(client.open(put(client, b"anon")), sha(b"anon"), 4, "x") == b"anon"


def test_token_never_logged_or_shown(
    server: BlobServer, connect: Callable[..., HttpBlobBackend], server_log: pytest.LogCaptureFixture
) -> None:
    good, wrong = connect(server.port), connect(server.port, token=WRONG)
    put(good, b"logged")
    good.exists(sha(b"nope"))
    errors: list[str] = []
    for call in (lambda: wrong.exists(sha(b"x")), lambda: put(wrong, b"y")):
        with pytest.raises(StorageError) as caught:
            call()
        errors += [str(caught.value), repr(caught.value)]
    request(server.port, "GET", "/blobs/bad", token=WRONG)
    wait_until(lambda: len(server_log.records) >= 5, "the log lines")
    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in server_log.records]
    assert any('"status": 401' in line for line in lines)
    assert any('"method": "PUT"' in line and '"status": 201' in line for line in lines)
    internals = [str(vars(client)) + str(vars(client._transport)) for client in (good, wrong)]
    shown = [*lines, *errors, *internals, repr(good), repr(wrong), good.name, repr(server)]
    for text in shown:
        assert TOKEN not in text
        assert WRONG not in text


# -- failures --------------------------------------------------------------------------------------------


def test_client_disconnecting_mid_put_leaves_nothing(
    server: BlobServer, stored: FilesystemBlobBackend, server_log: pytest.LogCaptureFixture
) -> None:
    data = payload(3 * MIB, seed=2)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        head = (
            f"PUT /blobs/{sha(data)} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        sock.sendall(head.encode() + data[: MIB + MIB // 2])
    wait_until(lambda: logged(server_log, "PUT", 499), "the server to notice the disconnect")
    assert nothing_stored(stored)
    assert request(server.port, "PUT", f"/blobs/{sha(data)}", data)[0] == 201  # the server still serves


def test_stalled_upload_times_out_and_leaves_nothing(
    serve: Callable[..., BlobServer], stored: FilesystemBlobBackend, server_log: pytest.LogCaptureFixture
) -> None:
    server = serve(timeout=0.5)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            f"PUT /blobs/{sha(b'x' * 100)} HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Length: 100\r\n\r\nxxxx".encode()
        )
        wait_until(lambda: logged(server_log, "PUT", 499), "the server to give up on the upload")
        assert sock.recv(100) == b""  # closed without an answer
    assert nothing_stored(stored)


def test_corrupted_blob_detected_by_verified_read(
    server: BlobServer, stored: FilesystemBlobBackend, client: HttpBlobBackend
) -> None:
    data = payload(2 * MIB + 17, seed=8)
    digest = put(client, data)
    final = stored.root / digest[:2] / digest
    damaged = bytearray(data)
    damaged[MIB] ^= 0x01
    final.write_bytes(damaged)
    with pytest.raises(IntegrityError, match=digest):
        read_verified(client.open(digest), digest, len(data), "artifact")
    final.write_bytes(data[:-1])
    with pytest.raises(IntegrityError, match="ends after"):
        read_verified(client.open(digest), digest, len(data), "artifact")
    final.write_bytes(data)
    assert read_verified(client.open(digest), digest, len(data), "artifact") == data


def test_concurrent_clients_store_the_same_content_once(
    server: BlobServer, stored: FilesystemBlobBackend, connect: Callable[..., HttpBlobBackend], tmp_path: Path
) -> None:
    data = payload(3 * MIB, seed=3)
    shared = connect(server.port)
    own = [connect(server.port, staging_dir=tmp_path / f"staging-{i}") for i in range(4)]
    barrier = threading.Barrier(8)

    def writer(i: int) -> bool:
        client = own[i] if i < 4 else shared
        staged = client.stage([data])
        barrier.wait()
        client.publish(staged)
        client.discard(staged)
        return read_verified(client.open(staged.sha256), staged.sha256, len(data), "x") == data

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(writer, range(8)))
        # Distinct contents through one client from many threads: one connection pool per thread.
        digests = list(pool.map(lambda i: put(shared, payload(1000, seed=100 + i)), range(40)))
    assert sorted(b.sha256 for b in stored.iter_blobs()) == sorted({sha(data), *digests})
    assert stored.remove_stale_staging(far_future()) == 0
    assert all(client.remove_stale_staging(far_future()) == 0 for client in (shared, *own))


class FlakyProxy:
    """Answers the first ``refuse`` connections with 503 (Connection: close), pipes the rest to ``port``;
    with ``cut_after``, the first piped connection is cut after that many bytes from the server; with
    ``tls``, terminates TLS (the handshake happens in the accepting thread: fine for one client)."""

    def __init__(
        self, port: int, *, refuse: int = 0, cut_after: int | None = None, tls: ssl.SSLContext | None = None
    ) -> None:
        self.port, self.refuse, self.cut_after, self.tls = port, refuse, cut_after, tls
        self.refused = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if self.tls is not None:
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (OSError, ssl.SSLError):
                    conn.close()
                    continue
            if self.refused < self.refuse:
                self.refused += 1
                threading.Thread(target=self._refuse, args=(conn,), daemon=True).start()
            else:
                cut, self.cut_after = self.cut_after, None
                upstream = socket.create_connection(("127.0.0.1", self.port))
                threading.Thread(target=self._pipe, args=(conn, upstream, None), daemon=True).start()
                threading.Thread(target=self._pipe, args=(upstream, conn, cut), daemon=True).start()

    def _refuse(self, conn: socket.socket) -> None:
        with conn:
            received = b""
            while b"\r\n\r\n" not in received and (data := conn.recv(65536)):
                received += data
            conn.sendall(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )

    def _pipe(self, source: socket.socket, target: socket.socket, cut: int | None) -> None:
        sent = 0
        try:
            while data := source.recv(65536):
                if cut is not None and sent + len(data) > cut:
                    target.sendall(data[: cut - sent])
                    break
                target.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


def proxied(proxy: FlakyProxy, tmp_path: Path, **options: Any) -> HttpBlobBackend:
    return HttpBlobBackend(proxy.address, token=TOKEN, staging_dir=tmp_path / "proxied", **options)


def test_503_is_retried_with_backoff(
    server: BlobServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = FlakyProxy(server.port, refuse=3)
    client = proxied(proxy, tmp_path, delay=0.05, jitter=0.5, max_retries=3)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="objstore.blobs.http"):
        digest = put(client, b"through a flaky proxy")
    elapsed = time.monotonic() - started
    assert proxy.refused == 3
    assert elapsed >= (0.05 + 0.1 + 0.2) * 0.75  # 2**N * delay * (1 - jitter/2) for N = 0, 1, 2
    retries = [r.getMessage() for r in caplog.records if r.name == "objstore.blobs.http"]
    assert len(retries) == 3
    assert "503 Service Unavailable); retry 3 of 3" in retries[-1]
    assert all(TOKEN not in message for message in retries)
    assert read_verified(client.open(digest), digest, 21, "x") == b"through a flaky proxy"
    client.close()
    proxy.close()


def test_retries_give_up_with_a_storage_error(server: BlobServer, tmp_path: Path) -> None:
    proxy = FlakyProxy(server.port, refuse=100)
    client = proxied(proxy, tmp_path, delay=0.01, max_retries=2)
    with pytest.raises(StorageError, match=r"after 3 attempts \(last: 503 Service Unavailable\)"):
        client.exists(sha(b"x"))
    assert proxy.refused == 3
    proxy.close()
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        closed = HttpBlobBackend(f"127.0.0.1:{probe.getsockname()[1]}", delay=0.01, max_retries=1)
        with pytest.raises(StorageError, match=r"cannot reach .* after 2 attempts.*Connection"):
            closed.exists(sha(b"x"))


def test_download_resumes_after_a_broken_connection(
    server: BlobServer, client: HttpBlobBackend, tmp_path: Path, server_log: pytest.LogCaptureFixture
) -> None:
    data = payload(5 * MIB, seed=5)
    digest = put(client, data)
    proxy = FlakyProxy(server.port, cut_after=2 * MIB)
    reader = proxied(proxy, tmp_path, delay=0.01)
    assert read_verified(reader.open(digest), digest, len(data), "x") == data
    assert logged(server_log, "GET", 206)
    reader.close()
    proxy.close()


def test_not_a_blob_server(tmp_path: Path) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class NotFound(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    other = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    client = HttpBlobBackend(f"127.0.0.1:{other.server_address[1]}", staging_dir=tmp_path)
    with pytest.raises(StorageError, match=r"not an objstore blob server; check blobs\.stores\[0\]\.host"):
        client.exists(sha(b"x"))  # a plain 404 must not read as "missing"
    other.shutdown()
    other.server_close()


def test_server_without_deletes(
    serve: Callable[..., BlobServer], stored: FilesystemBlobBackend, connect: Callable[..., HttpBlobBackend]
) -> None:
    client = connect(serve(allow_delete=False).port)
    digest = put(client, b"kept for good")
    with pytest.raises(StorageError, match="405: this blob server does not delete content"):
        client.delete(digest)
    assert stored.exists(digest)


def test_https(server: BlobServer, tmp_path: Path) -> None:
    """The client over TLS, through a TLS-terminating proxy with a self-signed certificate."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    proxy = FlakyProxy(server.port, tls=server_side)
    port = proxy.address.rsplit(":", 1)[1]
    trusting = ssl.create_default_context(cafile=tmp_path / "cert.pem")
    client = HttpBlobBackend(
        f"localhost:{port}", protocol="https", token=TOKEN, ssl_context=trusting, staging_dir=tmp_path / "s"
    )
    assert client.name == f"https://localhost:{port}"
    data = payload(3 * MIB, seed=11)
    digest = put(client, data)
    assert read_verified(client.open(digest), digest, len(data), "x") == data
    untrusting = HttpBlobBackend(f"localhost:{port}", protocol="https", token=TOKEN)
    with pytest.raises(StorageError, match="cannot trust the certificate of https://localhost"):
        untrusting.exists(digest)  # at once: retrying cannot help
    client.close()
    proxy.close()


def test_missing_blob_and_stop_closes_connections(server: BlobServer, client: HttpBlobBackend) -> None:
    with pytest.raises(BlobMissing):
        client.open(sha(b"never"))
    assert client.stat(sha(b"never")) is None
    digest = put(client, b"kept alive")
    server.stop()  # the client's idle keep-alive connection is closed too
    with pytest.raises(StorageError, match="cannot reach"):
        HttpBlobBackend(f"127.0.0.1:{server.port}", token=TOKEN, delay=0.01, max_retries=0).exists(digest)


# -- the serve-blobs command -----------------------------------------------------------------------------

GROUP = """
import click
from objstore.cli.blob_server_cmd import serve_blobs
from objstore.cli.context import CliState
from objstore.cli.main import ObjstoreGroup

@click.group(cls=ObjstoreGroup)
@click.option("--config", default=None)
@click.pass_context
def group(ctx, config):
    ctx.obj = CliState(config=config)

group.add_command(serve_blobs)
"""

CONFIG = """\
[server]
storage_path = "data/objstore.db"
[object_store.sqlite]
path = "data/objects.db"
[secret_store.sqlite]
path = "data/secrets.db"
"""


def temporary_group() -> click.Group:
    """The command under a throwaway group (the real one registers it in objstore.cli.main)."""

    @click.group(cls=ObjstoreGroup)
    @click.option("--config", default=None)
    @click.pass_context
    def group(ctx: click.Context, config: str | None) -> None:
        ctx.obj = CliState(config=config)

    group.add_command(serve_blobs)
    return group


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "objstore.toml"
    path.write_text(CONFIG)
    return path


@pytest.mark.parametrize(
    ("args", "token", "code", "needle"),
    [
        (["--listen", "0.0.0.0:7777"], "", 3, "without a token"),
        (["--listen", "0.0.0.0:7777", "--token-file", "missing.txt"], "", 3, "cannot read --token-file"),
        (["--listen", "127.0.0.1:0"], "short", 3, "at least 16"),
        (["--listen", "nonsense"], "", 2, "HOST:PORT"),
    ],
)
def test_serve_blobs_refusals(config: Path, args: list[str], token: str, code: int, needle: str) -> None:
    env = {"OBJSTORE_BLOB_SERVER_TOKEN": token} if token else {}
    result = CliRunner().invoke(temporary_group(), ["--config", str(config), "serve-blobs", *args], env=env)
    assert result.exit_code == code, result.output
    assert needle in result.output
    assert "Traceback" not in result.output
    assert not (config.parent / "data").exists()  # refused before opening the store


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_blobs_process(config: Path, tmp_path: Path, signum: int) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    process = subprocess.Popen(
        [
            *(sys.executable, "-c", GROUP + "group.main(prog_name='objstore')", "--config", str(config)),
            *("serve-blobs", "--listen", "127.0.0.1:0", "--token-file", str(token_file)),
        ],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("OBJSTORE_")},
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        if not line.startswith("{"):
            process.kill()
            raise AssertionError(line + process.stderr.read())
        first = json.loads(line)
        assert first["message"].startswith("serving the blobs of filesystem:"), first
        client = HttpBlobBackend(f"127.0.0.1:{first['port']}", token=TOKEN, staging_dir=tmp_path / "c")
        data = payload(3 * MIB, seed=7)
        digest = put(client, data)
        assert read_verified(client.open(digest), digest, len(data), "x") == data
        assert (tmp_path / "data" / "blobs" / digest[:2] / digest).read_bytes() == data
        client.close()
        process.send_signal(signum)
        assert process.wait(timeout=30) == 0
        rest = process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    records = [first, *(json.loads(line) for line in rest.splitlines())]
    requests = [(r["method"], r["status"]) for r in records if "status" in r]
    assert requests == [("HEAD", 404), ("PUT", 201), ("GET", 200)]  # HEAD first: 3 MiB is worth a check
    assert records[-1]["message"] == "blob server stopped"
    assert TOKEN not in rest
