"""Shared fixtures: stores in temporary folders, isolated from the caller's OBJSTORE_* environment."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from objstore.config import Settings
from objstore.engine import ObjStore
from tests.databases import ENGINES, PostgresSchema, create_schema, vault_key

StoreFactory = Callable[..., ObjStore]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's or CI's own OBJSTORE_* settings must not leak into the tests.
    for name in list(os.environ):
        if name.startswith("OBJSTORE_") and not name.startswith("OBJSTORE_TEST_"):
            monkeypatch.delenv(name)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests about SQLite's files run on SQLite only; their PostgreSQL variants are deselected, not skipped.
    deselected = [
        item
        for item in items
        if item.get_closest_marker("sqlite_only") is not None
        and getattr(item, "callspec", None) is not None
        and item.callspec.params.get("engine") == "postgres"
    ]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item not in deselected]


@pytest.fixture(scope="session")
def postgres_schema() -> Iterator[PostgresSchema]:
    """This session's PostgreSQL schema (only when OBJSTORE_TEST_POSTGRES_URL is set)."""
    yield from create_schema()


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Iterator[str]:
    """The database engine of this test's stores: "sqlite", and "postgres" when a test server is given.

    On PostgreSQL, objstore's environment variables point every store the test opens (in-process, through
    the command line, or in a child process) at the session's schema, emptied first. They are set on a
    monkeypatch of its own, so that a test undoing its own patches keeps them.
    """
    name: str = request.param
    with pytest.MonkeyPatch.context() as patch:
        if name == "postgres":
            schema: PostgresSchema = request.getfixturevalue("postgres_schema")
            schema.empty_tables()
            for variable, value in schema.environment().items():
                patch.setenv(variable, value)
        yield name


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def make_store(data_dir: Path, engine: str) -> Iterator[StoreFactory]:
    """Open stores on one data folder (and the test's database engine); settings overrides as keyword
    sections, plus ``clock=``."""
    opened: list[ObjStore] = []

    def make(clock: Any = None, **overrides: Any) -> ObjStore:
        key = overrides.get("secret_store", {}).get("sqlite", {}).get("encryption_key")
        if key is not None:  # the tests name the SQLite section; the key belongs to the engine in use
            overrides["secret_store"] = {**overrides["secret_store"], **vault_key(key)}
        store = ObjStore(Settings.for_directory(data_dir, **overrides), clock=clock)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: StoreFactory) -> ObjStore:
    return make_store()


def blob_files(data_dir: Path) -> list[Path]:
    """Every content file in the default blob store (staging leftovers excluded)."""
    root = data_dir / "blobs"
    if not root.exists():
        return []
    return sorted(p for p in root.glob("*/*") if p.is_file() and p.parent.name != ".staging")


def staging_files(data_dir: Path) -> list[Path]:
    staging = data_dir / "blobs" / ".staging"
    return sorted(staging.iterdir()) if staging.exists() else []


def assert_one_line_error(result: Any, code: int, *needles: str) -> str:
    """The command failed with ``code`` and printed exactly one `objstore: error:` line, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("objstore: error: "), lines[0]
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return str(lines[0])
