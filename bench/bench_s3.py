"""S3 blobs: put and get of one large object through S3BlobBackend, against obstore's own put and get.

objstore: ``stage`` (1 MiB chunks, hashed as they stream, multipart upload to a staging key) then
``publish`` (server-side copy to the content address); get: ``open`` + ``VerifiedReader.read(1 MiB)`` until
EOF (sha256 checked at the end; the reader's thread pulls up to 4 chunks ahead, so the download and the
hash overlap when a CPU is free). raw: ``obstore.put`` of the whole value as one buffer (its fastest form;
the same 1 MiB chunks as an iterator are recorded too), same part size and concurrency, and
``obstore.get(...).stream()`` read to the end with a sha256 (the least a verified read needs; without the
hash is recorded as well). Same server, same run, interleaved rounds.

The server is a moto server in its own process (values kept in RAM), or the external S3-compatible server
named by OBJSTORE_TEST_S3_ENDPOINT / OBJSTORE_TEST_S3_ACCESS_KEY / OBJSTORE_TEST_S3_SECRET_KEY with
``--external``. moto is a Python program, so its own speed caps both contenders; publish's server-side
copy costs what the server makes it cost (moto copies the bytes in Python; Ceph RGW copies only the head
of a same-bucket object), which is why the put row also shows stage and publish on their own.

Peak memory: each operation runs again in a fresh subprocess (forked by a shell, so it does not inherit
this process's high-water mark), which reports its ``ru_maxrss`` growth over a baseline taken once the
backend is open and one small request has warmed the client, and its VmHWM growth with the peak reset
at that baseline (``/proc/self/clear_refs``), which a high import-time peak cannot hide. obstore's buffers
live in Rust, out of tracemalloc's sight. The put child generates its chunks on the fly.

Writes bench/results/s3.json.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import re
import resource
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

from common import (
    BENCH_DIR,
    ROOT,
    MiB,
    RoundFn,
    Target,
    environment,
    fmt_seconds,
    interleave,
    paired_ratio,
    parser,
    print_targets,
    rounds_for,
    save_results,
    stopwatch,
    summarize,
    table,
)
from s3_servers import Server, boto, empty, external_server, given, moto_server

CHUNK = MiB
PART_SIZE = 8 * MiB
MAX_CONCURRENCY = 4


# -- the contenders --------------------------------------------------------------------------------------


def backend_for(server: Server, bucket: str) -> Any:
    from objstore.blobs.s3 import S3BlobBackend

    return S3BlobBackend(
        bucket,
        prefix="bench",
        endpoint=server.endpoint,
        region=server.region,
        access_key_id=server.access_key,
        secret_access_key=server.secret_key,
        timeout=120,
        part_size=PART_SIZE,
        max_concurrency=MAX_CONCURRENCY,
    )


def raw_store_for(server: Server, bucket: str) -> Any:
    from datetime import timedelta

    from obstore.store import S3Store

    return S3Store(
        bucket,
        endpoint=server.endpoint,
        region=server.region,
        access_key_id=server.access_key,
        secret_access_key=server.secret_key,
        virtual_hosted_style_request=False,
        client_options={
            "allow_http": server.endpoint.startswith("http://"),
            "timeout": timedelta(minutes=10),
        },
    )


def chunks_of(data: bytes) -> Iterator[bytes]:
    """1 MiB chunks, as ContentStore hands them to a backend."""
    view = memoryview(data)
    for start in range(0, len(view), CHUNK):
        yield view[start : start + CHUNK].tobytes()


def generated_chunks(size: int, seed: int) -> Iterator[bytes]:
    """``size`` bytes of distinct, incompressible content made on the fly (the memory children)."""
    block = bytearray(hashlib.sha256(str(seed).encode()).digest() * (CHUNK // 32))
    for i in range(size // CHUNK):
        block[:8] = i.to_bytes(8, "big")
        yield bytes(block)
    if size % CHUNK:
        yield bytes(block[: size % CHUNK])


def objstore_put(backend: Any, chunks: Iterator[bytes]) -> tuple[Any, float, float]:
    lap = stopwatch()
    staged = backend.stage(chunks)
    stage_s = lap()
    lap = stopwatch()
    backend.publish(staged)
    publish_s = lap()
    backend.discard(staged)
    return staged, stage_s, publish_s


def objstore_get(backend: Any, sha256: str, size: int) -> None:
    from objstore.blobs.verify import VerifiedReader

    with VerifiedReader(backend.open(sha256), sha256=sha256, size=size, what="bench") as reader:
        while reader.read(CHUNK):
            pass


def raw_put(store: Any, key: str, source: bytes | Iterator[bytes]) -> None:
    import obstore

    obstore.put(store, key, source, chunk_size=PART_SIZE, max_concurrency=MAX_CONCURRENCY)


def raw_get(store: Any, key: str, *, verify: bool) -> str:
    import obstore

    hasher = hashlib.sha256()
    for chunk in obstore.get(store, key).stream(min_chunk_size=CHUNK):
        if verify:
            hasher.update(chunk)
    return hasher.hexdigest()


def objstore_round(server: Server, bucket: str, data: bytes) -> RoundFn:
    def run(_folder: Path) -> dict[str, float]:
        backend = backend_for(server, bucket)
        backend.exists("0" * 64)  # connect outside the stopwatch, as the raw store does below
        staged, stage_s, publish_s = objstore_put(backend, chunks_of(data))
        lap = stopwatch()
        objstore_get(backend, staged.sha256, staged.size)
        get_s = lap()
        assert backend.delete(staged.sha256)  # the next round must upload and copy again
        return {"put": stage_s + publish_s, "get": get_s, "stage": stage_s, "publish": publish_s}

    return run


def raw_round(server: Server, bucket: str, data: bytes, digest: str) -> RoundFn:
    import obstore

    def run(_folder: Path) -> dict[str, float]:
        store = raw_store_for(server, bucket)
        key = f"raw/{secrets.token_hex(8)}"
        with suppress(FileNotFoundError):
            obstore.head(store, "raw/none")  # connect outside the stopwatch
        lap = stopwatch()
        raw_put(store, key, chunks_of(data))
        chunks_s = lap()
        obstore.delete(store, key)
        lap = stopwatch()
        raw_put(store, key, data)  # the whole value in one buffer: obstore's fastest put
        put_s = lap()
        lap = stopwatch()
        assert raw_get(store, key, verify=True) == digest
        get_s = lap()
        lap = stopwatch()
        raw_get(store, key, verify=False)
        plain_s = lap()
        obstore.delete(store, key)
        return {"put": put_s, "put chunks": chunks_s, "get": get_s, "get unverified": plain_s}

    return run


# -- memory, in a fresh process --------------------------------------------------------------------------


def child(mode: str, server: Server, bucket: str, size: int, sha256: str) -> dict[str, Any]:
    """One operation in this fresh process; how much its peak RSS grew over the warmed-up baseline."""
    import obstore

    backend = backend_for(server, bucket)
    store = raw_store_for(server, bucket)
    backend.exists("0" * 64)  # warm both clients: runtime threads, connection pools
    with suppress(FileNotFoundError):
        obstore.head(store, "raw/none")
    gc.collect()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_before = _status_kib("VmRSS")
    reset = _reset_peak()  # VmHWM := VmRSS, so VmHWM afterwards is this operation's own peak
    if mode == "objstore-put":
        staged, _, _ = objstore_put(backend, generated_chunks(size, seed=1))
        assert staged.sha256 == sha256
    elif mode == "objstore-get":
        objstore_get(backend, sha256, size)
    elif mode == "raw-put":
        raw_put(store, "raw/memory", generated_chunks(size, seed=1))
    elif mode == "raw-get":
        raw_get(store, "raw/memory", verify=True)
    else:
        raise SystemExit(f"unknown mode {mode}")
    hwm = _status_kib("VmHWM")
    return {
        "mode": mode,
        "ru_maxrss_growth_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - maxrss_before,
        "hwm_growth_kib": hwm - rss_before if reset and hwm is not None and rss_before is not None else None,
    }


def _status_kib(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found[1]) if found else None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux: reset the peak RSS (VmHWM, which ru_maxrss reads) to the current RSS
        return True
    except OSError:
        return False


def run_child(mode: str, server: Server, bucket: str, size: int, sha256: str) -> dict[str, Any]:
    cmd = [sys.executable, str(BENCH_DIR / "bench_s3.py"), "--child", mode, "--bucket", bucket]
    cmd += ["--size-bytes", str(size), "--sha256", sha256]
    # Linux copies the high-water RSS of the process that execs into the new program's ru_maxrss, so a
    # child started from this (big) process would report our peak. A shell forks it instead, from small.
    cmd = ["/bin/sh", "-c", '"$@" & wait $!', "sh", *cmd]
    env = {**os.environ, "BENCH_S3_SERVER": json.dumps(server.__dict__), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"memory child {mode} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure_memory(server: Server, bucket: str, size: int) -> dict[str, dict[str, Any]]:
    digest = hashlib.sha256(b"".join(generated_chunks(size, seed=1))).hexdigest()
    out: dict[str, dict[str, Any]] = {}
    for mode in ("objstore-put", "objstore-get", "raw-put", "raw-get"):
        out[mode.replace("-", " ")] = run_child(mode, server, bucket, size, digest)
    empty(server, bucket)
    for entry in out.values():
        entry.pop("mode", None)
        # ru_maxrss minus the baseline, as asked; it misses a peak lower than the imports' own, which
        # VmHWM (reset at the baseline) does not: report the larger of the two.
        grown = max(entry["ru_maxrss_growth_kib"], entry["hwm_growth_kib"] or 0)
        entry["growth_mib"] = grown / 1024
    return out


# -- main ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--size-mib", type=int, default=None, help="object size (default 256, quick 32)")
    p.add_argument("--external", action="store_true", help="use the OBJSTORE_TEST_S3_* server, not moto")
    p.add_argument("--child", default=None, help="internal: run one measured operation")
    p.add_argument("--bucket", default=None)
    p.add_argument("--size-bytes", type=int, default=None)
    p.add_argument("--sha256", default=None)
    args = p.parse_args(argv)
    if args.child:
        server = Server(**json.loads(os.environ["BENCH_S3_SERVER"]))
        print(json.dumps(child(args.child, server, args.bucket, args.size_bytes, args.sha256)))
        return 0

    size_mib = args.size_mib or (32 if args.quick else 256)
    size = size_mib * MiB
    rounds = rounds_for(args, quick=2, full=5)
    with moto_server() if not args.external else given(external_server()) as server:
        bucket = f"objstore-bench-{secrets.token_hex(4)}"
        boto(server).create_bucket(Bucket=bucket)
        try:
            print(f"s3: {size_mib} MiB against {server.kind} at {server.endpoint}", file=sys.stderr)
            data = os.urandom(size)
            digest = hashlib.sha256(data).hexdigest()
            samples = interleave(
                {
                    "objstore": objstore_round(server, bucket, data),
                    "raw": raw_round(server, bucket, data, digest),
                },
                rounds,
                base=args.tmpdir,
                progress="s3",
            )
            del data
            print("s3: peak memory in fresh subprocesses", file=sys.stderr)
            memory = measure_memory(server, bucket, size)
        finally:
            empty(server, bucket, remove=True)

    stats = summarize(samples)
    for entry in stats.values():
        entry["median_mib_per_s"] = size_mib / entry["median_s"]
    put_ratio = stats["raw put"]["median_s"] / stats["objstore put"]["median_s"]
    get_ratio = stats["raw get"]["median_s"] / stats["objstore get"]["median_s"]
    stage_ratio = stats["raw put"]["median_s"] / stats["objstore stage"]["median_s"]
    chunks_ratio = stats["raw put chunks"]["median_s"] / stats["objstore put"]["median_s"]
    plain_get_ratio = stats["raw get unverified"]["median_s"] / stats["objstore get"]["median_s"]

    parts = f"parts of {PART_SIZE // MiB} MiB, {MAX_CONCURRENCY} in flight"
    print(f"\ns3 ({server.kind}), {size_mib} MiB object, {rounds} rounds, {parts}")
    notes = {
        "objstore put": f"{put_ratio:.2f}x vs raw put; {chunks_ratio:.2f}x vs raw put chunks",
        "objstore stage": f"{stage_ratio:.2f}x vs raw put (the upload alone)",
        "raw put chunks": "raw put fed the same 1 MiB chunks",
        "objstore publish": "server-side copy",
        "objstore get": f"{get_ratio:.2f}x vs raw get+sha256; {plain_get_ratio:.2f}x vs raw get",
    }
    rows = [
        [name, fmt_seconds(s["median_s"]), f"{s['median_mib_per_s']:,.0f}", notes.get(name, "")]
        for name, s in stats.items()
    ]
    print(table(["contender", "median", "MiB/s", "ratio (throughput)"], rows))
    print("\npeak memory growth (fresh subprocess, over a warmed-up baseline)")
    mem_rows = [
        [
            name,
            f"{m['ru_maxrss_growth_kib'] / 1024:.1f}",
            "-" if m["hwm_growth_kib"] is None else f"{m['hwm_growth_kib'] / 1024:.1f}",
        ]
        for name, m in memory.items()
    ]
    print(table(["operation", "ru_maxrss growth MiB", "VmHWM growth MiB"], mem_rows))

    publish_note = "moto copies in Python" if server.kind == "moto" else ""
    targets = [
        Target("s3 put (stage+publish) vs raw put", put_ratio, ">=", 0.8, note=publish_note),
        Target("s3 get (verified) vs raw get+sha256", get_ratio, ">=", 0.8),
        Target("s3 put (stage+publish) vs raw put of chunks", chunks_ratio, ">=", 0.8, informational=True),
        Target("s3 stage alone vs raw put", stage_ratio, ">=", 0.8, informational=True),
        Target(
            "s3 get (verified) vs raw get, no hash",
            plain_get_ratio,
            ">=",
            0.8,
            informational=True,
            note=f"sha256 needs CPU; {os.cpu_count()} CPUs, shared with the server",
        ),
        Target("s3 put peak memory growth", memory["objstore put"]["growth_mib"], "<=", 64, " MiB"),
        Target("s3 get peak memory growth", memory["objstore get"]["growth_mib"], "<=", 64, " MiB"),
    ]
    print_targets(targets)
    return save_results(
        "s3",
        args,
        environment={**environment(args), "server": server.kind},
        params={
            "size_mib": size_mib,
            "rounds": rounds,
            "chunk_bytes": CHUNK,
            "part_size": PART_SIZE,
            "max_concurrency": MAX_CONCURRENCY,
        },
        timings=stats,
        ratios={
            "put_vs_raw": put_ratio,
            "get_vs_raw": get_ratio,
            "stage_vs_raw_put": stage_ratio,
            "put_vs_raw_chunks": chunks_ratio,
            "get_vs_raw_unverified": plain_get_ratio,
        },
        paired_ratios={
            "put_vs_raw": paired_ratio(samples["raw put"], samples["objstore put"]),
            "get_vs_raw": paired_ratio(samples["raw get"], samples["objstore get"]),
        },
        memory=memory,
        targets=targets,
    )


if __name__ == "__main__":
    sys.exit(main())
