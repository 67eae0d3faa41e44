"""HttpBlobBackend against a real BlobServer over real sockets: the shared contract, the wire protocol,
auth, corruption and concurrent writers. Faults and retries: test_blobs_http_faults.py; the command:
test_cli_serve_blobs.py."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blob_http_support as support
import pytest
from blob_contract import MIB, BlobBackendContract, far_future, payload, sha
from blob_http_support import TOKEN, WRONG, nothing_stored, put, request, wait_until

from objstore.blobs.base import BlobBackend
from objstore.blobs.filesystem import FilesystemBlobBackend
from objstore.blobs.http import HttpBlobBackend
from objstore.blobs.http_server import BlobServer
from objstore.blobs.verify import read_verified
from objstore.cli.logs import JsonFormatter
from objstore.errors import ConfigError, IntegrityError, InvalidValue, StorageError

# The shared fixtures, found by pytest under these names.
client = support.client
connect = support.connect
serve = support.serve
server = support.server
server_log = support.server_log
stored = support.stored


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


# -- the wire protocol ---------------------------------------------------------------------------------------


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


def test_ipv6_loopback(stored: FilesystemBlobBackend, tmp_path: Path) -> None:
    try:
        server = BlobServer(stored, "::1", 0, token=None, allow_anonymous=True)
    except StorageError as error:
        pytest.skip(f"no IPv6 loopback here: {error}")
    with server:
        server.start()
        assert server.url == f"http://[::1]:{server.port}"
        client = HttpBlobBackend(f"[::1]:{server.port}", staging_dir=tmp_path / "staging")
        digest = put(client, b"over IPv6")
        assert read_verified(client.open(digest), digest, 9, "x") == b"over IPv6"
        client.close()


@pytest.mark.parametrize(
    ("host", "options"),
    [
        ("", {}),
        ("http://server:7777", {}),
        ("server:port", {}),
        ("server:7777/blobs", {}),
        ("user@server:7777", {}),
        ("server:7777", {"protocol": "ftp"}),
        ("server:7777", {"timeout": 0}),
        ("server:7777", {"max_retries": -1}),
        ("server:7777", {"jitter": 3}),
    ],
)
def test_client_settings_checked(host: str, options: dict[str, object]) -> None:
    with pytest.raises(InvalidValue):
        HttpBlobBackend(host, **options)  # type: ignore[arg-type]


# -- auth ----------------------------------------------------------------------------------------------------


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


# -- damage and concurrency ----------------------------------------------------------------------------------


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


def test_objstore_with_an_http_blob_store(
    server: BlobServer, stored: FilesystemBlobBackend, tmp_path: Path
) -> None:
    """A worker's store keeps its content on the blob server, through the engine's own wiring."""
    from objstore.config import Settings
    from objstore.engine import ObjStore

    http_store = {"type": "http", "host": f"127.0.0.1:{server.port}", "token": TOKEN}
    settings = Settings.for_directory(tmp_path / "worker", blobs={"threshold": 0, "stores": [http_store]})
    data = payload(3 * MIB, seed=13)
    with ObjStore(settings) as worker:
        assert TOKEN not in repr(worker.blob_backend)
        objects = worker.pipeline("default", "build").objects
        objects.put("deps.tar", data)
        assert objects.get("deps.tar") == data
        with objects.open("deps.tar") as reader:
            assert reader.read() == data
        assert [blob.sha256 for blob in stored.iter_blobs()] == [sha(data)]
        assert not (tmp_path / "worker" / "blobs").exists()
        report = worker.check(verify=True)
        assert report.ok, report
        final = stored.root / sha(data)[:2] / sha(data)
        final.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
        with pytest.raises(IntegrityError, match="run `objstore check`"):
            objects.get("deps.tar")
