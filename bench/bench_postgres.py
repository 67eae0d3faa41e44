"""Small pipeline-object puts on PostgreSQL against psycopg's own single-row INSERT, on one server, one run.

objstore (all three databases on PostgreSQL, blobs on the local disk, the default pipeline limit of 50)
stores a 100-byte value per put into pipelines below their limit (spread so that each ends with 41
objects, as in bench_small), and into pipelines at their limit (every put evicts the oldest). The baseline
is what a hand-written store would do at least: psycopg, one autocommit connection, a prepared single-row
INSERT of the same key and value into an indexed table. Needs ``OBJSTORE_TEST_POSTGRES_URL`` (or
``--url``): each round works in a schema of its own, dropped afterwards. Quote the ratios, not the times.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from common import (
    Target,
    interleave,
    parser,
    print_targets,
    print_throughput,
    rounds_for,
    save_results,
    stopwatch,
    summarize,
)

VALUE = b"v" * 100
LIMIT = 50  # objstore's default pipeline_object_limit
PER_PIPELINE = 40  # below the limit: puts spread so that each pipeline ends with 40 objects (as bench_small)


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@contextmanager
def schema(url: str) -> Iterator[str]:
    import psycopg

    name = f"objstore_bench_{secrets.token_hex(4)}"
    with psycopg.connect(_plain(url), autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {name}")  # type: ignore[arg-type]
    try:
        separator = "&" if "?" in url else "?"
        yield f"{url}{separator}options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(_plain(url), autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {name} CASCADE")  # type: ignore[arg-type]


def raw_insert(url: str, n: int) -> Callable[[Path], float]:
    def run(_folder: Path) -> float:
        import psycopg

        with schema(url) as scoped, psycopg.connect(_plain(scoped), autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE raw_objects (id bigserial PRIMARY KEY, scope int NOT NULL, key text NOT NULL, "
                "data bytea NOT NULL, UNIQUE (scope, key))"
            )
            insert = "INSERT INTO raw_objects (scope, key, data) VALUES (%s, %s, %s)"
            lap = stopwatch()
            for i in range(n):
                conn.execute(insert, (i % 10, f"k{i}", VALUE), prepare=True)
            return lap()

    return run


def objstore_put(url: str, n: int, *, at_limit: bool) -> Callable[[Path], float]:
    def run(folder: Path) -> float:
        from objstore.config import Settings
        from objstore.engine import ObjStore

        with schema(url) as scoped:
            database = {"engine": "postgres", "postgres": {"url": scoped}}
            settings = Settings.for_directory(
                folder,
                object_store={**database, "pipeline_object_limit": LIMIT},
                secret_store=database,
                server={"storage_engine": "postgres", "postgres": {"url": scoped}},
            )
            ObjStore(settings, upgrade_schema=False).upgrade()
            with ObjStore(settings) as store:
                count = 10 if at_limit else max(1, n // PER_PIPELINE)
                pipelines = [store.pipeline("bench", f"p{i}").objects for i in range(count)]
                for p, objects in enumerate(pipelines):
                    # Creates each pipeline's row (steady state from here); at the limit, fills it.
                    for i in range(LIMIT if at_limit else 1):
                        objects.put(f"fill{p}-{i}", VALUE)
                lap = stopwatch()
                for i in range(n):
                    pipelines[i % count].put(f"k{i}", VALUE)
                return lap()

    return run


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--url", default=os.environ.get("OBJSTORE_TEST_POSTGRES_URL"), help="PostgreSQL URL")
    args = p.parse_args(argv)
    if not args.url:
        print("bench_postgres: set OBJSTORE_TEST_POSTGRES_URL (or --url) to a PostgreSQL database")
        return 2
    rounds = rounds_for(args, 2, 7)
    n = 200 if args.quick else 2000
    print(f"small put on PostgreSQL: {n} puts/round, {rounds} rounds", file=sys.stderr)
    samples = interleave(
        {
            "psycopg insert": raw_insert(args.url, n),
            "objstore": objstore_put(args.url, n, at_limit=False),
            "objstore at limit": objstore_put(args.url, n, at_limit=True),
        },
        rounds,
        base=args.tmpdir,
        progress="postgres put",
    )
    stats = summarize(samples, n)

    def ratio(contender: str) -> float:
        return float(stats["psycopg insert"]["median_s"] / stats[contender]["median_s"])

    targets = [
        Target("small put on PostgreSQL vs psycopg insert", ratio("objstore"), ">=", 0.6),
        Target(
            "small put at limit on PostgreSQL vs psycopg insert",
            ratio("objstore at limit"),
            ">=",
            0.0,
            note="informational: every put evicts the oldest",
            informational=True,
        ),
    ]
    print_throughput(f"small put on PostgreSQL, {len(VALUE)} B", stats, ["psycopg insert"], "objstore")
    print_targets(targets)
    return save_results("postgres", args, stats=stats, targets=targets)


if __name__ == "__main__":
    sys.exit(main())
