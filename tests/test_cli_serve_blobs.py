"""`serve-blobs` (registered in objstore.cli.main; here under a throwaway group): refusals before the
store is opened, and a real process serving blobs over a socket until SIGTERM or SIGINT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import click
import pytest
from blob_contract import MIB, payload
from blob_http_support import TOKEN, put
from click.testing import CliRunner

from objstore.blobs.http import HttpBlobBackend
from objstore.blobs.verify import read_verified
from objstore.cli.blob_server_cmd import serve_blobs
from objstore.cli.context import CliState
from objstore.cli.main import ObjstoreGroup

# -- helpers -------------------------------------------------------------------------------------------------

GROUP = """
import click
from objstore.cli.blob_server_cmd import serve_blobs
from objstore.cli.context import CliState
from objstore.cli.main import ObjstoreGroup

@click.group(cls=ObjstoreGroup)
@click.option("--config", default=None)
@click.pass_context
def group(ctx, config):
    ctx.obj = CliState(config=config)

group.add_command(serve_blobs)
"""

CONFIG = """\
[server]
storage_path = "data/objstore.db"
[object_store.sqlite]
path = "data/objects.db"
[secret_store.sqlite]
path = "data/secrets.db"
"""


def temporary_group() -> click.Group:
    """The command under a throwaway group (the real one registers it in objstore.cli.main)."""

    @click.group(cls=ObjstoreGroup)
    @click.option("--config", default=None)
    @click.pass_context
    def group(ctx: click.Context, config: str | None) -> None:
        ctx.obj = CliState(config=config)

    group.add_command(serve_blobs)
    return group


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "objstore.toml"
    path.write_text(CONFIG)
    return path


@pytest.mark.parametrize(
    ("args", "token", "code", "needle"),
    [
        (["--listen", "0.0.0.0:7777"], "", 3, "without a token"),
        (["--listen", "0.0.0.0:7777", "--token-file", "missing.txt"], "", 3, "cannot read --token-file"),
        (["--listen", "127.0.0.1:0"], "short", 3, "at least 16"),
        (["--listen", "nonsense"], "", 2, "HOST:PORT"),
    ],
)
def test_serve_blobs_refusals(config: Path, args: list[str], token: str, code: int, needle: str) -> None:
    env = {"OBJSTORE_BLOB_SERVER_TOKEN": token} if token else {}
    result = CliRunner().invoke(temporary_group(), ["--config", str(config), "serve-blobs", *args], env=env)
    assert result.exit_code == code, result.output
    assert needle in result.output
    assert "Traceback" not in result.output
    assert not (config.parent / "data").exists()  # refused before opening the store


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_blobs_process(config: Path, tmp_path: Path, signum: int) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    process = subprocess.Popen(
        [
            *(sys.executable, "-c", GROUP + "group.main(prog_name='objstore')", "--config", str(config)),
            *("serve-blobs", "--listen", "127.0.0.1:0", "--token-file", str(token_file)),
        ],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("OBJSTORE_")},
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        if not line.startswith("{"):
            process.kill()
            raise AssertionError(line + process.stderr.read())
        first = json.loads(line)
        assert first["message"].startswith("serving the blobs of filesystem:"), first
        client = HttpBlobBackend(f"127.0.0.1:{first['port']}", token=TOKEN, staging_dir=tmp_path / "c")
        data = payload(3 * MIB, seed=7)
        digest = put(client, data)
        assert read_verified(client.open(digest), digest, len(data), "x") == data
        assert (tmp_path / "data" / "blobs" / digest[:2] / digest).read_bytes() == data
        client.close()
        process.send_signal(signum)
        assert process.wait(timeout=30) == 0
        rest = process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    records = [first, *(json.loads(line) for line in rest.splitlines())]
    requests = [(r["method"], r["status"]) for r in records if "status" in r]
    assert requests == [("HEAD", 404), ("PUT", 201), ("GET", 200)]  # HEAD first: 3 MiB is worth a check
    assert records[-1]["message"] == "blob server stopped"
    assert TOKEN not in rest
