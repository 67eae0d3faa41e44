"""The wheel carries the migrations: built, installed into a fresh venv, it opens a new store."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from objstore.db.revision import SCHEMA_HEAD

REPO = Path(__file__).resolve().parent.parent

SCRIPT = """
import objstore, pathlib, sys
root = pathlib.Path(sys.argv[1])
assert "site-packages" in objstore.__file__, objstore.__file__
with objstore.ObjStore(objstore.Settings.for_directory(root)) as store:
    run = store.pipeline("default", "build-app").start_run()
    run.objects.put("junit.xml", b"<testsuite/>" * 10000)
    assert run.objects.get("junit.xml") == b"<testsuite/>" * 10000
    print("ok", [s.current for s in store.schema_status()])
"""


@pytest.mark.slow
def test_wheel_installs_and_opens_a_new_store(tmp_path: Path) -> None:
    uv = shutil.which("uv")
    if uv is None:
        pytest.fail("uv is needed to build and install the wheel (pip install uv)")
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    dist = tmp_path / "dist"
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(dist), str(REPO)], check=True, env=env, capture_output=True
    )
    (wheel,) = dist.glob("objstore-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "objstore/_migrations/env.py" in names
    assert any(n.startswith("objstore/_migrations/versions/0001_") for n in names)
    assert "objstore/py.typed" in names

    venv = tmp_path / "venv"
    subprocess.run(
        [uv, "venv", "--python", sys.executable, str(venv)], check=True, env=env, capture_output=True
    )
    python = venv / "bin" / "python"
    subprocess.run(
        [uv, "pip", "install", "--python", str(python), str(wheel)], check=True, env=env, capture_output=True
    )
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    done = subprocess.run(
        [str(python), "-c", SCRIPT, str(tmp_path / "data")],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"ok {[SCHEMA_HEAD] * 3}"
    cli = subprocess.run(
        [str(venv / "bin" / "objstore"), "--help"], capture_output=True, text=True, env=env, check=False
    )
    assert cli.returncode == 0 and "init-config" in cli.stdout
