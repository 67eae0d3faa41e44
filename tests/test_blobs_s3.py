"""S3BlobBackend: the shared blob contract (on moto, and on an external server when configured), layout,
multipart uploads, reading, corruption, request signing and credential hygiene.

Everything runs against a real S3 server (moto in server mode) over HTTP. Failures (retries, timeouts, a
writer killed mid-upload) are in test_blobs_s3_faults.py.
"""

from __future__ import annotations

import gc
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from blob_contract import MIB, BlobBackendContract, chunked, far_future, payload, sha
from s3_server import (  # the *_fixture names register the fixtures without the suffix
    TARGETS,
    FaultProxy,
    S3Target,
    boto_client,
    bucket_fixture,  # noqa: F401
    empty_bucket,
    external_target_fixture,  # noqa: F401
    keys,
    make_backend,
    moto_target_fixture,  # noqa: F401
    new_bucket,
    no_stray_read_ahead_fixture,  # noqa: F401
    proxy_fixture,  # noqa: F401
    put,
    read_ahead_threads,
    s3_fixture,  # noqa: F401
    store_fixture,  # noqa: F401
    uploads,
)

from objstore.blobs.base import BlobBackend, BlobMissing
from objstore.blobs.s3 import READ_AHEAD, READ_CHUNK, S3BlobBackend
from objstore.blobs.s3_reader import THREAD_NAME, S3Reader
from objstore.blobs.s3_uploads import EMPTY_SHA256, Credentials, sign_v4
from objstore.blobs.verify import read_verified
from objstore.errors import IntegrityError, InvalidValue, StorageError


class TestS3Contract(BlobBackendContract):
    @pytest.fixture(params=TARGETS)
    def backend(self, request: pytest.FixtureRequest) -> Iterator[BlobBackend]:
        target: S3Target | None = request.getfixturevalue(f"{request.param}_target")
        assert target is not None
        bucket = new_bucket(target)
        store = make_backend(target, bucket)
        yield store
        store.close()
        empty_bucket(target, bucket)


# -- layout ---------------------------------------------------------------------------------------------


def test_layout_and_name(store: S3BlobBackend, s3: Any, bucket: str, moto_target: S3Target) -> None:
    assert store.name == f"s3://{bucket}/blobs ({moto_target.endpoint})"
    staged = store.stage([b"hello"])
    assert staged.token.startswith("blobs/.staging/")
    assert keys(s3, bucket) == [staged.token]
    store.publish(staged)
    assert keys(s3, bucket) == sorted([staged.token, f"blobs/{staged.sha256[:2]}/{staged.sha256}"])
    store.discard(staged)
    assert keys(s3, bucket) == [f"blobs/{staged.sha256[:2]}/{staged.sha256}"]


def test_empty_prefix(moto_target: S3Target, s3: Any, bucket: str) -> None:
    backend = make_backend(moto_target, bucket, prefix="")
    assert backend.name == f"s3://{bucket}/ ({moto_target.endpoint})"
    digest = put(backend, b"at the root")
    assert keys(s3, bucket) == [f"{digest[:2]}/{digest}"]
    assert [b.sha256 for b in backend.iter_blobs()] == [digest]
    leftover = backend.stage([b"left"])
    assert backend.remove_stale_staging(far_future()) == 1
    assert not backend.exists(leftover.sha256)


def test_iter_blobs_skips_foreign_keys(store: S3BlobBackend, s3: Any, bucket: str) -> None:
    good = put(store, b"good")
    wrong_shard = ("1" if good.startswith("0") else "0") * 64
    for key in (
        f"blobs/{good[:2]}/{good.upper()}",
        f"blobs/{good[:2]}/{good}.tmp",
        f"blobs/{good[:2]}/{wrong_shard}",
        f"blobs/{good}",
        "blobs/README",
        f"blobs/zz/{'f' * 64}",
        f"other/{good[:2]}/{good}",
        f"blobsx/{good[:2]}/{good}",
        "blobs/.staging/not-a-token",
    ):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    staged = store.stage([b"staged"])
    assert [b.sha256 for b in store.iter_blobs()] == [good]
    # Only our own staging keys are leftovers; a foreign object under .staging is left alone.
    assert store.remove_stale_staging(far_future()) == 1
    assert "blobs/.staging/not-a-token" in keys(s3, bucket)
    store.discard(staged)


def test_forged_token_refused(store: S3BlobBackend, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="victim", Body=b"do not touch")
    real = store.stage([b"do not touch"])
    for token in ("victim", "blobs/.staging/../../victim", "blobs/.staging/" + "A" * 32, ""):
        forged = type(real)(real.sha256, real.size, token)
        with pytest.raises(InvalidValue):
            store.publish(forged)
        with pytest.raises(InvalidValue):
            store.discard(forged)
    assert "victim" in keys(s3, bucket)
    assert not store.exists(real.sha256)
    store.discard(real)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"part_size": 4 * MIB},
        {"part_size": 6 * 1024**3},
        {"max_concurrency": 0},
        {"timeout": 0},
        {"max_retries": -1},
        {"delay": -0.1},
        {"jitter": 1.5},
        {"prefix": "a/../b"},
        {"prefix": "blobs/.staging"},
        {"endpoint": "127.0.0.1:9000"},
    ],
)
def test_invalid_settings(moto_target: S3Target, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidValue):
        make_backend(moto_target, "some-bucket", **kwargs)


# -- multipart ------------------------------------------------------------------------------------------


def test_multipart_round_trip(store: S3BlobBackend, s3: Any, bucket: str) -> None:
    assert store.part_size == 8 * MIB
    data = payload(8 * MIB * 2 + 12345, seed=11)
    staged = store.stage(chunked(data, [MIB, 7919, 3 * MIB + 1]))
    assert (staged.sha256, staged.size) == (sha(data), len(data))
    # A multipart object's ETag ends in "-<number of parts>".
    assert s3.head_object(Bucket=bucket, Key=staged.token)["ETag"].strip('"').endswith("-3")
    assert not store.exists(staged.sha256)
    store.publish(staged)
    store.discard(staged)
    assert read_verified(store.open(staged.sha256), staged.sha256, staged.size, "big") == data
    assert uploads(s3, bucket) == []


def test_value_of_exactly_one_part_is_one_put(store: S3BlobBackend, s3: Any, bucket: str) -> None:
    data = payload(store.part_size, seed=12)
    staged = store.stage(chunked(data, [MIB]))
    assert "-" not in s3.head_object(Bucket=bucket, Key=staged.token)["ETag"]
    store.discard(staged)


def test_iterator_error_mid_multipart_aborts_the_upload(store: S3BlobBackend, s3: Any, bucket: str) -> None:
    class Boom(Exception):
        pass

    error = Boom("caller failed after some parts")

    def chunks() -> Iterator[bytes]:
        for i in range(20):
            yield payload(MIB, seed=i)
        raise error

    with pytest.raises(Boom) as caught:
        store.stage(chunks())
    assert caught.value is error
    assert uploads(s3, bucket) == [] and keys(s3, bucket) == []


def test_non_bytes_chunk_mid_multipart(store: S3BlobBackend, s3: Any, bucket: str) -> None:
    with pytest.raises(InvalidValue):
        store.stage([payload(9 * MIB), "text"])  # type: ignore[list-item]
    assert uploads(s3, bucket) == [] and keys(s3, bucket) == []


def test_publish_past_the_copy_limit_streams(store: S3BlobBackend, s3: Any, bucket: str) -> None:
    data = payload(6 * MIB + 5, seed=13)
    staged = store.stage([data])
    store.max_copy_bytes = MIB  # stands in for S3's 5 GiB CopyObject limit
    store.publish(staged)
    assert read_verified(store.open(staged.sha256), staged.sha256, staged.size, "streamed") == data
    # Damaged staging bytes are caught on the way and nothing is published.
    assert store.delete(staged.sha256)
    s3.put_object(Bucket=bucket, Key=staged.token, Body=data[:-1] + b"\0")
    with pytest.raises(IntegrityError):
        store.publish(staged)
    assert not store.exists(staged.sha256)
    assert uploads(s3, bucket) == []
    store.discard(staged)


# -- reading --------------------------------------------------------------------------------------------


def test_reader_is_file_like(store: S3BlobBackend) -> None:
    data = payload(3 * MIB + 1, seed=18)
    digest = put(store, data)
    with store.open(digest) as reader:
        assert reader.readable() and not reader.seekable()
        buf = bytearray(1000)
        assert reader.readinto(buf) == 1000 and bytes(buf) == data[:1000]  # type: ignore[attr-defined]
        rest = reader.read()
    assert rest == data[1000:]
    with pytest.raises(ValueError):
        reader.read(1)


def test_corrupted_object_detected(store: S3BlobBackend, s3: Any, bucket: str) -> None:
    data = payload(2 * MIB + 17, seed=8)
    digest = put(store, data)
    key = f"blobs/{digest[:2]}/{digest}"
    damaged = bytearray(data)
    damaged[MIB] ^= 0x01
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(damaged))
    with pytest.raises(IntegrityError, match=digest):
        read_verified(store.open(digest), digest, len(data), "obj")
    s3.put_object(Bucket=bucket, Key=key, Body=data[:-1])
    with pytest.raises(IntegrityError, match="ends after"):
        read_verified(store.open(digest), digest, len(data), "obj")
    s3.delete_object(Bucket=bucket, Key=key)
    with pytest.raises(BlobMissing):
        store.open(digest)


# -- reading ahead --------------------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_read_ahead_is_bounded_and_stops_on_close(store: S3BlobBackend) -> None:
    data = payload(24 * MIB, seed=19)
    digest = put(store, data)
    assert read_ahead_threads() == []
    reader = store.open(digest)
    assert isinstance(reader, S3Reader)
    assert reader.read(MIB) == data[:MIB]
    [thread] = read_ahead_threads()
    # The thread fills its queue (READ_AHEAD chunks of at least READ_CHUNK bytes), then waits for room.
    assert wait_for(lambda: reader.buffered >= READ_AHEAD * READ_CHUNK)
    time.sleep(0.3)
    # obstore's chunks are at least READ_CHUNK and less than twice that (see the sizes it joins).
    assert reader.buffered < (READ_AHEAD + 1) * 2 * READ_CHUNK
    assert thread.is_alive()
    reader.close()
    thread.join(timeout=5)
    assert not thread.is_alive() and read_ahead_threads() == []
    with pytest.raises(ValueError):
        reader.read(1)


def test_read_ahead_thread_ends_with_the_object(store: S3BlobBackend) -> None:
    data = payload(5 * MIB + 3, seed=20)
    digest = put(store, data)
    reader = store.open(digest)
    chunks = [reader.read(READ_CHUNK)]
    [thread] = read_ahead_threads()
    while chunk := reader.read(READ_CHUNK):
        chunks.append(chunk)
    assert b"".join(chunks) == data
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert reader.read(1) == b""  # the end stays the end
    reader.close()


def test_dropped_reader_stops_its_thread(store: S3BlobBackend) -> None:
    digest = put(store, payload(24 * MIB, seed=21))
    reader = store.open(digest)
    reader.read(1)
    [thread] = read_ahead_threads()
    del reader  # never closed: the thread holds no reference to it, so collecting it closes it
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_reads_in_its_own_thread_when_none_can_be_started(
    store: S3BlobBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = payload(5 * MIB, seed=26)
    digest = put(store, data)

    class NoReadAhead(threading.Thread):
        def start(self) -> None:
            if self.name == THREAD_NAME:
                raise RuntimeError("can't start new thread")  # what a process at its limit gets
            super().start()

    monkeypatch.setattr(threading, "Thread", NoReadAhead)
    assert read_verified(store.open(digest), digest, len(data), "obj") == data
    assert read_ahead_threads() == []


def test_small_objects_are_read_without_a_thread(store: S3BlobBackend) -> None:
    data = payload(2 * READ_CHUNK, seed=22)
    digest = put(store, data)
    with store.open(digest) as reader:
        first = reader.read(10)
        assert read_ahead_threads() == []
        assert first + reader.read() == data


# -- signing and credentials --------------------------------------------------------------------------


@pytest.mark.parametrize("target_name", TARGETS)
def test_signed_cleanup_requests(request: pytest.FixtureRequest, target_name: str) -> None:
    # On the external server this checks the hand-signed List/ListParts/Abort requests for real.
    target: S3Target = request.getfixturevalue(f"{target_name}_target")
    name = new_bucket(target)
    try:
        client = boto_client(target)
        backend = make_backend(target, name)
        upload = client.create_multipart_upload(Bucket=name, Key="blobs/.staging/" + "2" * 32)
        client.upload_part(
            Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"], PartNumber=1, Body=b"x"
        )
        assert backend.remove_stale_staging(far_future()) == 1
        assert uploads(client, name) == []
    finally:
        empty_bucket(target, name)


SECRET = "wJalrXUtnFEMI-never-shown-anywhere-0001"
ACCESS = "AKIANEVERSHOWNANYWHERE"
TOKEN = "session-token-never-shown-anywhere-0001"


def test_credentials_from_the_environment(
    moto_target: S3Target, bucket: str, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_target.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_target.secret_key)
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    backend = S3BlobBackend(bucket, endpoint=moto_target.endpoint, delay=0.01)
    assert backend.region == "eu-west-3"
    digest = put(backend, b"signed with the environment's keys")
    assert backend.exists(digest)
    # The hand-signed cleanup requests find the same keys.
    s3.create_multipart_upload(Bucket=bucket, Key=".staging/" + "3" * 32)
    assert backend.remove_stale_staging(far_future()) == 1
    assert uploads(s3, bucket) == []


def test_credentials_never_appear(moto_target: S3Target, bucket: str, proxy: FaultProxy) -> None:
    backend = S3BlobBackend(
        bucket,
        endpoint=proxy.endpoint,
        access_key_id=ACCESS,
        secret_access_key=SECRET,
        session_token=TOKEN,
        max_retries=1,
        delay=0.01,
        timeout=1.0,
    )
    texts = [repr(backend), str(backend), backend.name, repr(Credentials(ACCESS, SECRET, TOKEN))]
    failures: list[BaseException] = []
    for status in (403, 500):
        proxy.fail_next(10, status)
        with pytest.raises(StorageError) as caught:
            backend.stage([b"x"])
        failures.append(caught.value)
    proxy.reset()
    proxy.stall()
    with pytest.raises(StorageError) as caught:
        backend.exists(sha(b"x"))
    failures.append(caught.value)
    proxy.release()
    missing = S3BlobBackend(
        "no-such-bucket-here",
        endpoint=proxy.endpoint,
        access_key_id=ACCESS,
        secret_access_key=SECRET,
        session_token=TOKEN,
        max_retries=0,
    )
    with pytest.raises(StorageError) as caught:
        missing.stage([b"x"])
    failures.append(caught.value)
    for exc in failures:
        texts += [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    for text in texts:
        for secret in (SECRET, ACCESS, TOKEN):
            assert secret not in text


def test_sign_v4_matches_the_aws_examples() -> None:
    # The two header-signing examples of AWS's "Signature Calculations for the Authorization Header".
    creds = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    when = datetime(2013, 5, 24, tzinfo=UTC)
    common: dict[str, Any] = {
        "host": "examplebucket.s3.amazonaws.com",
        "credentials": creds,
        "region": "us-east-1",
        "when": when,
    }
    listing = sign_v4(method="GET", path="/", query={"max-keys": "2", "prefix": "J"}, headers={}, **common)
    assert listing["authorization"].endswith(
        "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
    )
    ranged = sign_v4(method="GET", path="/test.txt", query={}, headers={"Range": "bytes=0-9"}, **common)
    assert ranged["authorization"].endswith(
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )
    assert "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date," in ranged["authorization"]


def test_sign_v4_matches_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.parse

    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials as BotoCredentials

    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: when.replace(tzinfo=None))
    for method, path, query in [
        ("DELETE", "/bkt/blobs/.staging/ab12", {"uploadId": "x y+z/=~"}),
        ("GET", "/bkt", {"uploads": "", "prefix": "blobs/.staging/"}),
        ("GET", "/bkt/a b/ü~x", {}),
    ]:
        url = "http://127.0.0.1:9000" + urllib.parse.quote(path)
        if query:
            url += "?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
        request = AWSRequest(method=method, url=url, headers={"X-Amz-Content-SHA256": EMPTY_SHA256})
        botocore.auth.S3SigV4Auth(BotoCredentials("AK", "SK", "TOK"), "s3", "eu-west-1").add_auth(request)
        ours = sign_v4(
            method=method,
            host="127.0.0.1:9000",
            path=path,
            query=query,
            headers={},
            credentials=Credentials("AK", "SK", "TOK"),
            region="eu-west-1",
            when=when,
        )
        assert ours["authorization"] == request.headers["Authorization"]
