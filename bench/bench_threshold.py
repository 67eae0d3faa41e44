"""Inline vs blob store: put and get of 1 KiB .. 1 MiB values, to choose ``blobs.threshold``.

For each size, two stores side by side: "inline" (threshold above the size: the value goes in the
objects row) and "blob" (threshold 0: content-addressed file, fsync-ed, row refers to it). Each round
puts N distinct values (distinct content, so the blob store cannot skip a write by deduplication) into
a fresh store, then gets them all back (``get``: whole value, verified).

Two numbers, both counted from the smallest size upward without a gap: the put+get crossover (largest
size at which one inline put plus one get is at least as fast as the blob store) and the recommendation
(largest size at which inline is faster to put AND not slower to get, within 5% noise). Inline values
also make the database and its WAL bigger, which this benchmark does not price: see the README.

Writes bench/results/threshold.json.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from common import (
    KiB,
    MiB,
    RoundFn,
    Target,
    interleave,
    median,
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

SIZES_KIB = (1, 4, 16, 32, 64, 128, 256, 512, 1024)
INLINE_THRESHOLD = 2 * MiB  # above every size measured
GET_TOLERANCE = 0.95  # round-to-round noise of the get ratio here is about ±5%


def values_for(size: int, count: int) -> list[bytes]:
    """``count`` distinct values of ``size`` bytes: one random body, a distinct 8-byte prefix each."""
    body = os.urandom(size)
    return [i.to_bytes(8, "big") + body[8:] if size >= 8 else os.urandom(size) for i in range(count)]


def store_round(threshold: int, values: list[bytes]) -> RoundFn:
    def run(folder: Path) -> dict[str, float]:
        store = open_store(
            folder,
            blobs={"threshold": threshold},
            object_store={"pipeline_object_limit": len(values) + 10},  # no eviction here
        )
        try:
            objects = store.pipeline("bench", "threshold").objects
            objects.put("warm-up", b"x")
            put, get = objects.put, objects.get
            keys = [f"v{i:05d}" for i in range(len(values))]
            lap = stopwatch()
            for key, value in zip(keys, values, strict=True):
                put(key, value)
            put_s = lap()
            lap = stopwatch()
            for key in keys:
                get(key)
            get_s = lap()
            assert get(keys[-1]) == values[-1]
        finally:
            store.close()
        return {"put": put_s, "get": get_s}

    return run


def count_for(size: int, quick: bool) -> int:
    """Values per round: up to 500, and at most 32 MiB of data per store (8 MiB in quick mode)."""
    cap, budget = (100, 8 * MiB) if quick else (500, 32 * MiB)
    return max(8, min(cap, budget // size))


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    args = p.parse_args(argv)
    rounds = rounds_for(args, quick=3, full=5)
    results: dict[str, Any] = {}
    rows = []
    crossover: int | None = None  # largest size where inline put+get >= blob put+get
    recommended: int | None = None  # largest size where inline wins the put and does not lose the get
    contiguous = both_contiguous = True
    for size_kib in SIZES_KIB:
        size = size_kib * KiB
        count = count_for(size, args.quick)
        values = values_for(size, count)
        samples = interleave(
            {"inline": store_round(INLINE_THRESHOLD, values), "blob": store_round(0, values)},
            rounds,
            base=args.tmpdir,
            progress=f"threshold {size_kib} KiB",
        )
        stats = summarize(samples, count)
        inline_total = [p + g for p, g in zip(samples["inline put"], samples["inline get"], strict=True)]
        blob_total = [p + g for p, g in zip(samples["blob put"], samples["blob get"], strict=True)]
        put_ratio = stats["blob put"]["median_s"] / stats["inline put"]["median_s"]
        get_ratio = stats["blob get"]["median_s"] / stats["inline get"]["median_s"]
        total_ratio = median(blob_total) / median(inline_total)
        if total_ratio >= 1.0 and contiguous:
            crossover = size
        else:
            contiguous = False
        # GET_TOLERANCE: a get ratio within noise of 1 counts as "not slower".
        if put_ratio >= 1.0 and get_ratio >= GET_TOLERANCE and both_contiguous:
            recommended = size
        else:
            both_contiguous = False
        results[f"{size_kib}KiB"] = {
            "size_bytes": size,
            "values_per_round": count,
            "timings": stats,
            "inline_speedup": {"put": put_ratio, "get": get_ratio, "put_plus_get": total_ratio},
            "paired_inline_speedup_put_plus_get": paired_ratio(blob_total, inline_total),
        }
        us = {k: v["median_us_per_op"] for k, v in stats.items()}
        rows.append(
            [
                f"{size_kib} KiB",
                count,
                f"{us['inline put']:.0f}",
                f"{us['blob put']:.0f}",
                f"{put_ratio:.2f}x",
                f"{us['inline get']:.0f}",
                f"{us['blob get']:.0f}",
                f"{get_ratio:.2f}x",
                f"{total_ratio:.2f}x",
            ]
        )

    print(f"\ninline vs blob, {rounds} rounds (µs per op, medians; ratio > 1: inline faster)")
    print(
        table(
            ["size", "n", "inline put", "blob put", "put", "inline get", "blob get", "get", "put+get"], rows
        )
    )
    rec_kib = (recommended or 0) // KiB
    cross_kib = (crossover or 0) // KiB
    print(
        f"\nput+get crossover: {crossover} bytes ({cross_kib} KiB): the largest size up to which inline "
        "put+get (one each) is at least as fast as the blob store"
    )
    print(
        f"recommended blobs.threshold: {recommended} bytes ({rec_kib} KiB): the largest size up to which "
        f"inline is faster to put and not slower to get (get ratio >= {GET_TOLERANCE}); objects are read "
        "more often than written, and inline values grow the database and its WAL"
    )
    from objstore.config import DEFAULT_BLOB_THRESHOLD

    targets = [
        Target(
            "current default threshold <= recommended",
            DEFAULT_BLOB_THRESHOLD / KiB,
            "<=",
            float(rec_kib),
            " KiB",
            "is the default on the fast side?",
            informational=True,
        ),
    ]
    print_targets(targets)
    return save_results(
        "threshold",
        args,
        params={"rounds": rounds, "sizes_kib": list(SIZES_KIB), "inline_threshold": INLINE_THRESHOLD},
        sizes=results,
        recommended_threshold_bytes=recommended,
        crossover_put_plus_get_bytes=crossover,
        get_tolerance=GET_TOLERANCE,
        current_default_threshold_bytes=DEFAULT_BLOB_THRESHOLD,
        targets=targets,
    )


if __name__ == "__main__":
    sys.exit(main())
