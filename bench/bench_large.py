"""Large objects: a streamed put and a streamed get of one big file, against a raw durable loop.

objstore: ``pipe.objects.put(key, open(src, "rb"))`` and
``with pipe.objects.open(key) as f: while f.read(1 MiB): ...`` (which verifies the sha256 at EOF).
raw: the same durable work by hand: read 1 MiB chunks, sha256, write a temp file, fsync, rename into a
folder, fsync the folder; and read back in 1 MiB chunks with sha256.

Both read a source file that is in the page cache, and the get reads content just written (also cached):
this measures objstore's own overhead on the data path, the part it controls.

Peak memory: each operation runs again in a fresh subprocess, which resets its peak RSS (VmHWM, via
/proc/self/clear_refs) after opening the store and reports the growth; ru_maxrss and a tracemalloc peak
(Python allocations only, separate run) are recorded too.

Writes bench/results/large.json.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import re
import resource
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

from common import (
    BENCH_DIR,
    MiB,
    RoundFn,
    Target,
    fmt_seconds,
    fresh_dir,
    interleave,
    open_store,
    paired_ratio,
    parser,
    print_targets,
    rounds_for,
    save_results,
    stopwatch,
    summarize,
    table,
)

CHUNK = 1 << 20
KEY = "big.bin"


def make_source(folder: Path, size: int) -> Path:
    """A file of random bytes (incompressible, unique content), written once and fsync-ed."""
    path = folder / "source.bin"
    with open(path, "wb") as out:
        for _ in range(size // CHUNK):
            out.write(os.urandom(CHUNK))
        out.write(os.urandom(size % CHUNK))
        out.flush()
        os.fsync(out.fileno())
    return path


def absorb_page_cache_stall(folder: Path, size: int) -> None:
    """Untimed: write ``size`` bytes in aligned 1 MiB chunks to a scratch file, then delete it.

    Measured on these VMs (Linux 6.18, ext4): the first aligned 1 MiB-chunk write of a big file after a
    file written at unaligned offsets was deleted spends ~1 s of kernel CPU in write() (page-cache folio
    allocation; 0.07 s normally). objstore writes unaligned (its first chunk is threshold + 1 bytes), so
    without this the raw loop paid for objstore's previous round whenever it ran right after it, and the
    ratio depended on the order. Both contenders run this before their timed part.
    """
    scratch = folder / "scratch.bin"
    zeros = bytes(CHUNK)
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(size // CHUNK):
            os.write(fd, zeros)
    finally:
        os.close(fd)
    os.unlink(scratch)  # before writeback: it never reaches the disk


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the two contenders --------------------------------------------------------------------------------


def raw_put(src: Path, folder: Path) -> Path:
    """The durable content-addressed write objstore promises, with nothing else around it."""
    staging, blobs = folder / "staging", folder / "blobs"
    hasher = hashlib.sha256()
    temp = staging / "put.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with open(src, "rb") as source:
            while chunk := source.read(CHUNK):
                hasher.update(chunk)
                os.write(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    final = blobs / hasher.hexdigest()
    os.rename(temp, final)
    _fsync_dir(blobs)
    return final


def raw_get(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def objstore_get(objects: Any, key: str) -> None:
    with objects.open(key) as f:
        while f.read(CHUNK):
            pass


def objstore_round(src: Path) -> RoundFn:
    def run(folder: Path) -> dict[str, float]:
        store = open_store(folder)
        try:
            objects = store.pipeline("bench", "large").objects
            objects.put("warm-up", b"x")  # creates the pipeline's scope row outside the timing
            absorb_page_cache_stall(folder, src.stat().st_size)
            lap = stopwatch()
            with open(src, "rb") as source:
                info = objects.put(KEY, source)
            put_s = lap()
            lap = stopwatch()
            objstore_get(objects, KEY)
            get_s = lap()
            assert info.size == src.stat().st_size
        finally:
            store.close()
        return {"put": put_s, "get": get_s}

    return run


def raw_round(src: Path) -> RoundFn:
    def run(folder: Path) -> dict[str, float]:
        (folder / "staging").mkdir()
        (folder / "blobs").mkdir()
        absorb_page_cache_stall(folder, src.stat().st_size)
        lap = stopwatch()
        final = raw_put(src, folder)
        put_s = lap()
        lap = stopwatch()
        digest = raw_get(final)
        get_s = lap()
        assert digest == final.name
        return {"put": put_s, "get": get_s}

    return run


# -- memory, in a fresh process --------------------------------------------------------------------------


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
            f.write("5")  # Linux: reset VmHWM to the current RSS
        return True
    except OSError:
        return False


def child(mode: str, store_dir: Path, src: Path, key: str, trace: bool) -> dict[str, Any]:
    """One operation in this (fresh) process; how much its peak memory grew."""
    store = None
    objects: Any = None
    if mode.startswith("objstore"):
        store = open_store(store_dir)
        objects = store.pipeline("bench", "large").objects
        objects.put("warm-up", b"x", overwrite=True)
    else:
        for sub in ("staging", "blobs"):
            (store_dir / sub).mkdir(exist_ok=True)
    gc.collect()
    rss0 = _status_kib("VmRSS")
    reset = _reset_peak()
    maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if trace:
        tracemalloc.start()
    if mode == "objstore-put":
        with open(src, "rb") as source:
            objects.put(key, source)
    elif mode == "objstore-get":
        objstore_get(objects, key)
    elif mode == "raw-put":
        raw_put(src, store_dir)
    elif mode == "raw-get":
        raw_get(next((store_dir / "blobs").iterdir()))
    else:
        raise SystemExit(f"unknown mode {mode}")
    result: dict[str, Any] = {"mode": mode}
    if trace:
        result["tracemalloc_peak_bytes"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    else:
        hwm = _status_kib("VmHWM")
        result["rss_before_kib"] = rss0
        result["hwm_reset"] = reset
        result["hwm_growth_kib"] = None if hwm is None or rss0 is None or not reset else hwm - rss0
        result["ru_maxrss_delta_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - maxrss0
    if store is not None:
        store.close()
    return result


def run_child(mode: str, store_dir: Path, src: Path, key: str, trace: bool = False) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(BENCH_DIR / "bench_large.py"),
        "--child",
        mode,
        "--store",
        str(store_dir),
        "--src",
        str(src),
        "--key",
        key,
    ]
    if trace:
        cmd.append("--trace")
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory child {mode} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure_memory(src: Path, base: Path | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    with fresh_dir(base) as objdir, fresh_dir(base) as rawdir:
        out["objstore put"] = run_child("objstore-put", objdir, src, "rss")
        out["objstore get"] = run_child("objstore-get", objdir, src, "rss")
        out["objstore put"].update(run_child("objstore-put", objdir, src, "trace", trace=True))
        out["objstore get"].update(run_child("objstore-get", objdir, src, "rss", trace=True))
        out["raw put"] = run_child("raw-put", rawdir, src, "")
        out["raw get"] = run_child("raw-get", rawdir, src, "")
    for entry in out.values():
        entry.pop("mode", None)
        hwm = entry.get("hwm_growth_kib")
        # The best available measure: VmHWM growth when the peak could be reset, else ru_maxrss delta.
        entry["growth_mib"] = (hwm if hwm is not None else entry["ru_maxrss_delta_kib"]) / 1024
    return out


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--size-mib", type=int, default=None, help="object size (default 256, quick 32)")
    p.add_argument("--child", default=None, help="internal: run one measured operation")
    p.add_argument("--store", type=Path, default=None)
    p.add_argument("--src", type=Path, default=None)
    p.add_argument("--key", default=KEY)
    p.add_argument("--trace", action="store_true")
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.store, args.src, args.key, args.trace)))
        return 0

    size_mib = args.size_mib or (32 if args.quick else 256)
    size = size_mib * MiB
    rounds = rounds_for(args, quick=3, full=5)
    base = args.tmpdir
    with fresh_dir(base, prefix="objstore-bench-src-") as srcdir:
        print(f"large: writing a {size_mib} MiB source file", file=sys.stderr)
        src = make_source(srcdir, size)
        samples = interleave(
            {"objstore": objstore_round(src), "raw": raw_round(src)}, rounds, base=base, progress="large"
        )
        print("large: peak memory in fresh subprocesses", file=sys.stderr)
        memory = measure_memory(src, base)

    stats = summarize(samples)
    for entry in stats.values():
        entry["median_mib_per_s"] = size_mib / entry["median_s"]
    put_ratio = stats["raw put"]["median_s"] / stats["objstore put"]["median_s"]
    get_ratio = stats["raw get"]["median_s"] / stats["objstore get"]["median_s"]

    print(f"\nlarge object, {size_mib} MiB, {rounds} rounds")
    rows = []
    for op, ratio in (("put", put_ratio), ("get", get_ratio)):
        for who in ("objstore", "raw"):
            s = stats[f"{who} {op}"]
            rows.append(
                [
                    f"{who} {op}",
                    fmt_seconds(s["median_s"]),
                    f"{s['median_mib_per_s']:,.0f}",
                    f"{ratio:.2f}x vs raw" if who == "objstore" else "",
                ]
            )
    print(table(["contender", "median", "MiB/s", "ratio (throughput)"], rows))
    print("\npeak memory growth (fresh subprocess)")
    mem_rows = [
        [
            name,
            f"{m['growth_mib']:.1f}",
            f"{m['ru_maxrss_delta_kib'] / 1024:.1f}",
            f"{m['tracemalloc_peak_bytes'] / MiB:.2f}" if "tracemalloc_peak_bytes" in m else "-",
        ]
        for name, m in memory.items()
    ]
    print(table(["operation", "VmHWM growth MiB", "ru_maxrss delta MiB", "tracemalloc peak MiB"], mem_rows))

    targets = [
        Target("large put vs raw durable loop", put_ratio, ">=", 0.85),
        Target("large get vs raw read+sha256", get_ratio, ">=", 0.85),
        Target("large put peak memory growth", memory["objstore put"]["growth_mib"], "<=", 16, " MiB"),
        Target("large get peak memory growth", memory["objstore get"]["growth_mib"], "<=", 16, " MiB"),
    ]
    print_targets(targets)
    return save_results(
        "large",
        args,
        params={"size_mib": size_mib, "rounds": rounds, "chunk_bytes": CHUNK},
        timings=stats,
        ratios={"put_vs_raw": put_ratio, "get_vs_raw": get_ratio},
        paired_ratios={
            "put_vs_raw": paired_ratio(samples["raw put"], samples["objstore put"]),
            "get_vs_raw": paired_ratio(samples["raw get"], samples["objstore get"]),
        },
        memory=memory,
        targets=targets,
    )


if __name__ == "__main__":
    sys.exit(main())
