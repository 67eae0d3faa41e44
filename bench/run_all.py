"""Run every benchmark (quick or full), then print one table of ratios against targets.

Each benchmark runs in its own subprocess (a clean heap and import state each; a crash in one does not
lose the others) and writes its own bench/results/<name>.json; this script reads them back and writes
bench/results/summary.json. Exit status: 0 when every benchmark ran (or was skipped for want of its
server), 1 if one crashed. A FAIL against a target does not change the exit status: these are
measurements, not tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from common import BENCH_DIR, RESULTS_DIR, environment, parser, table

BENCHMARKS = (
    "small",
    "large",
    "threshold",
    "expiry",
    "startup",
    "secrets",
    "events",
    "cache",
    "postgres",
    "s3",
    "http",
)
# Benchmarks that need a server the machine may not have: the variable that names it.
NEEDS = {"postgres": "OBJSTORE_TEST_POSTGRES_URL"}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--only", nargs="*", choices=BENCHMARKS, default=None, help="run only these")
    p.add_argument("--profile", action="store_true", help="then run profile_paths.py (where the time goes)")
    args = p.parse_args(argv)
    passthrough = ["--quick"] if args.quick else []
    if args.tmpdir:
        passthrough += ["--tmpdir", str(args.tmpdir)]
    if args.rounds:
        passthrough += ["--rounds", str(args.rounds)]
    chosen = args.only or list(BENCHMARKS)
    runs: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for name in chosen:
        result_file = RESULTS_DIR / f"{name}.json"
        result_file.unlink(missing_ok=True)  # never report a previous run's numbers as this one's
        print(f"\n===== {name} =====", flush=True)
        needed = NEEDS.get(name)
        if needed and not os.environ.get(needed):
            skipped[name] = f"skipped: set {needed}"
            print(skipped[name])
            continue
        start = time.perf_counter()
        cmd = [sys.executable, str(BENCH_DIR / f"bench_{name}.py"), *passthrough]
        done = subprocess.run(cmd, check=False)
        seconds = time.perf_counter() - start
        entry: dict[str, Any] = {"exit_code": done.returncode, "seconds": round(seconds, 1)}
        if done.returncode == 0 and result_file.exists():
            entry["result"] = json.loads(result_file.read_text(encoding="utf-8"))
        runs[name] = entry

    rows = []
    summary_targets = []
    for name, why in skipped.items():
        rows.append([name, "(not run)", "", "", "SKIP", why])
        summary_targets.append({"benchmark": name, "result": "SKIP", "note": why})
    for name, entry in runs.items():
        if "result" not in entry:
            rows.append([name, "(benchmark crashed)", "", "", "ERROR", f"exit {entry['exit_code']}"])
            summary_targets.append({"benchmark": name, "result": "ERROR", "exit_code": entry["exit_code"]})
            continue
        for t in entry["result"].get("targets", []):
            if t["informational"]:
                result = "ok" if t["passed"] else "NOTE"
            else:
                result = "PASS" if t["passed"] else "FAIL"
            measured = f"{t['value']:.3g}{t['unit']}"
            wanted = f"{t['op']} {t['threshold']:g}{t['unit']}"
            rows.append([name, t["name"], measured, wanted, result, t["note"]])
            summary_targets.append({"benchmark": name, **t, "result": result})
    extra = runs.get("threshold", {}).get("result", {})
    print(f"\n===== summary ({'quick' if args.quick else 'full'}) =====")
    print(table(["bench", "target", "measured", "wanted", "result", "note"], rows))
    if extra.get("recommended_threshold_bytes") is not None:
        print(
            f"\nrecommended blobs.threshold: {extra['recommended_threshold_bytes']} bytes "
            f"(put+get crossover {extra.get('crossover_put_plus_get_bytes')}; current default "
            f"{extra['current_default_threshold_bytes']})"
        )
    counted = [t for t in summary_targets if t["result"] in ("PASS", "FAIL", "ERROR")]
    passed = sum(1 for t in counted if t["result"] == "PASS")
    print(f"\n{passed}/{len(counted)} targets pass")

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    summary = {
        "environment": environment(args),
        "benchmarks": {n: {"exit_code": e["exit_code"], "seconds": e["seconds"]} for n, e in runs.items()},
        "targets": summary_targets,
        "passed": passed,
        "counted": len(counted),
        "recommended_threshold_bytes": extra.get("recommended_threshold_bytes"),
        "crossover_put_plus_get_bytes": extra.get("crossover_put_plus_get_bytes"),
    }
    path = RESULTS_DIR / "summary.json"
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    if args.profile:
        print("\n===== profile =====", flush=True)
        subprocess.run([sys.executable, str(BENCH_DIR / "profile_paths.py"), *passthrough], check=False)
    return 0 if all(e["exit_code"] == 0 for e in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
