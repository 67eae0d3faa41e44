"""Real processes: `python -m objstore` and the console script, exit codes, no tracebacks, pipes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIG = 20 << 20


def objstore(
    cwd: Path, *args: str, input: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "objstore", *args],
        check=False,
        cwd=cwd,
        input=input,
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "objstore.toml"
    result = objstore(tmp_path, "init-config", "-o", str(path))
    assert result.returncode == 0, result.stderr
    return path


def assert_one_line(result: subprocess.CompletedProcess[bytes], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("objstore: error: ")
    return lines[0]


def test_help_runs_as_a_module(tmp_path: Path) -> None:
    result = objstore(tmp_path, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith(b"Usage: objstore")
    assert list(tmp_path.iterdir()) == []


def test_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "objstore"
    if not script.exists():
        pytest.skip("the objstore console script is not installed beside this interpreter")
    result = subprocess.run(
        [str(script), "--version"], check=False, cwd=tmp_path, capture_output=True, timeout=60
    )
    assert result.returncode == 0
    assert result.stdout.strip() == b"objstore 0.1.0"


def test_errors_exit_with_their_code_and_no_traceback(tmp_path: Path, config: Path) -> None:
    line = assert_one_line(objstore(tmp_path, "--config", str(tmp_path / "missing.toml"), "db", "status"), 3)
    assert "missing.toml" in line
    base = ("--config", str(config))
    assert_one_line(objstore(tmp_path, *base, "objects", "get", "-p", "build", "nope"), 4)
    assert objstore(tmp_path, *base, "objects", "put", "-p", "build", "k", input=b"1").returncode == 0
    assert_one_line(objstore(tmp_path, *base, "objects", "put", "-p", "build", "k", input=b"2"), 5)
    assert_one_line(objstore(tmp_path, *base, "objects", "put", "-p", "b d", "k", input=b"2"), 6)
    usage = objstore(tmp_path, *base, "objects", "put", "k")
    assert usage.returncode == 2 and b"Traceback" not in usage.stderr


def test_stdin_to_stdout_round_trip(tmp_path: Path, config: Path) -> None:
    data = os.urandom(3 << 20)
    base = ("--config", str(config))
    put = objstore(tmp_path, *base, "objects", "put", "-p", "build", "blob.bin", "-", input=data)
    assert put.returncode == 0, put.stderr
    assert put.stdout == b"" and put.stderr == b""
    got = objstore(tmp_path, *base, "objects", "get", "-p", "build", "blob.bin")
    assert got.returncode == 0, got.stderr
    assert hashlib.sha256(got.stdout).digest() == hashlib.sha256(data).digest()


def test_file_round_trip_20_mib(tmp_path: Path, config: Path) -> None:
    source, target = tmp_path / "in.bin", tmp_path / "out.bin"
    source.write_bytes(os.urandom(BIG))
    base = ("--config", str(config))
    assert objstore(tmp_path, *base, "objects", "put", "-p", "build", "big", str(source)).returncode == 0
    got = objstore(tmp_path, *base, "objects", "get", "-p", "build", "big", "-o", str(target))
    assert got.returncode == 0, got.stderr
    assert got.stderr == b""  # no progress bar when stderr is not a terminal
    assert target.read_bytes() == source.read_bytes()


def test_closed_stdout_exits_quietly(tmp_path: Path, config: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(os.urandom(4 << 20))
    base = ("--config", str(config))
    assert objstore(tmp_path, *base, "objects", "put", "-p", "build", "big", str(source)).returncode == 0
    process = subprocess.Popen(
        [sys.executable, "-m", "objstore", *base, "objects", "get", "-p", "build", "big"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    assert len(process.stdout.read(1000)) == 1000
    process.stdout.close()  # like `| head -c 1000`
    stderr = process.stderr.read()
    assert process.wait(timeout=60) == 141
    assert stderr == b""
