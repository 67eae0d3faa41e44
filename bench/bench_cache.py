"""Blob cache: verified reads through CachedBlobBackend (hit, miss) against a plain FilesystemBlobBackend.

direct: ``FilesystemBlobBackend.open`` wrapped in ``VerifiedReader``, read in 1 MiB chunks to EOF (what
objstore's streamed get does). hit: the same through a ``CachedBlobBackend`` in front of that store,
whose cache already holds the blobs (filled untimed). miss: the same through a cache with an empty
folder, so every read first downloads into the cache (hashed, fsynced, renamed) and then reads the copy.

The slow store is written once and read in every round; its files and the fresh cache files are in the
page cache, so this measures the cache's own cost on the data path, not a disk or a network. A real slow
store (object storage) adds its latency and bandwidth to direct and miss alike; a hit does not pay them.
The miss's extra time over direct is also what filling on publish (write-through) would add to every
put, read here or not: that is why the cache fills on first read.

Writes bench/results/cache.json.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from common import (
    MiB,
    RoundFn,
    Target,
    fmt_seconds,
    fresh_dir,
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

from objstore.blobs.base import BlobBackend
from objstore.blobs.cache import CachedBlobBackend
from objstore.blobs.filesystem import FilesystemBlobBackend
from objstore.blobs.verify import VerifiedReader

CHUNK = 1 << 20
CONTENDERS = ("direct", "hit", "miss")


def sizes_for(quick: bool) -> list[tuple[int, int]]:
    """(blob MiB, blobs per round): enough 1 MiB blobs that per-open costs show, one big blob."""
    return [(1, 8), (16, 1)] if quick else [(1, 32), (64, 1)]


def build_slow(folder: Path, size: int, count: int) -> tuple[FilesystemBlobBackend, list[str]]:
    """The slow store, written once: ``count`` random blobs of ``size`` bytes, in aligned 1 MiB chunks."""
    slow = FilesystemBlobBackend(folder / "slow")
    digests = []
    for _ in range(count):
        data = os.urandom(size)
        staged = slow.stage(data[i : i + CHUNK] for i in range(0, size, CHUNK))
        slow.publish(staged)
        slow.discard(staged)
        digests.append(staged.sha256)
    return slow, digests


def read_all(backend: BlobBackend, digests: list[str], size: int) -> None:
    for digest in digests:
        with VerifiedReader(backend.open(digest), sha256=digest, size=size, what="bench blob") as reader:
            while reader.read(CHUNK):
                pass


def direct_round(slow: BlobBackend, digests: list[str], size: int) -> RoundFn:
    def run(folder: Path) -> float:
        lap = stopwatch()
        read_all(slow, digests, size)
        return lap()

    return run


def cache_round(slow: BlobBackend, digests: list[str], size: int, *, warm: bool) -> RoundFn:
    def run(folder: Path) -> float:
        cache = CachedBlobBackend(slow, folder / "cache", max_bytes=2 * size * len(digests))
        if warm:
            read_all(cache, digests, size)  # untimed: the fills
        lap = stopwatch()
        read_all(cache, digests, size)
        seconds = lap()
        wanted = (len(digests), len(digests)) if warm else (0, len(digests))
        assert (cache.hits, cache.misses) == wanted, (cache.hits, cache.misses)
        return seconds

    return run


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    args = p.parse_args(argv)
    rounds = rounds_for(args, quick=3, full=7)
    results: dict[str, Any] = {}
    rows = []
    targets = []
    for size_mib, count in sizes_for(args.quick):
        size = size_mib * MiB
        label = f"{size_mib} MiB"
        with fresh_dir(args.tmpdir, prefix="objstore-bench-slow-") as slow_dir:
            print(f"cache: writing {count} x {label} to the slow store", file=sys.stderr)
            slow, digests = build_slow(slow_dir, size, count)
            samples = interleave(
                {
                    "direct": direct_round(slow, digests, size),
                    "hit": cache_round(slow, digests, size, warm=True),
                    "miss": cache_round(slow, digests, size, warm=False),
                },
                rounds,
                base=args.tmpdir,
                progress=f"cache {label}",
            )
        stats = summarize(samples, count)
        total_mib = size_mib * count
        for entry in stats.values():
            entry["median_mib_per_s"] = total_mib / entry["median_s"]
        direct = stats["direct"]["median_s"]
        ratios = {name: direct / stats[name]["median_s"] for name in ("hit", "miss")}
        fill_ms_per_mib = (stats["miss"]["median_s"] - direct) / total_mib * 1e3
        results[label] = {
            "size_bytes": size,
            "blobs_per_round": count,
            "timings": stats,
            "ratios_vs_direct": ratios,
            "paired_ratios_vs_direct": {
                name: paired_ratio(samples["direct"], samples[name]) for name in ("hit", "miss")
            },
            "fill_extra_ms_per_mib": fill_ms_per_mib,
        }
        for name in CONTENDERS:
            s = stats[name]
            rows.append(
                [
                    f"{label} {name}",
                    count,
                    fmt_seconds(s["median_s"] / count),
                    f"{s['median_mib_per_s']:,.0f}",
                    f"{ratios[name]:.2f}x" if name in ratios else "",
                ]
            )
        targets.append(Target(f"{label} cache hit vs direct read", ratios["hit"], ">=", 0.9))
        targets.append(
            Target(
                f"{label} cache miss vs direct read",
                ratios["miss"],
                ">=",
                0.33,
                note=f"the fill adds {fill_ms_per_mib:.2f} ms/MiB",
                informational=True,
            )
        )

    print(f"\nverified reads, {rounds} rounds (medians; ratio = direct time / contender time, > 1: faster)")
    print(table(["contender", "n", "per blob", "MiB/s", "vs direct"], rows))
    print_targets(targets)
    return save_results(
        "cache",
        args,
        params={"rounds": rounds, "chunk_bytes": CHUNK, "sizes": sizes_for(args.quick)},
        results=results,
        targets=targets,
    )


if __name__ == "__main__":
    sys.exit(main())
