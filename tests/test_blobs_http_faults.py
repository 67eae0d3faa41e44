"""HttpBlobBackend and BlobServer when things go wrong: clients that vanish or stall mid-upload, 503s and
refused connections (retries with backoff), downloads cut mid-body (resumed), TLS, servers that are not
blob servers, and stopping with connections open."""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import blob_http_support as support
import pytest
from blob_contract import MIB, payload, sha
from blob_http_support import TOKEN, logged, nothing_stored, put, request, wait_until

from objstore.blobs.base import BlobMissing
from objstore.blobs.filesystem import FilesystemBlobBackend
from objstore.blobs.http import HttpBlobBackend
from objstore.blobs.http_server import BlobServer
from objstore.blobs.verify import read_verified
from objstore.errors import StorageError

# The shared fixtures, found by pytest under these names.
client = support.client
connect = support.connect
serve = support.serve
server = support.server
server_log = support.server_log
stored = support.stored


# -- uploads that do not finish ------------------------------------------------------------------------------


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


def test_stop_cuts_idle_connections_and_lets_uploads_finish(
    server: BlobServer, client: HttpBlobBackend, stored: FilesystemBlobBackend
) -> None:
    with pytest.raises(BlobMissing):
        client.open(sha(b"never"))
    put(client, b"kept alive")  # leaves an idle keep-alive connection behind
    data = payload(2 * MIB, seed=12)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        head = (
            f"PUT /blobs/{sha(data)} HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        sock.sendall(head.encode() + data[:MIB])
        wait_until(lambda: any((stored.root / ".staging").iterdir()), "the upload to be staged")
        stopping = threading.Thread(target=server.stop)
        started = time.monotonic()
        stopping.start()
        time.sleep(0.3)
        assert stopping.is_alive()  # waiting for the upload, not for the idle connection
        sock.sendall(data[MIB:])
        answer = b""
        while chunk := sock.recv(4096):  # until the server closes: it is stopping
            answer += chunk
        stopping.join(timeout=10)
    assert not stopping.is_alive()
    assert time.monotonic() - started < 5
    assert answer.startswith(b"HTTP/1.1 201 ")
    assert b"Connection: close" in answer
    assert stored.exists(sha(data))
    with pytest.raises(StorageError, match="cannot reach"):
        HttpBlobBackend(f"127.0.0.1:{server.port}", token=TOKEN, delay=0.01, max_retries=0).exists(sha(data))
