"""What ``start_run`` costs when it expires run objects, at two table sizes.

With ``run_object_expiry = N``, pipeline "target" has run 1 holding E run objects and runs 2..N holding
others; starting run N+1 expires run 1, i.e. deletes exactly E objects. Pipeline "idle" has runs 1..N
with run 1 empty: starting its next run expires nothing. Around them, the object table holds either a
small or a large number of other live objects (half in target's live runs, half in 20 other pipelines).

If expiry walks only the index range of the expired run, both ``start_run`` times stay flat when the
table grows 20x: the ratio large/small is the result.

The two template stores are built once per invocation (scopes and runs through the public API, the bulk
of the rows with one INSERT ... SELECT each, which is 100x faster than 200k puts), closed and
checkpointed; every round copies a template into a fresh folder and opens it.

Writes bench/results/expiry.json.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
from pathlib import Path

from common import (
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

EXPIRY = 5  # run_object_expiry: run 1 expires when run EXPIRY + 1 starts
OTHER_PIPELINES = 20
IDLE_OBJECTS_PER_RUN = 100

_FILL = (
    'INSERT INTO objects (scope_id, run, "key", size, sha256, content_type, created_at, data) '
    "WITH RECURSIVE seq(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM seq WHERE n + 1 < :count) "
    "SELECT :scope, :run, :prefix || n, t.size, t.sha256, t.content_type, t.created_at, t.data "
    "FROM seq, objects AS t WHERE t.id = :template"
)


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def build_template(folder: Path, expiring: int, others: int) -> dict[str, int]:
    """An objstore in ``folder`` laid out as the module docstring says; returns the row counts."""
    store = open_store(folder, object_store={"run_object_expiry": EXPIRY})
    pipelines = {"target": store.pipeline("bench", "target"), "idle": store.pipeline("bench", "idle")}
    for i in range(OTHER_PIPELINES):
        pipelines[f"other-{i:02d}"] = store.pipeline("bench", f"other-{i:02d}")
    for pipe in pipelines.values():
        for _ in range(EXPIRY):
            pipe.start_run()
        pipe.objects.put("seed", b"s" * 100)  # creates the scope row; its row is the template below
    db_path = store.settings.object_store.sqlite.path
    store.close()

    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        scopes = dict(conn.execute("SELECT pipeline, id FROM object_pipelines WHERE namespace = 'bench'"))
        (template,) = conn.execute(
            "SELECT id FROM objects WHERE scope_id = ? AND run = 0", (scopes["target"],)
        ).fetchone()
        conn.execute("BEGIN IMMEDIATE")

        def fill(pipeline: str, run: int, count: int) -> None:
            if count:
                params = {
                    "scope": scopes[pipeline],
                    "run": run,
                    "prefix": f"r{run}-",
                    "count": count,
                    "template": template,
                }
                conn.execute(_FILL, params)

        fill("target", 1, expiring)
        for run, count in zip(range(2, EXPIRY + 1), _split(others // 2, EXPIRY - 1), strict=True):
            fill("target", run, count)
        for i, share in enumerate(_split(others - others // 2, OTHER_PIPELINES)):
            for run, count in zip(range(1, EXPIRY + 1), _split(share, EXPIRY), strict=True):
                fill(f"other-{i:02d}", run, count)
        for run in range(2, EXPIRY + 1):
            fill("idle", run, IDLE_OBJECTS_PER_RUN)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (total,) = conn.execute("SELECT count(*) FROM objects").fetchone()
        (expiring_rows,) = conn.execute(
            "SELECT count(*) FROM objects WHERE scope_id = ? AND run = 1", (scopes["target"],)
        ).fetchone()
    finally:
        conn.close()
    assert expiring_rows == expiring
    return {
        "objects_total": int(total),
        "expiring": int(expiring_rows),
        "other_live": int(total) - int(expiring_rows),
    }


def start_run_round(template: Path, expiring: int) -> RoundFn:
    def run(folder: Path) -> dict[str, float]:
        where = folder / "store"
        shutil.copytree(template, where)
        store = open_store(where, object_store={"run_object_expiry": EXPIRY})
        try:
            target, idle = store.pipeline("bench", "target"), store.pipeline("bench", "idle")
            lap = stopwatch()
            new_run = target.start_run()
            expire_s = lap()
            lap = stopwatch()
            idle.start_run()
            idle_s = lap()
            # Checked after the clock stopped: the right run started and exactly run 1 is gone.
            assert new_run.number == EXPIRY + 1
            assert target.run(1).objects.list() == []
            assert len(target.run(2).objects.list()) > 0
            assert expiring > 0
        finally:
            store.close()
        return {"expire": expire_s, "idle": idle_s}

    return run


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    args = p.parse_args(argv)
    rounds = rounds_for(args, quick=3, full=7)
    expiring = 2_000 if args.quick else 10_000
    small, large = (2_000, 40_000) if args.quick else (10_000, 200_000)
    names = {"small": f"{small:,} others", "large": f"{large:,} others"}
    with fresh_dir(args.tmpdir, prefix="objstore-bench-tpl-") as tpl:
        layouts: dict[str, dict[str, int]] = {}
        for size, others in (("small", small), ("large", large)):
            print(f"expiry: building template with {others:,} other objects", file=sys.stderr)
            layouts[size] = build_template(tpl / size, expiring, others)
        samples = interleave(
            {names[s]: start_run_round(tpl / s, expiring) for s in ("small", "large")},
            rounds,
            base=args.tmpdir,
            progress="expiry",
        )
    stats = summarize(samples)
    med = {k: v["median_s"] for k, v in stats.items()}
    s_name, l_name = names["small"], names["large"]
    expire_growth = med[f"{l_name} expire"] / med[f"{s_name} expire"]
    idle_growth = med[f"{l_name} idle"] / med[f"{s_name} idle"]

    print(f"\nstart_run, run_object_expiry={EXPIRY}, {expiring:,} objects expired, {rounds} rounds")
    rows = []
    for size in ("small", "large"):
        lay = layouts[size]
        e, i = med[f"{names[size]} expire"], med[f"{names[size]} idle"]
        rows.append(
            [
                names[size],
                f"{lay['objects_total']:,}",
                fmt_seconds(e),
                f"{e / expiring * 1e6:.1f}",
                fmt_seconds(i),
            ]
        )
    rows.append(
        ["large / small", f"{large / small:.0f}x more", f"{expire_growth:.2f}x", "", f"{idle_growth:.2f}x"]
    )
    print(
        table(["table", "rows", "start_run expiring", "µs/expired obj", "start_run nothing to expire"], rows)
    )
    targets = [
        Target(
            "start_run expiring: time(large)/time(small)",
            expire_growth,
            "<=",
            1.5,
            "x",
            f"table {large // small}x larger; flat means cost tracks what is expired",
        ),
        Target(
            "start_run idle: time(large)/time(small)",
            idle_growth,
            "<=",
            1.5,
            "x",
            "nothing to expire: must not scan the table",
        ),
    ]
    print_targets(targets)
    return save_results(
        "expiry",
        args,
        params={
            "rounds": rounds,
            "run_object_expiry": EXPIRY,
            "expiring": expiring,
            "other_live_small": small,
            "other_live_large": large,
            "other_pipelines": OTHER_PIPELINES,
        },
        layouts=layouts,
        timings=stats,
        ratios={"expire_large_over_small": expire_growth, "idle_large_over_small": idle_growth},
        paired_ratios={
            # paired_ratio(a, b) is the median over rounds of a/b: here time(large)/time(small).
            f"{ph}_large_over_small": paired_ratio(samples[f"{l_name} {ph}"], samples[f"{s_name} {ph}"])
            for ph in ("expire", "idle")
        },
        us_per_expired_object={n: med[f"{names[n]} expire"] / expiring * 1e6 for n in names},
        targets=targets,
    )


if __name__ == "__main__":
    sys.exit(main())
