"""Vault benchmarks.

get: ``pipe.secrets.get`` (database read + AES-256-GCM open) against ``pipe.objects.get`` of a 100-byte
object in the same kind of store, interleaved round by round. Target: the secret get at >= 0.8x.

rotation: ``store.rotate_data_key()`` over 100,000 secrets (5,000 with --quick): total time, peak memory
growth (tracemalloc), and the longest write transaction (every ``Database.write`` is timed). Target: no
write transaction held over 100 ms. ``store.rotate_encryption_key()`` (re-wrapping the data keys) is
timed too.
"""

from __future__ import annotations

import random
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from common import (
    RoundFn,
    Target,
    fresh_dir,
    interleave,
    open_store,
    parser,
    print_targets,
    print_throughput,
    rounds_for,
    save_results,
    stopwatch,
    summarize,
)

KEY = "bench-key-0123456789abcdefghijkl"  # 32 bytes
NEW_KEY = "bench-key-rotated-0123456789abcd"
VALUE = b"s" * 100


def _store(folder: Path) -> Any:
    return open_store(
        folder,
        secret_store={"sqlite": {"encryption_key": KEY}},
        object_store={"pipeline_object_limit": 100_000},
    )


def timed_gets(collection: str, names: list[str], lookups: list[str]) -> RoundFn:
    """Put ``names`` into ``pipe.<collection>`` ("secrets" or "objects"), then time the lookups."""

    def run(folder: Path) -> float:
        store = _store(folder)
        try:
            handle = getattr(store.pipeline("bench", "vault"), collection)
            for name in names:
                handle.put(name, VALUE)
            # Secret puts leave "secret written" notices for the event log's background writer; reading
            # the log writes them now, so that the timed gets do not share the interpreter with that batch
            # (about 7 ms: 0.7 us a get over a quick round).
            store.events.list(limit=1)
            get = handle.get
            lap = stopwatch()
            for name in lookups:
                get(name)
            return lap()
        finally:
            store.close()

    return run


def rotation(count: int, base: Path | None) -> dict[str, Any]:
    """Data-key rotation over ``count`` secrets, with every write transaction timed."""
    import objstore.db.database as database_module

    with fresh_dir(base) as folder:
        store = _store(folder)
        try:
            secrets = store.pipeline("bench", "vault").secrets
            for i in range(count):
                secrets.put(f"S{i:07d}", VALUE)
            durations: list[float] = []
            real_write = database_module.Database.write

            def timed_write(self: Any, work: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return real_write(self, work, **kwargs)
                finally:
                    durations.append(time.perf_counter() - start)

            database_module.Database.write = timed_write  # type: ignore[method-assign]
            try:
                tracemalloc.start()
                lap = stopwatch()
                moved = store.rotate_data_key()
                seconds = lap()
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                kek_lap = stopwatch()
                store.rotate_encryption_key(NEW_KEY)
                kek_seconds = kek_lap()
            finally:
                database_module.Database.write = real_write  # type: ignore[method-assign]
            assert moved == count
            assert secrets.get(f"S{count - 1:07d}") == VALUE
            return {
                "secrets": count,
                "seconds": seconds,
                "per_secret_us": seconds / count * 1e6,
                "transactions": len(durations),
                "longest_transaction_ms": max(durations) * 1000,
                "peak_traced_memory_mib": peak / (1 << 20),
                "rotate_encryption_key_ms": kek_seconds * 1000,
            }
        finally:
            store.close()


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    args = p.parse_args(argv)
    rounds = rounds_for(args, quick=3, full=7)
    n_names = 1_000
    n_gets = 10_000 if args.quick else 50_000
    n_rotate = 5_000 if args.quick else 100_000
    rng = random.Random(3)
    names = [f"S{i:05d}" for i in range(n_names)]
    lookups = [rng.choice(names) for _ in range(n_gets)]

    print(f"secret get vs object get: {n_gets} gets/round, {rounds} rounds", file=sys.stderr)
    samples = interleave(
        {
            "secret get": timed_gets("secrets", names, lookups),
            "object get": timed_gets("objects", names, lookups),
        },
        rounds,
        base=args.tmpdir,
        progress="get",
    )
    stats = summarize(samples, n_gets)
    print(f"rotate_data_key over {n_rotate} secrets", file=sys.stderr)
    rotated = rotation(n_rotate, args.tmpdir)

    ratio = float(stats["object get"]["median_s"] / stats["secret get"]["median_s"])
    targets = [
        Target("secret get vs 100 B object get", ratio, ">=", 0.8),
        Target(
            f"rotate_data_key, {n_rotate} secrets: longest write transaction",
            rotated["longest_transaction_ms"],
            "<=",
            100,
            unit=" ms",
        ),
        Target(
            f"rotate_data_key, {n_rotate} secrets: peak traced memory",
            rotated["peak_traced_memory_mib"],
            "<=",
            16,
            unit=" MiB",
            note="batches of 500: memory does not grow with the number of secrets",
        ),
    ]
    print_throughput("get, 100 B", stats, ["object get"], "secret get")
    print(
        f"\nrotate_data_key: {rotated['secrets']} secrets in {rotated['seconds']:.2f} s "
        f"({rotated['per_secret_us']:.1f} us each, {rotated['transactions']} transactions, longest "
        f"{rotated['longest_transaction_ms']:.1f} ms); rotate_encryption_key: "
        f"{rotated['rotate_encryption_key_ms']:.1f} ms"
    )
    print_targets(targets)
    return save_results(
        "secrets",
        args,
        params={"rounds": rounds, "secrets": n_names, "gets_per_round": n_gets, "rotated": n_rotate},
        get=stats,
        ratios={"secret_get_vs_object_get": ratio},
        rotation=rotated,
        targets=targets,
    )


if __name__ == "__main__":
    sys.exit(main())
