"""Acceptance: two hosts, each with its own configuration file and its own local folders, share one
PostgreSQL database and one S3 bucket. Each sees the other's objects (inline and in the bucket) and secrets,
the pipeline object limit holds while both put into one pipeline at once, and runs started from both get
distinct consecutive numbers.

Each host is a real child process that opens ``objstore.open(its_config)`` and answers JSON requests on its
stdin/stdout; it gets no OBJSTORE_* or AWS_* variables, so everything it knows comes from its own file. The
bucket is on moto and, when ``OBJSTORE_TEST_S3_ENDPOINT`` is set, also on that server (CI: a Ceph RGW). These
tests need ``OBJSTORE_TEST_POSTGRES_URL``; CI sets it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import queue
import random
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from s3_server import (  # the *_fixture names register the fixtures without the suffix
    TARGETS,
    S3Target,
    boto_client,
    empty_bucket,
    external_target_fixture,  # noqa: F401
    moto_target_fixture,  # noqa: F401
    new_bucket,
)

from tests.databases import POSTGRES_URL, PostgresSchema, create_schema, plain_url

pytestmark = pytest.mark.skipif(not POSTGRES_URL, reason="needs OBJSTORE_TEST_POSTGRES_URL (CI sets it)")

KIB = 1 << 10
MIB = 1 << 20
LIMIT = 5  # object_store.pipeline_object_limit of both hosts
THRESHOLD = 1024  # blobs.threshold of both hosts: larger values go to the bucket
PART_SIZE = 5 * MIB  # the smallest part size, so that one object below is a multipart upload
PREFIX = "ci/blobs"
REPLY_TIMEOUT = 120.0

# The host process: opens the store from the file named by argv[1], then answers one JSON line per request
# line. Bytes travel as base64. An error becomes {"error": type name, "message": ...}; the host keeps going.
HOST_PROGRAM = r"""
import base64, dataclasses, datetime, hashlib, json, os, sys, time, traceback

import objstore

replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
os.dup2(2, 1)  # stdout carries the replies only; anything printed goes to stderr
sys.stdout = sys.stderr


def reply(message):
    replies.write(json.dumps(message) + "\n")
    replies.flush()


def b64(data):
    return base64.b64encode(data).decode("ascii")


def described(info):
    return {"key": info.key, "size": info.size, "sha256": info.sha256, "run": info.run}


def value_out(value):
    return {"text": value} if isinstance(value, str) else {"bytes": b64(value)}


def value_in(value):
    return value["text"] if "text" in value else base64.b64decode(value["bytes"])


def wait_until(moment):
    time.sleep(max(0.0, moment - time.time()))


def handle(store, r):
    op = r["op"]
    pipe = store.pipeline(r["namespace"], r["pipeline"]) if "pipeline" in r else None
    objects = None if pipe is None else pipe.objects if r.get("run") is None else pipe.run(r["run"]).objects
    if op == "put":
        data = base64.b64decode(r["data"])
        return described(objects.put(r["key"], data, overwrite=r.get("overwrite", False)))
    if op == "get":
        data = objects.get(r["key"])
        return {"data": b64(data), "sha256": hashlib.sha256(data).hexdigest()}
    if op == "read":  # streamed
        with objects.open(r["key"]) as stream:
            data = stream.read()
        return {"data": b64(data), "sha256": hashlib.sha256(data).hexdigest()}
    if op == "info":
        return described(objects.info(r["key"]))
    if op == "list":
        return [described(info) for info in objects.list()]
    if op == "put_many":  # the pipeline's size seen after each put, and when the puts began and ended
        seen = []
        wait_until(r["start_at"])
        began = time.time()
        for key, data in r["items"]:
            objects.put(key, base64.b64decode(data))
            seen.append(len(objects.list()))
        return {"seen": seen, "began": began, "ended": time.time()}
    if op == "start_run":
        return pipe.start_run().number
    if op == "start_runs":
        wait_until(r["start_at"])
        return [pipe.start_run().number for _ in range(r["count"])]
    if op == "put_secret":
        pipe.secrets.put(r["name"], value_in(r["value"]), overwrite=r.get("overwrite", False))
        return None
    if op == "get_secret":
        return value_out(pipe.secrets.get(r["name"]))
    if op == "list_secrets":
        return [info.name for info in pipe.secrets.list()]
    if op == "get_global":  # as this pipeline may read it
        return value_out(pipe.secrets.get_global(r["name"]))
    if op == "put_global":
        store.global_secrets.put(r["name"], value_in(r["value"]), namespaces=r["namespaces"])
        return None
    if op == "list_globals":
        return [info.name for info in store.global_secrets.list()]
    if op == "mask":
        return store.mask(r["text"])
    if op == "events":
        events = store.events.list(kind=r["kind"], limit=1000)
        return [{"kind": e.kind, "pipeline": e.pipeline, "run": e.run} for e in events]
    if op == "collect_garbage":
        return dataclasses.asdict(store.collect_garbage(datetime.timedelta(0)))
    if op == "check":
        return dataclasses.asdict(store.check(verify=True))
    raise ValueError(f"unknown request {op!r}")


def main():
    store = objstore.open(sys.argv[1])
    reply({"result": {"pid": os.getpid()}})
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply({"result": handle(store, request)})
        except Exception as error:
            reply({"error": type(error).__name__, "message": str(error), "traceback": traceback.format_exc()})
    store.close()


main()
"""


class HostError(Exception):
    """An error a host process answered with (its type name first, so ``match=`` can name it)."""


class Host:
    """One host: a child process on its own configuration file, driven by JSON requests."""

    def __init__(self, name: str, folder: Path, config: Path, environment: dict[str, str]) -> None:
        self.name = name
        self.folder = folder
        self.config = config
        self.stderr_path = folder / "stderr.log"
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-c", HOST_PROGRAM, str(config)],
                cwd=folder,
                env=environment,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                encoding="utf-8",
            )
        self._replies: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._replies.put(line)
        self._replies.put(None)

    def _stderr_tail(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def send(self, op: str, **arguments: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **arguments}) + "\n")
        self.process.stdin.flush()

    def receive(self, timeout: float = REPLY_TIMEOUT) -> Any:
        try:
            line = self._replies.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"host {self.name} did not answer within {timeout} s; its stderr:\n{self._stderr_tail()}"
            ) from None
        if line is None:
            code = self.process.wait(timeout=10)
            raise AssertionError(f"host {self.name} exited with {code}; its stderr:\n{self._stderr_tail()}")
        answer = json.loads(line)
        if "error" in answer:
            raise HostError(
                f"{answer['error']}: {answer['message']}\n(host {self.name}) {answer['traceback']}"
            )
        return answer["result"]

    def call(self, op: str, **arguments: Any) -> Any:
        self.send(op, **arguments)
        return self.receive()

    # -- conveniences --------------------------------------------------------------------------------------

    def put(self, pipeline: str, key: str, data: bytes, **arguments: Any) -> dict[str, Any]:
        info: dict[str, Any] = self.call(
            "put", namespace="team-a", pipeline=pipeline, key=key, data=_b64(data), **arguments
        )
        return info

    def get(self, pipeline: str, key: str, *, streamed: bool = False, **arguments: Any) -> bytes:
        answer = self.call(
            "read" if streamed else "get", namespace="team-a", pipeline=pipeline, key=key, **arguments
        )
        data = base64.b64decode(answer["data"])
        assert answer["sha256"] == hashlib.sha256(data).hexdigest()
        return data

    def list(self, pipeline: str, **arguments: Any) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = self.call("list", namespace="team-a", pipeline=pipeline, **arguments)
        return listed

    def close(self) -> int:
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()  # the host closes its store and exits
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._reader.join(timeout=10)
        return code


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _secret(value: str | bytes) -> dict[str, str]:
    return {"text": value} if isinstance(value, str) else {"bytes": _b64(value)}


def _toml(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def write_config(folder: Path, url: str, target: S3Target, bucket: str, key: str) -> Path:
    """One host's configuration: every database on the shared PostgreSQL schema, content in the shared
    bucket, and the host's own task-log and cache folders (relative: inside ``folder``)."""
    folder.mkdir(parents=True)
    database = f"url = {_toml(url)}"
    config = folder / "objstore.toml"
    config.write_text(
        f"""# Host {folder.name}: its own folders; the databases and the bucket are shared.
[api]
task_execution_logs_dir = "task-logs"

[object_store]
engine = "postgres"
pipeline_object_limit = {LIMIT}
[object_store.postgres]
{database}

[secret_store]
engine = "postgres"
[secret_store.postgres]
{database}
encryption_key = {_toml(key)}

[server]
storage_engine = "postgres"
[server.postgres]
{database}

[blobs]
threshold = {THRESHOLD}
[blobs.cache]
path = "blob-cache"
max_bytes = {64 * MIB}

[[blobs.stores]]
type = "s3"
name = "shared-bucket"
bucket = {_toml(bucket)}
prefix = {_toml(PREFIX)}
region = {_toml(target.region)}
endpoint = {_toml(target.endpoint)}
access_key_id = {_toml(target.access_key)}
secret_access_key = {_toml(target.secret_key)}
part_size = {PART_SIZE}
delay = 0.05
"""
    )
    return config


def host_environment() -> dict[str, str]:
    """The parent's environment without objstore's or AWS's variables: a host knows only its file."""
    return {name: value for name, value in os.environ.items() if not name.startswith(("OBJSTORE_", "AWS_"))}


@dataclass
class Deployment:
    a: Host
    b: Host
    schema: PostgresSchema
    target: S3Target
    bucket: str

    def content_keys(self) -> set[str]:
        """Content keys in the bucket (staged uploads excluded)."""
        client = boto_client(self.target)
        found: set[str] = set()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            found.update(o["Key"] for o in page.get("Contents", []) if "/.staging/" not in o["Key"])
        return found

    def pipeline_count(self, connection: psycopg.Connection[Any], pipeline: str) -> int:
        row = connection.execute(
            "SELECT count(*) FROM objects o JOIN object_pipelines p ON p.id = o.scope_id "
            "WHERE o.run = 0 AND p.namespace = 'team-a' AND p.pipeline = %s",
            (pipeline,),
        ).fetchone()
        assert row is not None
        return int(row[0])


def blob_key(sha256: str) -> str:
    return f"{PREFIX}/{sha256[:2]}/{sha256}"


def cached(host: Host) -> set[str]:
    """The content (sha256 names) in a host's local cache folder."""
    folder = host.folder / "blob-cache"
    if not folder.exists():
        return set()
    return {p.name for p in folder.rglob("*") if p.is_file() and len(p.name) == 64}


@pytest.fixture(params=TARGETS)
def s3_bucket(request: pytest.FixtureRequest) -> Iterator[tuple[S3Target, str]]:
    """A fresh bucket on moto, and on the external server when one is configured."""
    target: S3Target | None = request.getfixturevalue(f"{request.param}_target")
    assert target is not None
    bucket = new_bucket(target)
    yield target, bucket
    empty_bucket(target, bucket)


@pytest.fixture
def deployment(s3_bucket: tuple[S3Target, str], tmp_path: Path) -> Iterator[Deployment]:
    """Two running hosts on a fresh PostgreSQL schema (migrated: `objstore db upgrade` done) and bucket."""
    target, bucket = s3_bucket
    key = secrets.token_hex(16)  # 32 characters, shared by the two hosts
    with contextlib.contextmanager(create_schema)() as schema:
        environment = host_environment()
        hosts = [
            Host(
                name,
                tmp_path / name,
                write_config(tmp_path / name, schema.url, target, bucket, key),
                environment,
            )
            for name in ("host-a", "host-b")
        ]
        try:
            for host in hosts:  # both opened their store
                host.receive()
            yield Deployment(hosts[0], hosts[1], schema, target, bucket)
        finally:
            codes = {host.name: host.close() for host in hosts}
    assert codes == {"host-a": 0, "host-b": 0}, [h.stderr_path.read_text() for h in hosts]


# -- 1. objects and secrets, both ways -----------------------------------------------------------------------


def test_each_host_reads_what_the_other_wrote(deployment: Deployment) -> None:
    a, b = deployment.a, deployment.b
    assert a.config.parent != b.config.parent
    assert cached(a) == cached(b) == set()

    # A writes: an empty and a small value (inline), one blob, one multipart blob, and a run object.
    written = {
        "cache/empty": b"",
        "cache/small.txt": os.urandom(200),
        "cache/deps.tar": os.urandom(300 * KIB + 7),
        "toolchain/big.tar.gz": os.urandom(PART_SIZE + MIB + 13),
    }
    infos = {key: a.put("web", key, data) for key, data in written.items()}
    for key, data in written.items():
        assert (infos[key]["size"], infos[key]["sha256"]) == (len(data), _sha(data))
    run = a.call("start_run", namespace="team-a", pipeline="web")
    report = os.urandom(5 * KIB)
    a.put("web", "junit.xml", report, run=run)

    # The large ones are in the bucket, the small ones are not.
    in_bucket = deployment.content_keys()
    for data in [*written.values(), report]:
        assert (blob_key(_sha(data)) in in_bucket) == (len(data) > THRESHOLD), len(data)

    # B, configured independently and with an empty cache, reads everything back byte for byte.
    assert cached(b) == set()
    for key, data in written.items():
        assert b.get("web", key) == data, key
        assert b.get("web", key, streamed=True) == data, key
        assert b.call("info", namespace="team-a", pipeline="web", key=key) == infos[key]
    assert b.get("web", "junit.xml", run=run) == report
    assert b.list("web") == [infos[key] for key in written]
    assert [o["sha256"] for o in b.list("web", run=run)] == [_sha(report)]
    blobs_read = {_sha(d) for d in [*written.values(), report] if len(d) > THRESHOLD}
    assert cached(b) == blobs_read  # fetched from the bucket into B's own cache
    assert cached(a) == set()

    # Secrets: a text and a bytes pipeline secret, and a global secret for team-* namespaces.
    token = f"deploy-{secrets.token_hex(8)}"
    signing = os.urandom(48)
    npm = f"npm-{secrets.token_hex(8)}"
    a.call("put_secret", namespace="team-a", pipeline="web", name="DEPLOY_TOKEN", value=_secret(token))
    a.call("put_secret", namespace="team-a", pipeline="web", name="SIGNING_KEY", value=_secret(signing))
    a.call("put_global", name="NPM_TOKEN", value=_secret(npm), namespaces=["team-*"])

    secret_of = {"namespace": "team-a", "pipeline": "web"}
    assert b.call("get_secret", **secret_of, name="DEPLOY_TOKEN") == {"text": token}
    assert b.call("get_secret", **secret_of, name="SIGNING_KEY") == _secret(signing)
    assert sorted(b.call("list_secrets", **secret_of)) == ["DEPLOY_TOKEN", "SIGNING_KEY"]
    assert b.call("get_global", namespace="team-a", pipeline="api", name="NPM_TOKEN") == {"text": npm}
    with pytest.raises(HostError, match=r"^VaultError: namespace 'other' may not read"):
        b.call("get_global", namespace="other", pipeline="web", name="NPM_TOKEN")
    assert b.call("list_globals") == ["NPM_TOKEN"]
    assert b.call("mask", text=f"using {token} and {npm}") == "using **** and ****"
    assert [(e["pipeline"], e["run"]) for e in b.call("events", kind="run_started")] == [("web", run)]

    # And the other way: B writes, replaces one of A's objects, and A reads it all.
    from_b = {"src/main.py": os.urandom(900), "dist/app.whl": os.urandom(200 * KIB + 1)}
    b_infos = {key: b.put("api", key, data) for key, data in from_b.items()}
    replacement = os.urandom(150 * KIB)
    with pytest.raises(HostError, match=r"^AlreadyExists"):
        b.put("web", "cache/deps.tar", replacement)
    b.put("web", "cache/deps.tar", replacement, overwrite=True)
    b_token = f"api-{secrets.token_hex(8)}"
    b.call("put_secret", namespace="team-a", pipeline="api", name="API_TOKEN", value=_secret(b_token))
    b.call("put_global", name="TEAM_A_ONLY", value=_secret(b"\x00\xffraw"), namespaces=["team-a"])

    for key, data in from_b.items():
        assert a.get("api", key) == data, key
        assert a.get("api", key, streamed=True) == data, key
    assert a.list("api") == [b_infos[key] for key in from_b]
    assert a.get("web", "cache/deps.tar") == replacement
    assert b.get("web", "cache/deps.tar") == replacement
    assert a.call("get_secret", namespace="team-a", pipeline="api", name="API_TOKEN") == {"text": b_token}
    assert a.call("list_secrets", namespace="team-a", pipeline="api") == ["API_TOKEN"]
    assert a.call("get_global", namespace="team-a", pipeline="web", name="TEAM_A_ONLY") == _secret(
        b"\x00\xffraw"
    )
    assert sorted(a.call("list_globals")) == ["NPM_TOKEN", "TEAM_A_ONLY"]
    assert a.call("mask", text=f"{b_token}/{token}") == "****/****"
    assert cached(a) == {_sha(from_b["dist/app.whl"]), _sha(replacement)}

    # Both see one consistent store: no row without its content, from either side.
    for host in (a, b):
        found = host.call("check")
        assert (found["missing_content"], found["corrupt_content"]) == ([], []), host.name


# -- 2. the pipeline limit across hosts -------------------------------------------------------------------


def test_pipeline_limit_holds_across_hosts(deployment: Deployment) -> None:
    a, b = deployment.a, deployment.b
    rng = random.Random(20240611)
    count = 40
    # Every third value is a blob; every fifth is the same content on both hosts (one blob, two writers).
    same = {i: rng.randbytes(rng.randrange(THRESHOLD + 1, 48 * KIB)) for i in range(0, count, 5)}

    def value(i: int) -> bytes:
        if i in same:
            return same[i]
        return rng.randbytes(rng.randrange(THRESHOLD + 1, 48 * KIB) if i % 3 == 0 else rng.randrange(1, 900))

    items = {host.name: [(f"{host.name}/k{i:02d}", value(i)) for i in range(count)] for host in (a, b)}
    expected = {key: data for pairs in items.values() for key, data in pairs}

    # A third observer counts the pipeline's objects all along, straight from PostgreSQL.
    samples: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        with psycopg.connect(plain_url(deployment.schema.url), autocommit=True) as connection:
            while not stop.is_set():
                samples.append(deployment.pipeline_count(connection, "shared"))

    watcher = threading.Thread(target=watch)
    watcher.start()
    start_at = time.time() + 1.0  # both hosts begin together, so the puts really overlap
    try:
        for host in (a, b):
            pairs = [(key, _b64(data)) for key, data in items[host.name]]
            host.send("put_many", namespace="team-a", pipeline="shared", items=pairs, start_at=start_at)
        seen = {host.name: host.receive() for host in (a, b)}  # no error surfaced on either host
    finally:
        stop.set()
        watcher.join()

    assert max(done["began"] for done in seen.values()) < min(done["ended"] for done in seen.values())
    assert samples and max(samples) <= LIMIT, max(samples)
    for name, done in seen.items():
        assert len(done["seen"]) == count and max(done["seen"]) <= LIMIT, (name, done["seen"])

    # Exactly the limit remains, the same seen from both hosts, and of each host the newest of its puts.
    listed = a.list("shared")
    assert b.list("shared") == listed
    assert len(listed) == LIMIT
    for name in (a.name, b.name):
        mine = sorted(int(o["key"].rsplit("/k", 1)[1]) for o in listed if o["key"].startswith(f"{name}/"))
        assert mine == list(range(count - len(mine), count)), (name, mine)
    for info in listed:
        data = expected[info["key"]]
        assert (info["size"], info["sha256"]) == (len(data), _sha(data))
        assert a.get("shared", info["key"]) == data
        assert b.get("shared", info["key"]) == data

    # Garbage collection from one host removes the evicted content and keeps what both still list.
    kept = {blob_key(o["sha256"]) for o in listed if o["size"] > THRESHOLD}
    assert kept <= deployment.content_keys()
    removed = a.call("collect_garbage")
    assert removed["blobs_removed"] > 0
    assert deployment.content_keys() == kept
    for host in (a, b):
        found = host.call("check")
        assert found == {"missing_content": [], "corrupt_content": [], "orphan_blobs": [], "fixed": False}


# -- 3. run numbers across hosts -----------------------------------------------------------------------------


def test_runs_started_from_both_hosts_get_distinct_consecutive_numbers(deployment: Deployment) -> None:
    a, b = deployment.a, deployment.b
    runs = 20
    start_at = time.time() + 1.0
    for host in (a, b):
        host.send("start_runs", namespace="team-a", pipeline="shared", count=runs, start_at=start_at)
    numbers = {host.name: host.receive() for host in (a, b)}
    assert sorted(numbers["host-a"] + numbers["host-b"]) == list(range(1, 2 * runs + 1))
    for mine in numbers.values():
        assert mine == sorted(mine)
    # Alternating afterwards, each host continues from the other's last number.
    after = [host.call("start_run", namespace="team-a", pipeline="shared") for host in (a, b, a, b)]
    assert after == list(range(2 * runs + 1, 2 * runs + 5))
    started = b.call("events", kind="run_started")
    assert sorted(e["run"] for e in started) == list(range(1, 2 * runs + 5))
