"""Startup: ``import objstore`` + ``objstore.open(cfg)`` of an existing store, and ``objstore --help``.

Each sample is a fresh subprocess of this virtualenv's Python (no ``uv run`` in between). The child times
itself with ``perf_counter`` in three steps: ``import objstore`` (the light package), the first touch of
``objstore.open`` (the lazy import of the engine: pydantic, config, database layer) and the ``open`` call
itself. The parent also records the whole process's wall time, next to ``python -c pass`` for the
interpreter's own start-up. The target applies to import + open inside the process; the wall time of
``objstore --help`` is the whole process, as a user sees it.

Bytecode: a package installed by pip has its modules compiled to ``.pyc`` at install time, and Python
writes them on first import otherwise. Children therefore run with bytecode allowed, written to a cache
folder of this run (``PYTHONPYCACHEPREFIX``, so the source tree stays clean), warmed before measuring;
an environment with ``PYTHONDONTWRITEBYTECODE=1`` and no compiled files in its virtualenv (as CI here has)
compiles those modules on every start, which is recorded too ("open, compiling every import": this
environment as it is, with that variable set) but is not what a user's installation pays.

``python -X importtime`` runs (several, medians per module) break the import down.

Writes bench/results/startup.json.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from common import (
    RoundFn,
    Target,
    fmt_seconds,
    fresh_dir,
    interleave,
    median,
    parser,
    print_targets,
    rounds_for,
    save_results,
    table,
)

CONFIG = """\
# A store whose files all live beside this file.
[object_store.sqlite]
path = "data/objects.db"

[secret_store.sqlite]
path = "data/secrets.db"

[server]
storage_path = "data/objstore.db"

[api]
task_execution_logs_dir = "data/task-logs"
"""

CHILD = """\
import json, sys, time
t0 = time.perf_counter()
import objstore
t1 = time.perf_counter()
open_ = objstore.open
t2 = time.perf_counter()
store = open_(sys.argv[1])
t3 = time.perf_counter()
store.pipeline("bench", "startup")
store.close()
print(json.dumps({"import": t1 - t0, "engine_import": t2 - t1, "open": t3 - t2, "total": t3 - t0}))
"""

PROFILE_OPEN = """\
import cProfile, io, pstats, sys
import objstore
open_ = objstore.open
profiler = cProfile.Profile()
store = profiler.runcall(open_, sys.argv[1])
store.close()
out = io.StringIO()
pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(20)
print(out.getvalue())
"""


_PYCACHE: dict[str, Path] = {}  # "folder": where children keep compiled bytecode; set by main()


def clean_env(*, bytecode: bool = True) -> dict[str, str]:
    """The environment without OBJSTORE_* variables (they would change what open() reads), with compiled
    bytecode kept in this run's cache folder, or (``bytecode=False``) compiling every import each time."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("OBJSTORE_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTHONPYCACHEPREFIX", None)
    if not bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # and only the compiled files this environment already has
    elif "folder" in _PYCACHE:
        env["PYTHONPYCACHEPREFIX"] = str(_PYCACHE["folder"])
    return env


def make_store(folder: Path) -> Path:
    cfg = folder / "objstore.toml"
    cfg.write_text(CONFIG, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-c", "import objstore, sys; objstore.open(sys.argv[1]).close()", str(cfg)],
        env=clean_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"creating the store failed:\n{done.stderr}")
    return cfg


def cli_command() -> tuple[list[str] | None, str]:
    """How to run the CLI here, or None and why not."""
    script = Path(sys.executable).parent / "objstore"
    problems = []
    for cmd in ([str(script), "--help"], [sys.executable, "-m", "objstore", "--help"]):
        if cmd[0] == str(script) and not script.exists():
            problems.append(f"{script} does not exist")
            continue
        done = subprocess.run(cmd, env=clean_env(), capture_output=True, text=True, check=False)
        if done.returncode == 0 and "Usage" in done.stdout:
            return cmd, ""
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        problems.append(f"`{' '.join(cmd[-3:])}` exited {done.returncode}: {tail}")
    return None, "; ".join(problems)


def timed_run(cmd: list[str], *, bytecode: bool = True) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=clean_env(bytecode=bytecode), capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{cmd} failed:\n{done.stderr}")
    return wall, done.stdout


def open_round(cfg: Path, *, bytecode: bool = True) -> RoundFn:
    def run(_folder: Path) -> dict[str, float]:
        wall, out = timed_run([sys.executable, "-c", CHILD, str(cfg)], bytecode=bytecode)
        parts: dict[str, float] = json.loads(out.strip().splitlines()[-1])
        return {**parts, "wall": wall}

    return run


def command_round(cmd: list[str]) -> RoundFn:
    def run(_folder: Path) -> float:
        return timed_run(cmd)[0]

    return run


_IMPORTTIME = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)")


def import_breakdown(cfg: Path, runs: int) -> dict[str, Any]:
    """Medians over ``runs`` of ``-X importtime``: per module (self, cumulative) and per top package."""
    self_us: dict[str, list[int]] = defaultdict(list)
    cum_us: dict[str, list[int]] = defaultdict(list)
    depth: dict[str, int] = {}
    package_self: dict[str, list[int]] = defaultdict(list)
    for _ in range(runs):
        done = subprocess.run(
            [
                sys.executable,
                "-X",
                "importtime",
                "-c",
                "import objstore, sys; objstore.open(sys.argv[1]).close()",
                str(cfg),
            ],
            env=clean_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        per_package: dict[str, int] = defaultdict(int)
        tree: list[tuple[int, str, int, int]] = []  # the last run's import tree: depth, module, self, cum
        for line in done.stderr.splitlines():
            found = _IMPORTTIME.match(line)
            if not found:
                continue
            own, cumulative, indent, module = int(found[1]), int(found[2]), found[3], found[4]
            self_us[module].append(own)
            cum_us[module].append(cumulative)
            depth[module] = (len(indent) - 1) // 2
            per_package[module.split(".")[0]] += own
            tree.append((depth[module], module, own, cumulative))
        for package, total in per_package.items():
            package_self[package].append(total)
    top_level = sorted(((m, median(v)) for m, v in cum_us.items() if depth.get(m) == 0), key=lambda x: -x[1])
    by_package = sorted(((p, median(v)) for p, v in package_self.items()), key=lambda x: -x[1])
    by_self = sorted(((m, median(v)) for m, v in self_us.items()), key=lambda x: -x[1])
    return {
        "runs": runs,
        "total_self_us": sum(v for _, v in by_package),
        "top_level_cumulative_us": top_level[:15],
        "by_package_self_us": by_package[:20],
        "by_module_self_us": by_self[:20],
        # Imports costing >= 10 ms cumulative, in import order (children before parents, as Python
        # prints them), from the last run: reading it bottom-up gives the tree.
        "tree_last_run": [
            {"depth": d, "module": m, "self_us": own, "cumulative_us": cum}
            for d, m, own, cum in tree
            if cum >= 10_000
        ],
    }


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    args = p.parse_args(argv)
    samples_n = rounds_for(args, quick=5, full=15)
    with fresh_dir(args.tmpdir) as folder:
        _PYCACHE["folder"] = folder / "pycache"
        cfg = make_store(folder)  # also compiles what open() imports
        cli, cli_problem = cli_command()  # and what the CLI imports
        contenders: dict[str, RoundFn] = {
            "open": open_round(cfg),
            "open, compiling every import": open_round(cfg, bytecode=False),
            "python -c pass": command_round([sys.executable, "-c", "pass"]),
        }
        if cli is not None:
            contenders["objstore --help"] = command_round(cli)
        samples = interleave(contenders, samples_n, progress="startup")
        breakdown = import_breakdown(cfg, 3 if args.quick else 5)
        profile = subprocess.run(
            [sys.executable, "-c", PROFILE_OPEN, str(cfg)],
            env=clean_env(),
            capture_output=True,
            text=True,
            check=False,
        ).stdout

    med = {k: median(v) for k, v in samples.items()}
    print(f"\nstartup, {samples_n} fresh subprocesses each (medians)")
    rows = [[k, fmt_seconds(v), fmt_seconds(min(samples[k]))] for k, v in med.items()]
    print(table(["measure", "median", "min"], rows))
    if cli is None:
        print(f"\nobjstore --help: MISSING ({cli_problem})")
    else:
        print(f"\nCLI measured as: {' '.join(Path(c).name if i == 0 else c for i, c in enumerate(cli))}")

    def ms_rows(entries: list[tuple[str, float]]) -> list[list[str]]:
        return [[m, f"{us / 1000:.1f}"] for m, us in entries]

    print("\nimport time, top-level imports (cumulative, medians of -X importtime)")
    print(table(["module", "ms"], ms_rows(breakdown["top_level_cumulative_us"])))
    print("\nimport time by package (self time summed)")
    print(table(["package", "ms"], ms_rows(breakdown["by_package_self_us"][:12])))
    print("\nimport tree, last -X importtime run, imports >= 10 ms cumulative (children listed first)")
    print(
        table(
            ["module", "self ms", "cumulative ms"],
            [
                [
                    "  " * e["depth"] + e["module"],
                    f"{e['self_us'] / 1000:.1f}",
                    f"{e['cumulative_us'] / 1000:.1f}",
                ]
                for e in breakdown["tree_last_run"]
            ],
        )
    )
    print("\nimport time, slowest modules (self)")
    print(table(["module", "ms"], ms_rows(breakdown["by_module_self_us"][:12])))

    targets = [
        Target(
            "import objstore + open(cfg)",
            med["open total"] * 1000,
            "<",
            150,
            " ms",
            f"in-process, bytecode compiled; whole subprocess {med['open wall'] * 1000:.0f} ms, bare "
            f"python {med['python -c pass'] * 1000:.0f} ms; compiling every import "
            f"{med['open, compiling every import total'] * 1000:.0f} ms",
        ),
    ]
    if cli is not None:
        targets.append(Target("objstore --help (wall)", med["objstore --help"] * 1000, "<", 300, " ms"))
    else:
        missing = f"MISSING: {cli_problem}"
        targets.append(Target("objstore --help (wall)", float("inf"), "<", 300, " ms", missing))
    print_targets(targets)
    return save_results(
        "startup",
        args,
        params={"samples": samples_n},
        samples_s=samples,
        medians_s=med,
        cli={"command": cli, "missing_reason": cli_problem or None},
        import_breakdown=breakdown,
        open_profile=profile,
        targets=targets,
    )


if __name__ == "__main__":
    sys.exit(main())
