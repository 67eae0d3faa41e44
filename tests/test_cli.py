"""The command line through click's CliRunner: every command, --json, and errors as one line + exit code."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tomllib
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import assert_one_line_error

from objstore.cli.main import cli
from tests.databases import for_engine

Invoke = Callable[..., Result]

BIG = 20 << 20  # 20 MiB
LARGE = bytes(range(256)) * 4096  # 1 MiB: above the default inline threshold, so stored as a blob


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str) -> Path:
    """A config written by `objstore init-config -o` in tmp_path; data goes to tmp_path/objstore-data."""
    monkeypatch.chdir(tmp_path)  # nothing may be written into the working tree, even by mistake
    path = tmp_path / "objstore.toml"
    result = CliRunner().invoke(cli, ["init-config", "-o", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return for_engine(path, engine)


@pytest.fixture
def data_dir(config_file: Path) -> Path:
    return config_file.parent / "objstore-data"


@pytest.fixture
def run(config_file: Path) -> Invoke:
    """Invoke `objstore --config <tmp config> ARGS...`; ``input`` (bytes) is stdin."""

    def invoke(*args: str, input: bytes | None = None, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(
            cli, ["--config", str(config_file), *args], input=input, env=env, catch_exceptions=False
        )

    return invoke


def blob_files(data_dir: Path) -> list[Path]:
    root = data_dir / "blobs"
    if not root.exists():
        return []
    return sorted(p for p in root.glob("*/*") if p.is_file() and p.parent.name != ".staging")


def scope(pipeline: str = "build", run_number: int | None = None, namespace: str | None = None) -> list[str]:
    args = ["-p", pipeline]
    if namespace is not None:
        args += ["-n", namespace]
    if run_number is not None:
        args += ["-r", str(run_number)]
    return args


# -- the group ---------------------------------------------------------------------------------------------


def test_help_and_version() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in ("init-config", "db", "runs", "objects", "check", "gc", "prune"):
        assert command in result.stdout
    version = CliRunner().invoke(cli, ["--version"])
    assert version.exit_code == 0
    assert version.stdout.strip() == "objstore 0.1.0"


def test_usage_errors_stay_click_exit_code_2(run: Invoke) -> None:
    result = run("objects", "ls")  # -p is required
    assert result.exit_code == 2
    assert "Missing option" in result.stderr
    assert run("objects", "put", "-p", "build", "k", "no-such-file").exit_code == 2
    assert run("no-such-command").exit_code == 2


# -- init-config ---------------------------------------------------------------------------------------------


def _key(text: str) -> str:
    key = tomllib.loads(text)["secret_store"]["sqlite"]["encryption_key"]
    assert isinstance(key, str)
    return key


def test_init_config_to_stdout_has_a_fresh_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    first = CliRunner().invoke(cli, ["init-config"])
    second = CliRunner().invoke(cli, ["init-config"])
    assert first.exit_code == second.exit_code == 0
    assert len(_key(first.stdout)) == 32
    assert _key(first.stdout) != _key(second.stdout)
    assert first.stderr == ""
    assert list(tmp_path.iterdir()) == []


def test_init_config_file_is_private_and_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "objstore.toml"
    old_umask = os.umask(0)  # even a permissive umask must not make the key readable by others
    try:
        result = CliRunner().invoke(cli, ["init-config", "-o", str(path)])
    finally:
        os.umask(old_umask)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    original = path.read_text()
    key = _key(original)
    assert key not in result.output

    refused = CliRunner().invoke(cli, ["init-config", "-o", str(path)])
    assert_one_line_error(refused, 5, str(path), "--force")
    assert path.read_text() == original

    path.chmod(0o644)
    forced = CliRunner().invoke(cli, ["init-config", "-o", str(path), "--force"])
    assert forced.exit_code == 0, forced.output
    assert _key(path.read_text()) != key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["objstore.toml"]  # no temp file left


@pytest.mark.sqlite_only  # SQLite files and the SQLite key's variable
def test_init_config_output_is_a_working_configuration(run: Invoke, data_dir: Path) -> None:
    assert run("objects", "ls", "-p", "build").exit_code == 0
    assert (data_dir / "objects.db").exists()


# -- configuration errors ----------------------------------------------------------------------------------


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    result = CliRunner().invoke(cli, ["--config", str(missing), "objects", "ls", "-p", "build"])
    assert_one_line_error(result, 3, str(missing), "does not exist", "init-config", "--config")
    assert not (tmp_path / "objstore-data").exists()


@pytest.mark.sqlite_only  # SQLite files and the SQLite key's variable
def test_config_from_environment_variable(config_file: Path) -> None:
    result = CliRunner().invoke(
        cli, ["runs", "start", "-p", "build"], env={"OBJSTORE_CONFIG": str(config_file)}
    )
    assert result.exit_code == 0, result.output
    assert (config_file.parent / "objstore-data" / "objstore.db").exists()


def test_misspelt_config_key_names_the_closest_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[object_store]\npipeline_object_limt = 5\n\n[object_store.sqlite]\npath = "o.db"\n')
    result = CliRunner().invoke(cli, ["--config", str(path), "objects", "ls", "-p", "build"])
    assert_one_line_error(result, 3, "pipeline_object_limt", "pipeline_object_limit")


def test_several_config_problems_still_print_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[object_store]\npipeline_object_limit = 0\nrun_object_expiry = "many"\n')
    result = CliRunner().invoke(cli, ["--config", str(path), "objects", "ls", "-p", "build"])
    line = assert_one_line_error(result, 3)
    assert "pipeline_object_limit" in line and "run_object_expiry" in line


# -- db ------------------------------------------------------------------------------------------------------


@pytest.mark.sqlite_only  # SQLite files and the SQLite key's variable
def test_db_status_and_upgrade_on_a_fresh_store(run: Invoke) -> None:
    status = run("db", "status", "--json")
    assert status.exit_code == 0, status.output
    databases = json.loads(status.stdout)
    assert len(databases) == 3
    assert all(d["current"] is None and not d["up_to_date"] for d in databases)
    heads = {d["head"] for d in databases}
    assert len(heads) == 1

    table = run("db", "status")
    assert table.exit_code == 0
    assert "empty: run `objstore db upgrade`" in table.stdout
    assert all(d["state"] == "empty" for d in databases)
    assert run("db", "status", "--check").exit_code == 1

    upgrade = run("db", "upgrade")
    assert upgrade.exit_code == 0, upgrade.output
    assert upgrade.stdout.count("empty -> ") == 3

    after = json.loads(run("db", "status", "--json").stdout)
    assert all(d["up_to_date"] and d["current"] in heads for d in after)
    assert run("db", "status", "--check").exit_code == 0
    again = run("db", "upgrade", "--json")
    assert again.exit_code == 0
    assert all(c["from"] == c["to"] for c in json.loads(again.stdout))
    assert "up to date" in run("db", "upgrade").stdout


# -- runs ----------------------------------------------------------------------------------------------------


def test_runs_start_numbers_each_pipeline_from_one(run: Invoke) -> None:
    assert [run("runs", "start", "-p", "build").stdout for _ in range(3)] == ["1\n", "2\n", "3\n"]
    assert run("runs", "start", "-p", "deploy").stdout == "1\n"
    assert run("runs", "start", "-p", "build", "-n", "other").stdout == "1\n"

    started = run("runs", "start", "-p", "build", "--json")
    document = json.loads(started.stdout)
    assert set(document) == {"namespace", "pipeline", "number", "started_at"}
    assert (document["namespace"], document["pipeline"], document["number"]) == ("default", "build", 4)

    listed = json.loads(run("runs", "ls", "-p", "build", "--json").stdout)
    assert [r["number"] for r in listed] == [1, 2, 3, 4]
    table = run("runs", "ls", "-p", "build").stdout.splitlines()
    assert table[0].split() == ["RUN", "STARTED"] and len(table) == 5


# -- objects -------------------------------------------------------------------------------------------------


def test_objects_put_get_ls_rm_through_stdin_and_stdout(run: Invoke) -> None:
    put = run("objects", "put", "-p", "build", "cache/a.txt", input=b"hello\n")
    assert put.exit_code == 0, put.output
    assert put.stdout == ""
    assert run("objects", "put", "-p", "build", "cache/b.bin", "-", input=LARGE).exit_code == 0

    got = run("objects", "get", "-p", "build", "cache/a.txt")
    assert got.exit_code == 0 and got.stdout_bytes == b"hello\n"
    assert run("objects", "get", "-p", "build", "cache/b.bin").stdout_bytes == LARGE

    listed = json.loads(run("objects", "ls", "-p", "build", "--json").stdout)
    assert [o["key"] for o in listed] == ["cache/a.txt", "cache/b.bin"]
    assert listed[1]["size"] == len(LARGE)
    assert listed[1]["sha256"] == hashlib.sha256(LARGE).hexdigest()
    assert listed[1]["run"] is None

    table = run("objects", "ls", "-p", "build").stdout.splitlines()
    assert table[0].split() == ["KEY", "SIZE", "CREATED", "SHA256"]
    assert table[2].split()[:3] == ["cache/b.bin", "1.0", "MiB"]
    assert hashlib.sha256(LARGE).hexdigest()[:12] in table[2]

    assert run("objects", "rm", "-p", "build", "cache/a.txt").exit_code == 0
    assert [o["key"] for o in json.loads(run("objects", "ls", "-p", "build", "--json").stdout)] == [
        "cache/b.bin"
    ]
    assert_one_line_error(run("objects", "rm", "-p", "build", "cache/a.txt"), 4, "cache/a.txt")


def test_objects_of_a_run_are_separate_from_pipeline_objects(run: Invoke) -> None:
    assert run("runs", "start", "-p", "build").stdout == "1\n"
    assert run("objects", "put", *scope(run_number=1), "log.txt", input=b"run one").exit_code == 0
    assert run("objects", "put", *scope(), "log.txt", input=b"pipeline").exit_code == 0

    assert run("objects", "get", *scope(run_number=1), "log.txt").stdout_bytes == b"run one"
    assert run("objects", "get", *scope(), "log.txt").stdout_bytes == b"pipeline"
    in_run = json.loads(run("objects", "ls", *scope(run_number=1), "--json").stdout)
    assert [(o["key"], o["run"]) for o in in_run] == [("log.txt", 1)]

    assert run("objects", "rm", *scope(run_number=1), "log.txt").exit_code == 0
    assert json.loads(run("objects", "ls", *scope(run_number=1), "--json").stdout) == []
    assert run("objects", "get", *scope(), "log.txt").stdout_bytes == b"pipeline"

    assert_one_line_error(run("objects", "ls", *scope(run_number=9)), 4, "9")
    assert_one_line_error(run("objects", "put", *scope(run_number=9), "k", input=b"x"), 4)


def test_namespaces_are_separate(run: Invoke) -> None:
    assert run("objects", "put", *scope(namespace="team-a"), "k", input=b"a").exit_code == 0
    assert run("objects", "get", *scope(namespace="team-a"), "k").stdout_bytes == b"a"
    assert_one_line_error(run("objects", "get", *scope(), "k"), 4)


def test_put_file_and_get_to_file_round_trip_20_mib_byte_exact(run: Invoke, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    data = os.urandom(BIG)
    source.write_bytes(data)
    put = run("objects", "put", "-p", "build", "big.bin", str(source), "--json")
    assert put.exit_code == 0, put.output
    info = json.loads(put.stdout)
    assert info["size"] == BIG and info["sha256"] == hashlib.sha256(data).hexdigest()

    target = tmp_path / "out" / "copy.bin"
    target.parent.mkdir()
    got = run("objects", "get", "-p", "build", "big.bin", "-o", str(target))
    assert got.exit_code == 0, got.output
    assert got.stdout == ""
    assert target.read_bytes() == data
    assert [p.name for p in target.parent.iterdir()] == ["copy.bin"]  # the temp file was renamed


def test_put_and_get_stream_in_bounded_memory(run: Invoke, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(BIG))
    target = tmp_path / "copy.bin"

    def peak(*args: str) -> int:
        tracemalloc.start()
        try:
            result = run(*args)
            assert result.exit_code == 0, result.output
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    assert peak("objects", "put", "-p", "build", "big.bin", str(source)) < BIG // 4
    assert peak("objects", "get", "-p", "build", "big.bin", "-o", str(target)) < BIG // 4
    assert target.read_bytes() == source.read_bytes()


def test_get_replaces_an_existing_file_keeping_its_mode(run: Invoke, tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_bytes(b"old")
    target.chmod(0o640)
    assert run("objects", "put", "-p", "build", "k", input=b"new").exit_code == 0
    assert run("objects", "get", "-p", "build", "k", "-o", str(target)).exit_code == 0
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_put_existing_key_needs_overwrite(run: Invoke) -> None:
    assert run("objects", "put", "-p", "build", "k", input=b"first").exit_code == 0
    refused = run("objects", "put", "-p", "build", "k", input=b"second")
    assert_one_line_error(refused, 5, "'k'", "already exists")
    assert run("objects", "get", "-p", "build", "k").stdout_bytes == b"first"

    options = ["--overwrite", "--content-type", "text/x-log", "--json"]
    replaced = run("objects", "put", "-p", "build", "k", *options, input=b"second")
    assert replaced.exit_code == 0, replaced.output
    assert json.loads(replaced.stdout)["content_type"] == "text/x-log"
    assert run("objects", "get", "-p", "build", "k").stdout_bytes == b"second"


@pytest.mark.parametrize(
    "args",
    [
        ["-n", "bad ns", "-p", "build", "k"],
        ["-p", "a/b", "k"],
        ["-p", "build", "../escape"],
        ["-p", "build", "/abs"],
        ["-p", "build", "trailing/"],
        ["-p", "build", "sp ace"],
    ],
)
def test_bad_names_write_nothing(run: Invoke, data_dir: Path, args: Sequence[str]) -> None:
    result = run("objects", "put", *args, input=LARGE)
    assert_one_line_error(result, 6, "invalid")
    assert blob_files(data_dir) == []
    assert json.loads(run("objects", "ls", "-p", "build", "--json").stdout) == []


def test_bad_run_number(run: Invoke) -> None:
    assert_one_line_error(run("objects", "ls", "-p", "build", "-r", "0"), 6, "run number 0")
    assert run("objects", "ls", "-p", "build", "-r", "x").exit_code == 2


def test_get_of_a_missing_key(run: Invoke, tmp_path: Path) -> None:
    assert_one_line_error(run("objects", "get", "-p", "build", "missing"), 4, "'missing'")
    target = tmp_path / "never.bin"
    assert_one_line_error(run("objects", "get", "-p", "build", "missing", "-o", str(target)), 4)
    assert not target.exists()


def _corrupt_only_blob(data_dir: Path) -> Path:
    (blob,) = blob_files(data_dir)
    blob.chmod(0o600)
    content = bytearray(blob.read_bytes())
    content[len(content) // 2] ^= 0xFF
    blob.write_bytes(bytes(content))
    return blob


def test_get_of_corrupt_content_leaves_no_partial_file(run: Invoke, data_dir: Path, tmp_path: Path) -> None:
    assert run("objects", "put", "-p", "build", "art.bin", input=LARGE).exit_code == 0
    _corrupt_only_blob(data_dir)

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "art.bin"
    result = run("objects", "get", "-p", "build", "art.bin", "-o", str(target))
    assert_one_line_error(result, 8, "sha256")
    assert not target.exists()
    assert list(out_dir.iterdir()) == []  # no temp file either

    # An existing FILE is left as it was.
    target.write_bytes(b"previous")
    assert run("objects", "get", "-p", "build", "art.bin", "-o", str(target)).exit_code == 8
    assert target.read_bytes() == b"previous"

    # To stdout the bytes have streamed already, but the exit code still says so.
    assert_one_line_error(run("objects", "get", "-p", "build", "art.bin"), 8)


# -- maintenance ---------------------------------------------------------------------------------------------


def test_check_reports_and_fixes_corrupt_content(run: Invoke, data_dir: Path) -> None:
    assert run("objects", "put", "-p", "build", "art.bin", input=LARGE).exit_code == 0
    clean = run("check", "--json")
    assert clean.exit_code == 0, clean.output
    assert json.loads(clean.stdout)["ok"] is True
    assert "no problems" in run("check").stdout

    _corrupt_only_blob(data_dir)
    assert run("check").exit_code == 0  # without --verify content is not read
    found = run("check", "--verify", "--json")
    assert found.exit_code == 1
    report = json.loads(found.stdout)
    assert report["ok"] is False and report["fixed"] is False
    assert len(report["corrupt_content"]) == 1 and "art.bin" in report["corrupt_content"][0]
    assert "check --fix" in run("check", "--verify").stdout

    fixed = run("check", "--verify", "--fix", "--json")
    assert fixed.exit_code == 0
    assert json.loads(fixed.stdout)["fixed"] is True
    assert run("check", "--verify").exit_code == 0
    assert run("objects", "get", "-p", "build", "art.bin").exit_code == 4


def test_gc_removes_unreferenced_blobs(run: Invoke, data_dir: Path) -> None:
    assert run("objects", "put", "-p", "build", "art.bin", input=LARGE).exit_code == 0
    assert run("objects", "rm", "-p", "build", "art.bin").exit_code == 0
    assert len(blob_files(data_dir)) == 1

    kept = json.loads(run("gc", "--json").stdout)  # default grace period: too young to remove
    assert kept["blobs_removed"] == 0
    dry = json.loads(run("gc", "--grace", "0s", "--dry-run", "--json").stdout)
    assert dry == {"blobs_removed": 1, "bytes_removed": len(LARGE), "temp_files_removed": 0, "dry_run": True}
    assert len(blob_files(data_dir)) == 1

    done = run("gc", "--grace", "0s")
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith("removed 1 blob(s)")
    assert blob_files(data_dir) == []


def test_gc_bad_grace_names_the_option(run: Invoke) -> None:
    assert_one_line_error(run("gc", "--grace", "soon"), 3, "--grace", "'soon'")


def test_prune_prints_counts(run: Invoke) -> None:
    for _ in range(2):
        assert run("runs", "start", "-p", "build").exit_code == 0
    assert run("objects", "put", "-p", "build", "-r", "1", "k", input=b"x").exit_code == 0
    dry = run("prune", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    report = json.loads(dry.stdout)
    assert set(report) == {
        "run_objects",
        "pipeline_objects",
        "blobs",
        "events",
        "task_logs",
        "dry_run",
        "skipped",
        "interrupted",
    }
    assert report["dry_run"] is True
    text = run("prune")
    assert text.exit_code == 0
    assert "run objects: 0" in text.stdout and "blobs: 0" in text.stdout


# -- unexpected errors -------------------------------------------------------------------------------------


@pytest.fixture
def broken_open(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import objstore

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(objstore, "open", explode)
    yield


@pytest.mark.usefixtures("broken_open")
def test_internal_error_is_one_line_without_traceback(run: Invoke) -> None:
    result = run("objects", "ls", "-p", "build")
    assert result.exit_code == 70
    assert result.stderr.splitlines() == [
        "objstore: internal error: RuntimeError: boom; second line (set OBJSTORE_DEBUG=1 for a traceback)"
    ]


@pytest.mark.usefixtures("broken_open")
def test_objstore_debug_shows_the_traceback(run: Invoke) -> None:
    result = run("objects", "ls", "-p", "build", env={"OBJSTORE_DEBUG": "1"})
    assert result.exit_code == 70
    assert "Traceback" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("objstore: internal error: RuntimeError: boom")


def test_objstore_debug_is_not_taken_for_a_setting(run: Invoke) -> None:
    # Settings.load refuses OBJSTORE_* variables that name no setting; this one is the command line's.
    result = run("objects", "ls", "-p", "build", env={"OBJSTORE_DEBUG": "1"})
    assert result.exit_code == 0, result.output


def test_keyboard_interrupt_exits_130(run: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    import objstore

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(objstore, "open", interrupted)
    result = run("objects", "ls", "-p", "build")
    assert result.exit_code == 130
    assert result.stderr.splitlines() == ["objstore: interrupted"]
