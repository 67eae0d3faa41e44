"""Timing harness shared by the benchmarks: interleaved rounds, medians, ratios, targets, JSON.

Why interleaved: these machines are shared and their load drifts over seconds. Running contender A for
all rounds and then contender B would fold that drift into the ratio; running A, B, C in each round (in
a rotated order, so nobody is always first) exposes every contender to the same drift, and medians drop
the rounds a neighbour's burst spoiled. Quote ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

if str(ROOT) not in sys.path:  # `python bench/x.py` from anywhere imports the working tree's objstore
    sys.path.insert(0, str(ROOT))

# One round of one contender: gets a fresh empty folder, returns the seconds of its timed part only
# (setup such as opening a store or filling a table happens inside but outside the stopwatch).
RoundFn = Callable[[Path], float | Mapping[str, float]]
Op = Literal[">=", "<=", "<"]

KiB = 1 << 10
MiB = 1 << 20


# -- command line --------------------------------------------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes and few rounds (CI smoke)")
    p.add_argument("--rounds", type=int, default=None, help="override the number of rounds")
    p.add_argument(
        "--tmpdir",
        type=Path,
        default=None,
        help="where the stores are created (default: the system temp folder; must be a real disk, "
        "not tmpfs, or fsync costs nothing)",
    )
    return p


def rounds_for(args: argparse.Namespace, quick: int, full: int) -> int:
    return int(args.rounds) if args.rounds else (quick if args.quick else full)


# -- folders -------------------------------------------------------------------------------------------


@contextmanager
def fresh_dir(base: Path | None = None, prefix: str = "objstore-bench-") -> Iterator[Path]:
    """A new empty folder, removed afterwards (stores are never reused between rounds)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        settle(path.parent)


def settle(folder: Path) -> None:
    """Commit the removal now, so the next contender's first fsync does not pay for it.

    On ext4 (mounted with ``discard`` here) freeing a big file queues work for the next journal commit;
    without this, whoever fsyncs first after a cleanup could pay for the previous round's files.
    """
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def filesystem_of(path: Path) -> str:
    """The filesystem type holding ``path`` (Linux), to flag tmpfs where fsync is free."""
    best, kind = "", "unknown"
    target = os.path.realpath(path)
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                parts = line.split()
                if len(parts) >= 3 and target.startswith(parts[1]) and len(parts[1]) > len(best):
                    best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


# -- timing --------------------------------------------------------------------------------------------


def stopwatch() -> Callable[[], float]:
    """``lap = stopwatch(); ...; seconds = lap()``."""
    start = time.perf_counter()
    return lambda: time.perf_counter() - start


def interleave(
    contenders: Mapping[str, RoundFn],
    rounds: int,
    *,
    base: Path | None = None,
    warmup: bool = True,
    progress: str = "",
) -> dict[str, list[float]]:
    """Run every contender once per round, in a rotated order, each in a fresh folder.

    A discarded warm-up round first (imports, first-touch allocations, the page cache of the source
    files) unless ``warmup`` is False. Returns the timed seconds per contender, one per round; a
    contender returning ``{"put": s1, "get": s2}`` yields the series ``"<name> put"`` and ``"<name> get"``.
    """
    names = list(contenders)
    samples: dict[str, list[float]] = {}
    owner: dict[str, int] = {}
    for r in range(-1 if warmup else 0, rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            with fresh_dir(base) as folder:
                result = contenders[name](folder)
            if r < 0:
                continue
            phases = result.items() if isinstance(result, Mapping) else [("", result)]
            for phase, seconds in phases:
                key = f"{name} {phase}".strip()
                samples.setdefault(key, []).append(float(seconds))
                owner.setdefault(key, names.index(name))
        if progress:
            label = "warm-up" if r < 0 else f"round {r + 1}/{rounds}"
            print(f"  {progress}: {label} done", file=sys.stderr, flush=True)
    # Keep the contenders' order (not the rotated one) for the tables.
    return dict(sorted(samples.items(), key=lambda item: owner[item[0]]))


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def paired_ratio(baseline: Sequence[float], contender: Sequence[float]) -> float:
    """Median over rounds of baseline_time / contender_time: >1 means the contender is faster.

    Pairing by round cancels drift that hit both in the same round; the table uses ratio of medians,
    the JSON records both.
    """
    return median([b / c for b, c in zip(baseline, contender, strict=True) if c > 0])


# -- results -------------------------------------------------------------------------------------------


@dataclass
class Target:
    """One pass/fail criterion: ``value op threshold``."""

    name: str
    value: float
    op: Op
    threshold: float
    unit: str = "x"
    note: str = ""
    informational: bool = False  # shown, but not a pass/fail criterion of the brief
    passed: bool = field(init=False)

    def __post_init__(self) -> None:
        if self.op == ">=":
            self.passed = self.value >= self.threshold
        elif self.op == "<=":
            self.passed = self.value <= self.threshold
        else:
            self.passed = self.value < self.threshold


def summarize(samples: Mapping[str, Sequence[float]], ops: int = 1) -> dict[str, dict[str, Any]]:
    """Median/min/max seconds per round and, with ``ops`` operations per round, median ops/s and µs/op."""
    out: dict[str, dict[str, Any]] = {}
    for name, values in samples.items():
        med = median(values)
        entry: dict[str, Any] = {
            "rounds_s": [round(v, 6) for v in values],
            "median_s": med,
            "min_s": min(values),
            "max_s": max(values),
            "ops_per_round": ops,
        }
        if ops > 1 or med > 0:
            entry["median_ops_per_s"] = ops / med if med > 0 else float("inf")
            entry["median_us_per_op"] = med / ops * 1e6
        out[name] = entry
    return out


def environment(args: argparse.Namespace | None = None) -> dict[str, Any]:
    base = Path(args.tmpdir) if args is not None and args.tmpdir else Path(tempfile.gettempdir())
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_end": [round(x, 2) for x in load],
        "tmpdir": str(base),
        "tmpdir_filesystem": filesystem_of(base),
        "quick": bool(args.quick) if args is not None else None,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    data = dict(payload)
    if "targets" in data:
        data["targets"] = [asdict(t) if isinstance(t, Target) else t for t in data["targets"]]
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def save_results(name: str, args: argparse.Namespace | None, **fields: Any) -> int:
    """Write ``bench/results/<name>.json``: the benchmark's name and environment, then ``fields`` (which
    may replace the environment). Says where, and returns the script's exit code."""
    path = write_json(name, {"benchmark": name, "environment": environment(args), **fields})
    print(f"\nwrote {path}")
    return 0


# -- printing ------------------------------------------------------------------------------------------


def fmt_seconds(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        padded = [c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(padded).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_throughput(
    title: str, stats: Mapping[str, Mapping[str, Any]], baselines: Sequence[str], subject: str
) -> None:
    """Medians per contender and ``subject``'s throughput ratio against each baseline."""
    print(f"\n{title}")
    rows = []
    for name, s in stats.items():
        ratios = []
        for base in baselines:
            if name == subject and base != subject:
                ratios.append(f"{stats[base]['median_s'] / s['median_s']:.2f}x vs {base}")
        rows.append(
            [
                name,
                fmt_seconds(s["median_s"]),
                f"{s.get('median_ops_per_s', 0):,.0f}",
                f"{s.get('median_us_per_op', 0):.1f}",
                "; ".join(ratios),
            ]
        )
    print(table(["contender", "median/round", "ops/s", "µs/op", "ratio (throughput)"], rows))


def verdict(t: Target) -> str:
    return ("ok" if t.passed else "NOTE") if t.informational else ("PASS" if t.passed else "FAIL")


def print_targets(targets: Sequence[Target]) -> None:
    print()
    rows = [
        [
            t.name,
            f"{t.value:.3g}{t.unit}",
            f"{t.op} {t.threshold:g}{t.unit}",
            verdict(t),
            t.note,
        ]
        for t in targets
    ]
    print(table(["target", "measured", "wanted", "result", "note"], rows))


# -- objstore ------------------------------------------------------------------------------------------


def open_store(folder: Path, **overrides: Any) -> Any:
    """A new objstore keeping everything under ``folder`` (databases, blobs), with setting overrides.

    Imported lazily so that ``--help`` and the subprocess-based benchmarks do not pay for it.
    """
    import objstore
    from objstore.config import Settings

    return objstore.ObjStore(Settings.for_directory(folder, **overrides))
