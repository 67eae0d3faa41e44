"""S3 servers for bench_s3.py: a moto server in its own process, or the external one the tests use."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

MOTO_KEY = ("AKIABENCHMARKONLY000", "bench-secret-key")


@dataclass(frozen=True)
class Server:
    endpoint: str
    access_key: str
    secret_key: str
    region: str
    kind: str


# -- the server ------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def moto_server() -> Iterator[Server]:
    """moto in its own process, values in RAM (it spills anything over ~5 MiB to temp files otherwise)."""
    port = _free_port()
    env = {**os.environ, "MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(4 << 30)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the moto server did not start") from None
                time.sleep(0.1)
        yield Server(endpoint, *MOTO_KEY, "us-east-1", "moto")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def external_server() -> Server:
    endpoint = os.environ.get("OBJSTORE_TEST_S3_ENDPOINT")
    access = os.environ.get("OBJSTORE_TEST_S3_ACCESS_KEY")
    secret = os.environ.get("OBJSTORE_TEST_S3_SECRET_KEY")
    if not (endpoint and access and secret):
        raise SystemExit("--external needs OBJSTORE_TEST_S3_ENDPOINT, _ACCESS_KEY and _SECRET_KEY")
    region = os.environ.get("OBJSTORE_TEST_S3_REGION", "us-east-1")
    return Server(endpoint.rstrip("/"), access, secret, region, "external")


def boto(server: Server) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name=server.region,
        config=Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"},
        ),
    )


def empty(server: Server, bucket: str, *, remove: bool = False) -> None:
    client = boto(server)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    if remove:
        client.delete_bucket(Bucket=bucket)


@contextmanager
def given(server: Server) -> Iterator[Server]:
    yield server
