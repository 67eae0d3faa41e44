"""The generated sample configuration: it matches the model, loads to the defaults, and is the repo's file."""

from __future__ import annotations

import os
import re
import string
import tomllib
from pathlib import Path

import pytest

from objstore.config import ENV_PREFIX, FilesystemBlobStore, S3BlobStore, Settings
from objstore.errors import ConfigError
from objstore.sample_config import PLACEHOLDER_KEY, new_encryption_key, render_sample_config

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("OBJSTORE_"):
            monkeypatch.delenv(name)


def test_repository_sample_is_the_generated_one() -> None:
    assert (REPO_ROOT / "sample-config.toml").read_text(encoding="utf-8") == render_sample_config(None)


def test_sample_with_a_key_loads_to_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = new_encryption_key()
    config = tmp_path / "objstore.toml"
    config.write_text(render_sample_config(key), encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # defaults without a file resolve against the working folder
    loaded = Settings.load(config)
    defaults = Settings.load(None, secret_store={"sqlite": {"encryption_key": key}})
    assert loaded.model_dump() == defaults.model_dump()
    assert loaded.secret_store.sqlite.encryption_key is not None
    assert loaded.secret_store.sqlite.encryption_key.get_secret_value() == key


def test_sample_with_placeholder_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "objstore.toml"
    config.write_text(render_sample_config(None), encoding="utf-8")
    assert f'encryption_key = "{PLACEHOLDER_KEY}"' in config.read_text(encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        Settings.load(config)
    message = str(caught.value)
    assert "secret_store.sqlite.encryption_key" in message
    assert "run `objstore init-config`" in message


def test_sample_documents_every_key() -> None:
    text = render_sample_config(None)
    assert 'event_log_retention = "4380h"' in text
    assert 'event_prune_interval = "3h"' in text
    assert 'gc_grace_period = "1h"' in text
    for variable in [
        "OBJSTORE_API__EVENT_LOG_RETENTION",
        "OBJSTORE_OBJECT_STORE__PIPELINE_OBJECT_LIMIT",
        "OBJSTORE_OBJECT_STORE__SQLITE__PATH",
        "OBJSTORE_OBJECT_STORE__POSTGRES__URL",
        "OBJSTORE_SECRET_STORE__SQLITE__ENCRYPTION_KEY",
        "OBJSTORE_SECRET_STORE__POSTGRES__ENCRYPTION_KEY",
        "OBJSTORE_SERVER__STORAGE_PATH",
        "OBJSTORE_SERVER__POSTGRES__URL",
        "OBJSTORE_DEVELOPMENT__DEFAULT_ENCRYPTION",
        "OBJSTORE_BLOBS__THRESHOLD",
        "OBJSTORE_BLOBS__STORES",
    ]:
        assert variable in text
    # Each description of the model is in the sample.
    assert "Most objects kept per pipeline" in text
    assert "# [[blobs.stores]]" in text
    assert "# [object_store.postgres]" in text and "# [secret_store.postgres]" in text
    assert all(line == "" or len(line) <= 100 for line in text.splitlines())
    assert ENV_PREFIX + "CONFIG" not in text


def _uncomment_examples(text: str) -> str:
    """Uncomment the commented-out tables ("# [x]" / "# [[x]]" up to the next blank line)."""
    lines, inside = [], False
    for line in text.splitlines():
        if re.match(r"# \[\[?[a-z_.]+\]\]?$", line):
            inside = True
        elif not line:
            inside = False
        lines.append(line.removeprefix("# ") if inside else line)
    return "\n".join(lines) + "\n"


def test_commented_examples_are_valid(tmp_path: Path) -> None:
    key = new_encryption_key()
    text = _uncomment_examples(render_sample_config(key))
    tomllib.loads(text)
    config = tmp_path / "objstore.toml"
    config.write_text(text, encoding="utf-8")
    settings = Settings.load(config)
    stores = settings.blob_stores()
    assert stores[0] == FilesystemBlobStore(path=tmp_path / "objstore-data" / "blobs")
    assert stores[1] == S3BlobStore(
        bucket="ci-artifacts", prefix="blobs", region="eu-west-1", endpoint="http://127.0.0.1:7480"
    )
    assert settings.object_store.postgres.url == "postgresql+psycopg://ci@db.internal/objstore"
    assert settings.secret_store.postgres.encryption_key is not None
    assert settings.secret_store.postgres.encryption_key.get_secret_value() == key


def test_new_encryption_key() -> None:
    keys = {new_encryption_key() for _ in range(50)}
    assert len(keys) == 50
    alphabet = set(string.ascii_letters + string.digits + "-_")
    for key in keys:
        assert len(key) == 32
        assert len(key.encode("utf-8")) == 32
        assert set(key) <= alphabet
    key = keys.pop()
    settings = Settings.load(None, secret_store={"sqlite": {"encryption_key": key}})
    assert settings.secret_store.encryption_key is not None
