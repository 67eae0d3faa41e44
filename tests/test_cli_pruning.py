"""`objstore prune`, `stats`, `events ls` and `logs cat` through the command line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from objstore.cli.main import cli
from objstore.config import Settings
from objstore.engine import ObjStore
from tests.conftest import assert_one_line_error

Invoke = Callable[..., Result]


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "objstore.toml"
    path.write_text(
        "[object_store]\nrun_object_expiry = 1\npipeline_object_limit = 2\n"
        "[api]\ntask_execution_log_expiry = 1\n"
    )
    return path


@pytest.fixture
def run(config_file: Path) -> Invoke:
    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, ["--config", str(config_file), *args], catch_exceptions=False)

    return invoke


@pytest.fixture
def filled(config_file: Path) -> None:
    with ObjStore(Settings.load(config_file)) as store:
        pipe = store.pipeline("default", "build")
        for number in range(3):
            run = pipe.start_run()
            run.objects.put("junit.xml", b"<xml/>")
            with run.task_log("compile") as log:
                log.write(f"compiling in run {number + 1}\n")
        for key in ("a", "b", "c"):
            pipe.objects.put(key, b"x" * 10)


def test_stats_json_counts_every_store(run: Invoke, filled: None, engine: str) -> None:
    result = run("stats", "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["pipelines"] == 1 and stats["runs"] == 3
    assert stats["pipeline_objects"] == 2 and stats["pipeline_object_bytes"] == 20
    assert stats["run_objects"] == 1  # expiry 1: only the last run's object remains
    assert stats["task_logs"] == 1 and stats["task_log_bytes"] == len(b"compiling in run 3\n")
    assert stats["events"] >= 3 and stats["oldest_event"] <= stats["newest_event"]
    if engine == "sqlite":
        assert {Path(d["path"]).name for d in stats["databases"]} == {
            "objstore.db",
            "objects.db",
            "secrets.db",
        }
    else:  # the three share the test's PostgreSQL schema
        assert [d["path"].split("://")[0] for d in stats["databases"]] == ["postgresql+psycopg"]
    assert all(d["bytes"] > 0 for d in stats["databases"])


def test_stats_table(run: Invoke, filled: None, engine: str) -> None:
    result = run("stats")
    assert result.exit_code == 0, result.output
    assert "pipeline objects" in result.stdout and "task logs" in result.stdout
    assert ("objects.db" if engine == "sqlite" else "postgresql+psycopg://") in result.stdout


def test_prune_reports_each_job(run: Invoke, filled: None) -> None:
    result = run("prune")
    assert result.exit_code == 0, result.output
    for label in ("events", "run objects", "task logs", "pipeline objects", "blobs"):
        assert f"{label}: 0" in result.stdout
    assert "skipped" not in result.stdout


def test_events_ls(run: Invoke, filled: None) -> None:
    result = run("events", "ls", "--kind", "run_started", "--json")
    assert result.exit_code == 0, result.output
    assert [e["run"] for e in json.loads(result.stdout)] == [1, 2, 3]
    table = run("events", "ls", "-p", "build", "--limit", "2")
    assert table.exit_code == 0 and len(table.stdout.splitlines()) == 3
    assert_one_line_error(run("events", "ls", "--limit", "0"), 6, "limit")
    assert_one_line_error(run("events", "ls", "--kind", "bad kind"), 6, "event kind")


def test_logs_cat(run: Invoke, filled: None) -> None:
    result = run("logs", "cat", "-p", "build", "-r", "3", "compile")
    assert result.exit_code == 0, result.output
    assert result.stdout == "compiling in run 3\n"
    assert_one_line_error(run("logs", "cat", "-p", "build", "-r", "1", "compile"), 4, "expired")
    assert_one_line_error(run("logs", "cat", "-p", "build", "-r", "9", "compile"), 4, "no run 9")
