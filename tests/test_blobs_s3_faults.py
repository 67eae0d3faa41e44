"""S3BlobBackend under failure: retries with backoff, giving up, timeouts against a stalled server, a
connection lost mid-read, and a writer SIGKILLed in the middle of a multipart upload.

Faults come from a proxy between the backend and moto (``fault_proxy.FaultProxy``) or from killing a real
child process, never from patching the backend.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from blob_contract import MIB, chunked, far_future, payload, sha
from s3_server import (  # the *_fixture names register the fixtures without the suffix
    FaultProxy,
    S3Target,
    bucket_fixture,  # noqa: F401
    content_keys,
    keys,
    make_backend,
    moto_target_fixture,  # noqa: F401
    no_stray_read_ahead_fixture,  # noqa: F401
    proxy_fixture,  # noqa: F401
    put,
    read_ahead_threads,
    s3_fixture,  # noqa: F401
    store_fixture,  # noqa: F401
    uploads,
)

from objstore.blobs.s3 import S3BlobBackend
from objstore.blobs.s3_retry import RetryPolicy
from objstore.blobs.verify import read_verified
from objstore.errors import StorageError

ROOT = Path(__file__).resolve().parent.parent


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
    assert time.monotonic() - start < 3.5
    proxy.reset()
    assert content_keys(s3, bucket) == []
    backend.remove_stale_staging(far_future())
    assert uploads(s3, bucket) == [] and keys(s3, bucket) == []


# -- reading ------------------------------------------------------------------------------------------------


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


def read_ahead_thread() -> threading.Thread:
    [thread] = read_ahead_threads()
    return thread


def test_read_ahead_hands_errors_to_the_reader(moto_target: S3Target, bucket: str, proxy: FaultProxy) -> None:
    backend = make_backend(moto_target, bucket, endpoint=proxy.endpoint, max_retries=2)
    data = payload(6 * MIB, seed=23)
    digest = put(backend, data)
    proxy.reset()
    proxy.cut_next_gets(1, after=MIB + 7)
    reader = backend.open(digest)
    proxy.fail_next(100)  # the server goes down after the first GET started: resuming fails
    received = reader.read(MIB)
    thread = read_ahead_thread()
    with pytest.raises(StorageError, match="still failing after 3 attempts"):
        while chunk := reader.read(MIB):  # what arrived before the failure is still handed out
            received += chunk
    assert received == data[: len(received)] and MIB <= len(received) < len(data)
    thread.join(timeout=5)
    assert not thread.is_alive()
    with pytest.raises(StorageError):  # the failure stays: no silent end of the stream
        reader.read(MIB)
    reader.close()
    assert [s.status for s in proxy.seen if s.method == "GET"] == [200, 503, 503, 503]


def test_close_cuts_a_retry_wait_short(moto_target: S3Target, bucket: str, proxy: FaultProxy) -> None:
    backend = make_backend(moto_target, bucket, endpoint=proxy.endpoint, delay=30.0, jitter=0.0)
    digest = put(backend, payload(6 * MIB, seed=24))
    proxy.reset()
    proxy.cut_next_gets(1, after=MIB + 7)
    reader = backend.open(digest)
    reader.read(MIB)
    thread = read_ahead_thread()
    time.sleep(0.5)  # the thread meets the cut and waits 30 s before asking for the rest
    start = time.monotonic()
    reader.close()
    thread.join(timeout=5)
    assert not thread.is_alive() and time.monotonic() - start < 2
    assert proxy.count(method="GET") == 1  # nothing asked for once the reader was closed


def test_close_does_not_wait_for_a_stalled_server(
    moto_target: S3Target, bucket: str, proxy: FaultProxy
) -> None:
    backend = make_backend(moto_target, bucket, endpoint=proxy.endpoint, timeout=1.0)
    digest = put(backend, payload(6 * MIB, seed=25))
    proxy.reset()
    proxy.cut_next_gets(1, after=MIB + 7)
    reader = backend.open(digest)
    proxy.stall()  # the ranged GET that resumes the read hangs
    reader.read(MIB)
    thread = read_ahead_thread()
    assert wait_for_stalled_get(proxy)
    start = time.monotonic()
    reader.close()
    assert time.monotonic() - start < 0.5  # closing does not wait for the network
    thread.join(timeout=5)  # the thread gives up after the 1 s timeout and drops the connection
    assert not thread.is_alive()
    proxy.release()


def wait_for_stalled_get(proxy: FaultProxy) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if any(s.method == "GET" and s.status is None for s in proxy.seen):
            return True
        time.sleep(0.01)
    return False


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
