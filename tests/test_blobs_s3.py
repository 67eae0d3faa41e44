"""S3BlobBackend: the shared blob contract (moto, and an external server when configured), plus retries,
timeouts, multipart uploads, a writer killed mid-upload, corruption and credential hygiene.

Everything runs against a real S3 server (moto in server mode) over HTTP; faults come from a proxy that
sits between the backend and moto (``s3_server.FaultProxy``), never from patching the backend.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from blob_contract import MIB, BlobBackendContract, chunked, far_future, payload, sha
from s3_server import (  # the *_fixture imports register the fixtures moto_target and external_target
    FaultProxy,
    S3Target,
    boto_client,
    empty_bucket,
    external_target_fixture,  # noqa: F401
    moto_target_fixture,  # noqa: F401
    new_bucket,
)

from objstore.blobs.base import BlobBackend, BlobMissing
from objstore.blobs.s3 import S3BlobBackend
from objstore.blobs.s3_retry import RetryPolicy
from objstore.blobs.s3_uploads import EMPTY_SHA256, Credentials, sign_v4
from objstore.blobs.verify import read_verified
from objstore.errors import IntegrityError, InvalidValue, StorageError

ROOT = Path(__file__).resolve().parent.parent
# The external server joins the contract suite only when configured (no skipped duplicates otherwise).
TARGETS = ["moto"] + (["external"] if os.environ.get("OBJSTORE_TEST_S3_ENDPOINT") else [])
FAST = {"delay": 0.01, "jitter": 0.5}  # keep retry waits short in tests


def make_backend(target: S3Target, bucket: str, endpoint: str | None = None, **kwargs: Any) -> S3BlobBackend:
    options: dict[str, Any] = {"prefix": "blobs", **FAST, **kwargs}
    return S3BlobBackend(
        bucket,
        endpoint=endpoint or target.endpoint,
        region=target.region,
        access_key_id=target.access_key,
        secret_access_key=target.secret_key,
        **options,
    )


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


# -- fixtures for the rest ---------------------------------------------------------------------------------


@pytest.fixture
def bucket(moto_target: S3Target) -> Iterator[str]:
    name = new_bucket(moto_target)
    yield name
    empty_bucket(moto_target, name)


@pytest.fixture
def s3(moto_target: S3Target) -> Any:
    """boto3, to see what the server really holds."""
    return boto_client(moto_target)


@pytest.fixture
def store(moto_target: S3Target, bucket: str) -> S3BlobBackend:
    return make_backend(moto_target, bucket)


@pytest.fixture
def proxy(moto_target: S3Target) -> Iterator[FaultProxy]:
    fault = FaultProxy(moto_target.endpoint)
    yield fault
    fault.close()


def keys(s3: Any, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def content_keys(s3: Any, bucket: str) -> list[str]:
    return [k for k in keys(s3, bucket) if "/.staging/" not in k]


def uploads(s3: Any, bucket: str) -> list[dict[str, Any]]:
    return list(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def put(backend: S3BlobBackend, data: bytes) -> str:
    staged = backend.stage([data])
    try:
        backend.publish(staged)
    finally:
        backend.discard(staged)
    return staged.sha256


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


# -- retries --------------------------------------------------------------------------------------------


def test_retry_policy_waits() -> None:
    rng = random.Random(1)
    policy = RetryPolicy(max_retries=7, delay=0.1, jitter=0.5)
    for retry in range(1, 8):
        base = 2 ** (retry - 1) * 0.1
        waits = [policy.wait(retry, rng) for _ in range(200)]
        assert base * 0.75 <= min(waits) and max(waits) <= base * 1.25
        assert max(waits) - min(waits) > base * 0.4  # really spread over the band
    assert [RetryPolicy(3, 0.2, 0.0).wait(r, rng) for r in (1, 2, 3)] == pytest.approx([0.2, 0.4, 0.8])
    # NativeLink's example: max_retries 7, delay 0.1, jitter 0.5 -> 9.525 s to 15.875 s in total
    # (its table counts 8 waits, the first being 0 ms; ours are the 7 after the first attempt).
    assert policy.max_total_wait() == pytest.approx(0.1 * 127 * 1.25)
    config = policy.obstore_config(timeout=30)
    assert config["max_retries"] == 7
    assert config["backoff"]["init_backoff"] == timedelta(seconds=0.1)
    assert config["retry_timeout"] == timedelta(seconds=30)


@pytest.mark.parametrize("status", [500, 503])
def test_transient_errors_are_retried(
    moto_target: S3Target, bucket: str, proxy: FaultProxy, s3: Any, status: int
) -> None:
    backend = make_backend(moto_target, bucket, endpoint=proxy.endpoint, max_retries=4)
    proxy.fail_next(3, status)
    staged = backend.stage([b"worth retrying"])
    assert proxy.count(status=status) == 3
    assert [s.method for s in proxy.seen[:4]] == ["PUT"] * 4  # the same PUT, four times
    proxy.fail_next(2, status)  # HEAD of the content address, then the copy
    backend.publish(staged)
    backend.discard(staged)
    assert proxy.count(status=status) == 5
    assert content_keys(s3, bucket) == [f"blobs/{staged.sha256[:2]}/{staged.sha256}"]
    proxy.fail_next(4, status)
    assert read_verified(backend.open(staged.sha256), staged.sha256, staged.size, "x") == b"worth retrying"
    assert proxy.count(status=status) == 9


def test_retry_waits_follow_the_policy(moto_target: S3Target, bucket: str, proxy: FaultProxy) -> None:
    backend = make_backend(moto_target, bucket, endpoint=proxy.endpoint, max_retries=3, delay=0.2, jitter=0.0)
    proxy.fail_next(3)
    start = time.monotonic()
    backend.discard(backend.stage([b"x"]))
    elapsed = time.monotonic() - start
    assert 0.2 + 0.4 + 0.8 <= elapsed < 1.4 + 1.0


def test_multipart_requests_are_retried(
    moto_target: S3Target, bucket: str, proxy: FaultProxy, s3: Any
) -> None:
    backend = make_backend(moto_target, bucket, endpoint=proxy.endpoint, part_size=5 * MIB)
    data = payload(12 * MIB, seed=14)

    def chunks() -> Iterator[bytes]:
        for i, chunk in enumerate(chunked(data, [MIB])):
            if i == 7:
                proxy.fail_next(2)  # parts in flight meet the errors
            yield chunk

    proxy.fail_next(2)  # the CreateMultipartUpload, twice
    staged = backend.stage(chunks())
    failed = [s for s in proxy.seen if s.status == 503]
    assert [s.method for s in failed] == ["POST", "POST", "PUT", "PUT"]
    assert proxy.count(method="PUT", status=200) == 3  # all three parts made it in the end
    backend.publish(staged)
    backend.discard(staged)
    assert read_verified(backend.open(staged.sha256), staged.sha256, staged.size, "x") == data
    assert uploads(s3, bucket) == []


def test_gives_up_after_max_retries(moto_target: S3Target, bucket: str, proxy: FaultProxy, s3: Any) -> None:
    backend = make_backend(moto_target, bucket, endpoint=proxy.endpoint, max_retries=2)
    proxy.fail_next(100)
    with pytest.raises(StorageError) as caught:
        backend.stage([b"never stored"])
    message = str(caught.value)
    assert proxy.count(status=503) == 3
    assert "still failing after 3 attempts" in message
    assert "HTTP 503" in message and "SlowDown" in message
    assert bucket in message and proxy.endpoint in message
    assert caught.value.errno == errno.EIO
    proxy.reset()
    assert keys(s3, bucket) == [] and not backend.exists(sha(b"never stored"))


def test_publish_gives_up_and_leaves_nothing_visible(
    moto_target: S3Target, bucket: str, proxy: FaultProxy, s3: Any
) -> None:
    backend = make_backend(moto_target, bucket, endpoint=proxy.endpoint, max_retries=1)
    staged = backend.stage([b"staged fine"])
    proxy.fail_next(100, 500)
    with pytest.raises(StorageError, match="still failing after 2 attempts"):
        backend.publish(staged)
    proxy.reset()
    assert content_keys(s3, bucket) == []
    backend.publish(staged)  # works once the server is back
    backend.discard(staged)
    assert backend.exists(staged.sha256)


def test_failed_multipart_upload_is_cleaned_up(
    moto_target: S3Target, bucket: str, proxy: FaultProxy, s3: Any
) -> None:
    backend = make_backend(moto_target, bucket, endpoint=proxy.endpoint, part_size=5 * MIB, max_retries=2)
    data = payload(11 * MIB, seed=15)
    staged_before = backend.stage([b"x"])  # a healthy first request, so the failure below is mid-upload
    proxy.reset()

    def chunks() -> Iterator[bytes]:
        for i, chunk in enumerate(chunked(data, [MIB])):
            if i == 6:
                proxy.fail_next(1000)  # the server goes down after the first part is on its way
            yield chunk

    with pytest.raises(StorageError, match="still failing"):
        backend.stage(chunks())
    proxy.reset()
    assert content_keys(s3, bucket) == []
    # obstore's abort may itself have hit the outage; housekeeping removes whatever is left.
    backend.discard(staged_before)
    backend.remove_stale_staging(far_future())
    assert uploads(s3, bucket) == [] and keys(s3, bucket) == []


def test_access_denied_is_not_retried(moto_target: S3Target, bucket: str, proxy: FaultProxy) -> None:
    backend = make_backend(moto_target, bucket, endpoint=proxy.endpoint)
    proxy.fail_next(1, 403)
    with pytest.raises(StorageError, match="access denied: check the credentials") as caught:
        backend.stage([b"x"])
    assert caught.value.errno == errno.EACCES
    assert proxy.count() == 1


def test_missing_bucket(moto_target: S3Target) -> None:
    backend = make_backend(moto_target, "no-such-bucket-here")
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist"):
        backend.stage([b"x"])
    with pytest.raises(StorageError, match="does not exist"):
        list(backend.iter_blobs())


def test_unreachable_endpoint(moto_target: S3Target) -> None:
    backend = make_backend(moto_target, "bucket", endpoint="http://127.0.0.1:9", max_retries=1)
    with pytest.raises(StorageError, match="still failing after 2 attempts"):
        backend.exists(sha(b"x"))


# -- timeouts -------------------------------------------------------------------------------------------


def test_stalled_server_times_out(moto_target: S3Target, bucket: str, proxy: FaultProxy, s3: Any) -> None:
    backend = make_backend(moto_target, bucket, endpoint=proxy.endpoint, timeout=1.0)
    digest = put(backend, b"stored before the stall")
    proxy.stall()
    start = time.monotonic()
    with pytest.raises(StorageError, match="did not answer within 1 s") as caught:
        backend.stage([b"stalled"])
    assert time.monotonic() - start < 2.5
    assert caught.value.errno == errno.ETIMEDOUT
    start = time.monotonic()
    with pytest.raises(StorageError, match="did not answer within 1 s"):
        backend.open(digest)
    assert time.monotonic() - start < 2.5
    proxy.release()
    assert content_keys(s3, bucket) == [f"blobs/{digest[:2]}/{digest}"]
    assert not backend.exists(sha(b"stalled"))


def test_stalled_server_fails_a_multipart_upload(
    moto_target: S3Target, bucket: str, proxy: FaultProxy, s3: Any
) -> None:
    backend = make_backend(moto_target, bucket, endpoint=proxy.endpoint, timeout=1.0, part_size=5 * MIB)
    data = payload(11 * MIB, seed=16)

    def chunks() -> Iterator[bytes]:
        for i, chunk in enumerate(chunked(data, [MIB])):
            if i == 6:
                proxy.stall()
            yield chunk

    start = time.monotonic()
    with pytest.raises(StorageError):
        backend.stage(chunks())
    # A part that timed out is not retried; the abort that follows meets the stall too (RetryPolicy).
    assert time.monotonic() - start < 3.0
    proxy.reset()
    assert content_keys(s3, bucket) == []
    backend.remove_stale_staging(far_future())
    assert uploads(s3, bucket) == [] and keys(s3, bucket) == []


# -- reading --------------------------------------------------------------------------------------------


def test_read_resumes_after_a_dropped_connection(
    moto_target: S3Target, bucket: str, proxy: FaultProxy
) -> None:
    backend = make_backend(moto_target, bucket, endpoint=proxy.endpoint)
    data = payload(5 * MIB + 3, seed=17)
    digest = put(backend, data)
    proxy.reset()
    proxy.cut_next_gets(2, after=MIB + 7)
    assert read_verified(backend.open(digest), digest, len(data), "x") == data
    gets = [s for s in proxy.seen if s.method == "GET"]
    assert len(gets) == 3 and gets[0].range is None
    # Each retry asks for the rest, from where the reader got to (a chunk boundary it had received).
    resumed = [int(s.range.removeprefix("bytes=").removesuffix("-")) for s in gets[1:] if s.range]
    assert len(resumed) == 2 and 0 < resumed[0] < resumed[1] <= 2 * (MIB + 7)


def test_reader_is_file_like(store: S3BlobBackend) -> None:
    data = payload(3 * MIB + 1, seed=18)
    digest = put(store, data)
    with store.open(digest) as reader:
        assert reader.readable() and not reader.seekable()
        buf = bytearray(1000)
        assert reader.readinto(buf) == 1000 and bytes(buf) == data[:1000]
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


# -- a writer killed mid-upload ----------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import sys, time
    from objstore.blobs.s3 import S3BlobBackend

    endpoint, bucket, access, secret = sys.argv[1:5]
    backend = S3BlobBackend(bucket, prefix="blobs", endpoint=endpoint, access_key_id=access,
                            secret_access_key=secret, part_size=5 << 20, max_concurrency=2)
    block = bytes(range(256)) * 4096  # 1 MiB

    def slowly():
        for i in range(200):  # 200 MiB at ~20 MiB/s: killed long before the end
            yield block[:-1] + bytes([i % 256])
            time.sleep(0.05)

    backend.stage(slowly())
    print("finished", flush=True)
    """
)


def test_writer_killed_mid_multipart_upload(moto_target: S3Target, bucket: str, s3: Any) -> None:
    args = [moto_target.endpoint, bucket, moto_target.access_key, moto_target.secret_key]
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = uploads(s3, bucket)
            if found:
                parts = s3.list_parts(Bucket=bucket, Key=found[0]["Key"], UploadId=found[0]["UploadId"])
                if len(parts.get("Parts", [])) >= 2:
                    break
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            time.sleep(0.1)
        else:
            pytest.fail("the child never got two parts uploaded")
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    backend = make_backend(moto_target, bucket)
    [dangling] = uploads(s3, bucket)
    assert dangling["Key"].startswith("blobs/.staging/")
    assert keys(s3, bucket) == [] and list(backend.iter_blobs()) == []
    # Moto reports every upload as initiated in 2010, so only a future cutoff is meaningful here.
    assert backend.remove_stale_staging(far_future()) == 1
    assert uploads(s3, bucket) == []
    assert backend.remove_stale_staging(far_future()) == 0


def test_remove_stale_staging_aborts_only_idle_uploads_of_ours(
    store: S3BlobBackend, s3: Any, bucket: str
) -> None:
    idle = s3.create_multipart_upload(Bucket=bucket, Key="blobs/.staging/" + "0" * 32)
    busy = s3.create_multipart_upload(Bucket=bucket, Key="blobs/.staging/" + "1" * 32)
    s3.upload_part(Bucket=bucket, Key=busy["Key"], UploadId=busy["UploadId"], PartNumber=1, Body=b"x")
    theirs = s3.create_multipart_upload(Bucket=bucket, Key="elsewhere/big-file")
    # Moto dates every upload 2010; the part just sent dates the busy one now, so it is kept.
    assert store.remove_stale_staging(datetime.now(UTC) - timedelta(hours=1)) == 1
    remaining = {u["UploadId"] for u in uploads(s3, bucket)}
    assert remaining == {busy["UploadId"], theirs["UploadId"]}
    assert idle["UploadId"] not in remaining
    assert store.remove_stale_staging(far_future()) == 1
    assert {u["Key"] for u in uploads(s3, bucket)} == {"elsewhere/big-file"}


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


# -- credentials --------------------------------------------------------------------------------------------

SECRET = "wJalrXUtnFEMI-never-shown-anywhere-0001"
ACCESS = "AKIANEVERSHOWNANYWHERE"
TOKEN = "session-token-never-shown-anywhere-0001"


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
    common = {
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
