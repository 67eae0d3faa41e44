"""A miniature CI orchestrator embedding objstore, the way a real one would.

Three pipelines in two namespaces run several times. Each run's tasks hand files to each other through
run objects (a compiled binary, test reports), share a dependency cache across runs through pipeline
objects, and write task execution logs. With a small pipeline object limit and small expiries, eviction
and expiry show in the output; the event log records all of it, and one prune pass ends the session.

Run it:  python examples/orchestrator.py [--data FOLDER] [--runs N]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
from datetime import timedelta
from pathlib import Path

import objstore

CONFIG = """\
# Written by examples/orchestrator.py: small limits so that eviction and expiry happen quickly.
[object_store]
pipeline_object_limit = 3     # pipeline objects kept per pipeline; the oldest go first
run_object_expiry = 2         # run objects of run R are removed when run R + 2 starts

[object_store.sqlite]
path = "objects.db"

[secret_store.sqlite]
path = "secrets.db"

[server]
storage_path = "objstore.db"

[api]
task_execution_logs_dir = "task-logs"
task_execution_log_expiry = 2 # task logs of run R are removed when run R + 2 starts
event_log_retention = "4380h" # events older than this go at the next prune

[blobs]
threshold = 65536             # larger values go to the content-addressed blob store
"""

PIPELINES = [("default", "build-app"), ("default", "test-suite"), ("team-a", "deploy")]


def human(size: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if size < 1024 or unit == "MiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return f"{size} B"


def where(info: objstore.ObjectInfo, threshold: int) -> str:
    return "inline" if info.size <= threshold else "blob"


def run_pipeline(store: objstore.ObjStore, namespace: str, name: str, rng: random.Random) -> None:
    pipe = store.pipeline(namespace, name)
    before = {n: [o.key for o in pipe.run(n).objects.list()] for n in range(1, pipe.latest_run + 1)}
    run = pipe.start_run()
    print(f"{namespace}/{name}: run {run.number} started")
    expired = {n: keys for n, keys in before.items() if keys and not pipe.run(n).objects.list()}
    for number, keys in sorted(expired.items()):
        print(f"  expired: run {number}'s objects ({', '.join(keys)}) - run_object_expiry reached")

    threshold = store.settings.blobs.threshold
    # Task "compile": produces a binary (large: blob store) and a build log (small: inline).
    binary = rng.randbytes(rng.randint(150_000, 400_000))
    with run.task_log("compile") as log:  # finished (marked done) when the block ends
        log.write(f"compiling {name}\n")
        log.write(f"linked bin/app: {len(binary)} bytes\n")
    info = run.objects.put("bin/app", binary)
    print(
        f"  compile: stored bin/app ({human(info.size)}, {where(info, threshold)}, sha256 {info.sha256[:12]})"
    )
    run.objects.put("logs/compile.txt", f"compiled {len(binary)} bytes\n".encode())

    # Task "test": reads the binary handed over by "compile", verified, and writes a report.
    with run.objects.open("bin/app") as reader:
        digest = hashlib.sha256(reader.read()).hexdigest()
    report = f'<testsuite name="{name}" tests="{rng.randint(10, 99)}" binary="{digest[:12]}"/>'.encode()
    run.objects.put("reports/junit.xml", report)
    with run.task_log("test") as log:
        log.write(f"binary {digest[:12]} verified\n{report.decode()}\n")
    print(f"  test: read bin/app back ({digest[:12]} matches), stored reports/junit.xml")

    # The dependency cache is a pipeline object: it changes every other run, and the limit evicts the oldest.
    cache_key = f"cache/deps-{(run.number + 1) // 2}.tar"
    if cache_key not in pipe.objects:
        kept_before = [o.key for o in pipe.objects.list()]
        pipe.objects.put(cache_key, rng.randbytes(100_000))
        kept_after = [o.key for o in pipe.objects.list()]
        evicted = [key for key in kept_before if key not in kept_after]
        note = f"; evicted {', '.join(evicted)} (pipeline_object_limit reached)" if evicted else ""
        print(f"  cache: stored {cache_key}{note}")
    else:
        size = len(pipe.objects.get(cache_key))
        print(f"  cache: hit {cache_key} ({human(size)})")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=Path("objstore-data"), help="folder for databases and blobs"
    )
    parser.add_argument("--runs", type=int, default=8, help="runs per pipeline")
    args = parser.parse_args()

    args.data.mkdir(parents=True, exist_ok=True)
    config = args.data / "objstore.toml"
    if not config.exists():
        config.write_text(CONFIG)
    rng = random.Random(7)
    try:
        with objstore.open(config) as store:
            print(f"objstore: data in {args.data.resolve()}")
            for _ in range(args.runs):
                for namespace, name in PIPELINES:
                    run_pipeline(store, namespace, name, rng)
            print("summary:")
            for namespace, name in PIPELINES:
                pipe = store.pipeline(namespace, name)
                live = [n for n in range(1, pipe.latest_run + 1) if pipe.run(n).objects.list()]
                logged = [n for n in range(1, pipe.latest_run + 1) if pipe.run(n).task_logs()]
                cached = [o.key for o in pipe.objects.list()]
                runs = f"{pipe.latest_run} runs, objects kept for runs {live}, task logs for runs {logged}"
                print(f"  {namespace}/{name}: {runs}, cache {cached}")
            last = store.pipeline("default", "build-app")
            print(f"  last compile log: {last.run(last.latest_run).task_log('compile').read().decode()!r}")
            kinds: dict[str, int] = {}
            for event in store.events.list(limit=10_000):
                kinds[event.kind] = kinds.get(event.kind, 0) + 1
            print(f"  events: {', '.join(f'{count} {kind}' for kind, count in sorted(kinds.items()))}")
            # One pass of every retention job, as `objstore serve` runs them on a schedule.
            pruned = store.prune()
            print(
                f"  prune: {pruned.events} events, {pruned.run_objects} run objects, {pruned.task_logs} task "
                f"logs, {pruned.blobs} blobs removed (start_run already expired what it could)"
            )
            # Nothing else writes here now: collect unreferenced content at once, not after the grace period.
            removed = store.collect_garbage(grace=timedelta(0))
            print(
                f"  garbage collection: {removed.blobs_removed} unreferenced blobs removed "
                f"({human(removed.bytes_removed)})"
            )
            report = store.check(verify=True)
            print(f"  check: {'ok' if report.ok else report}")
            return 0 if report.ok else 1
    except objstore.ObjStoreError as error:
        print(f"orchestrator: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
