"""S3 for the tests: a moto server per session, a fresh bucket per test, backends and helpers on them.

Import ``moto_target_fixture`` and ``external_target_fixture`` into a test module to use the fixtures
``moto_target`` and ``external_target``. The contract suite runs against moto and, when
``OBJSTORE_TEST_S3_ENDPOINT`` is set (with ``OBJSTORE_TEST_S3_ACCESS_KEY`` and
``OBJSTORE_TEST_S3_SECRET_KEY``, optionally ``OBJSTORE_TEST_S3_REGION``), also against that external
server (a real S3-compatible server that checks signatures).

Per-test fixtures (import the ``*_fixture`` names): ``bucket`` (fresh, on moto), ``s3`` (boto3, to check
what the server really holds), ``store`` (an S3BlobBackend on ``bucket``) and ``proxy`` (a
:class:`fault_proxy.FaultProxy` in front of moto). ``no_stray_read_ahead`` (autouse where imported) fails a
test that leaves a reader's read-ahead thread running.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.config import Config
from fault_proxy import FaultProxy
from moto.server import ThreadedMotoServer

from objstore.blobs.s3 import S3BlobBackend
from objstore.blobs.s3_reader import THREAD_NAME

__all__ = [
    "FAST",
    "TARGETS",
    "FaultProxy",
    "S3Target",
    "boto_client",
    "bucket_fixture",
    "content_keys",
    "empty_bucket",
    "external_target_fixture",
    "keys",
    "make_backend",
    "moto_target_fixture",
    "new_bucket",
    "no_stray_read_ahead_fixture",
    "proxy_fixture",
    "put",
    "read_ahead_threads",
    "s3_fixture",
    "store_fixture",
    "uploads",
]

# Moto accepts any credentials; these are deliberately recognisable so tests can check they never leak.
MOTO_ACCESS_KEY = "AKIATESTONLYMOTO0001"
MOTO_SECRET_KEY = "moto-secret-key-must-never-appear-anywhere"
REGION = "us-east-1"
_MOTO_BUFFER = "MOTO_S3_DEFAULT_KEY_BUFFER_SIZE"


@dataclass(frozen=True)
class S3Target:
    """Where a test's bucket lives and how to reach it."""

    kind: str  # "moto" or "external"
    endpoint: str
    access_key: str
    secret_key: str
    region: str


def boto_client(target: S3Target, endpoint: str | None = None) -> Any:
    """A boto3 S3 client for checking what the server really holds (not the code under test)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint or target.endpoint,
        aws_access_key_id=target.access_key,
        aws_secret_access_key=target.secret_key,
        region_name=target.region,
        # boto3 >= 1.36 sends checksum headers that some S3-compatible servers reject.
        config=Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 2, "mode": "standard"},
        ),
    )


# -- servers ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session", name="moto_target")
def moto_target_fixture() -> Iterator[S3Target]:
    """One moto server for the whole session, on a free port of 127.0.0.1."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    # Moto spills values over ~5 MiB to temp files; keep them in RAM (faster, and no disk to fill).
    saved = os.environ.get(_MOTO_BUFFER)
    os.environ[_MOTO_BUFFER] = str(1 << 30)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Target("moto", f"http://{host}:{port}", MOTO_ACCESS_KEY, MOTO_SECRET_KEY, REGION)
    finally:
        server.stop()
        if saved is None:
            os.environ.pop(_MOTO_BUFFER, None)
        else:
            os.environ[_MOTO_BUFFER] = saved


@pytest.fixture(scope="session", name="external_target")
def external_target_fixture() -> S3Target | None:
    """The external S3-compatible server named by the environment, or None."""
    endpoint = os.environ.get("OBJSTORE_TEST_S3_ENDPOINT")
    if not endpoint:
        return None
    access = os.environ.get("OBJSTORE_TEST_S3_ACCESS_KEY", "")
    secret = os.environ.get("OBJSTORE_TEST_S3_SECRET_KEY", "")
    if not access or not secret:
        pytest.fail(
            "OBJSTORE_TEST_S3_ENDPOINT is set but OBJSTORE_TEST_S3_ACCESS_KEY / OBJSTORE_TEST_S3_SECRET_KEY "
            "are not: set all three to test against an external S3 server"
        )
    region = os.environ.get("OBJSTORE_TEST_S3_REGION", REGION)
    return S3Target("external", endpoint.rstrip("/"), access, secret, region)


def new_bucket(target: S3Target) -> str:
    name = f"objstore-test-{secrets.token_hex(6)}"
    boto_client(target).create_bucket(Bucket=name)
    return name


def empty_bucket(target: S3Target, bucket: str, *, remove: bool = True) -> None:
    """Delete every object and abort every multipart upload (moto keeps them all in RAM)."""
    client = boto_client(target)
    with contextlib.suppress(client.exceptions.NoSuchBucket):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        if remove:
            client.delete_bucket(Bucket=bucket)


# -- backends -----------------------------------------------------------------------------------------------

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


# -- per-test fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture(name="bucket")
def bucket_fixture(moto_target: S3Target) -> Iterator[str]:
    name = new_bucket(moto_target)
    yield name
    empty_bucket(moto_target, name)


@pytest.fixture(name="s3")
def s3_fixture(moto_target: S3Target) -> Any:
    """boto3, to see what the server really holds."""
    return boto_client(moto_target)


@pytest.fixture(name="store")
def store_fixture(moto_target: S3Target, bucket: str) -> S3BlobBackend:
    return make_backend(moto_target, bucket)


@pytest.fixture(name="proxy")
def proxy_fixture(moto_target: S3Target) -> Iterator[FaultProxy]:
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


def read_ahead_threads() -> list[threading.Thread]:
    """The S3 readers' read-ahead threads still running."""
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


@pytest.fixture(name="no_stray_read_ahead", autouse=True)
def no_stray_read_ahead_fixture() -> Iterator[None]:
    """After the test, every read-ahead thread has ended: its reader was read to the end, closed, dropped."""
    yield
    gc.collect()  # readers dropped inside reference cycles are closed now
    for thread in read_ahead_threads():
        thread.join(timeout=5)
    assert read_ahead_threads() == [], "a reader's read-ahead thread outlived its test"
