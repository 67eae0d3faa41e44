"""The README's main job: the example orchestrator runs on the embedded default and shows its work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import objstore

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "orchestrator.py"


def test_example_orchestrator_runs_with_eviction_and_expiry(tmp_path: Path) -> None:
    data = tmp_path / "objstore-data"
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--data", str(data)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "evicted cache/deps-1.tar (pipeline_object_limit reached)" in out
    assert "expired: run 6's objects" in out
    assert "task logs for runs [7, 8]" in out
    assert "3 object_evicted, 18 run_data_expired, 24 run_started" in out
    assert "  prune: 0 events, 0 run objects, 0 task logs" in out
    assert out.rstrip().endswith("check: ok")
    # What it left behind is a valid store that a second process can open and read.
    with objstore.open(data / "objstore.toml") as store:
        pipe = store.pipeline("team-a", "deploy")
        assert pipe.latest_run == 8
        assert [o.key for o in pipe.objects.list()] == [f"cache/deps-{n}.tar" for n in (2, 3, 4)]
        assert pipe.run(6).objects.list() == []
        assert len(pipe.run(8).objects.get("bin/app")) > 65536
        assert pipe.run(8).task_log("compile").finished
        assert len(store.events.list(kind="run_started", limit=1000)) == 24
