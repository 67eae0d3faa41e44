"""Schema creation, versions, and refusal of databases newer than the code."""

from __future__ import annotations

import hashlib
import multiprocessing
import sqlite3
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from conftest import StoreFactory

from objstore.config import Settings
from objstore.db.migrate import _alembic_config, ensure_schema, schema_status
from objstore.db.revision import SCHEMA_HEAD, VERSION_TABLE
from objstore.db.schema import metadata
from objstore.db.sqlite_database import SqliteDatabase as Database
from objstore.engine import ObjStore
from objstore.errors import SchemaError


def test_schema_head_constant_matches_the_scripts() -> None:
    scripts = ScriptDirectory.from_config(_alembic_config())
    assert scripts.get_heads() == [SCHEMA_HEAD]  # one linear history


def test_upgrade_from_empty_matches_the_models(tmp_path: Path) -> None:
    database = Database(tmp_path / "x.db", label="test database")
    ensure_schema(database)
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        assert compare_metadata(context, metadata) == []
    database.close()


def test_new_database_uses_incremental_vacuum_and_wal(tmp_path: Path) -> None:
    database = Database(tmp_path / "x.db", label="test database")
    ensure_schema(database)
    assert database.query_one("PRAGMA auto_vacuum", {}) == (2,)  # INCREMENTAL
    assert database.query_one("PRAGMA journal_mode", {}) == ("wal",)
    database.close()


@pytest.mark.sqlite_only
def test_future_revision_is_refused_clearly(store: ObjStore, data_dir: Path) -> None:
    store.close()
    with sqlite3.connect(data_dir / "objects.db") as raw:
        raw.execute(f"UPDATE {VERSION_TABLE} SET version_num = '9999_from_the_future'")
    before = (data_dir / "objects.db").read_bytes()
    with pytest.raises(SchemaError) as refused:
        ObjStore(Settings.for_directory(data_dir))
    message = str(refused.value)
    assert "9999_from_the_future" in message and SCHEMA_HEAD in message and "objects.db" in message
    assert (data_dir / "objects.db").read_bytes() == before


def test_status_without_upgrade_then_upgrade(data_dir: Path) -> None:
    with ObjStore(Settings.for_directory(data_dir), upgrade_schema=False) as store:
        statuses = store.schema_status()
        assert len(statuses) == 3 and all(s.current is None and not s.up_to_date for s in statuses)
        assert all(s.up_to_date for s in store.upgrade())
        assert all(s.current == SCHEMA_HEAD for s in store.schema_status())
        assert all(s.up_to_date for s in store.upgrade())  # a second upgrade changes nothing


def test_unknown_revision_is_refused_without_touching_the_database(tmp_path: Path) -> None:
    database = Database(tmp_path / "x.db", label="test database")
    ensure_schema(database)
    database.write(lambda conn: conn.execute(f"UPDATE {VERSION_TABLE} SET version_num = 'base_marker'"))
    with pytest.raises(SchemaError, match="newer than this objstore"):
        ensure_schema(database, auto_upgrade=False)
    assert schema_status(database).current == "base_marker"
    database.close()


def _open_and_put(args: tuple[str, int]) -> int:
    data_dir, n = args
    with ObjStore(Settings.for_directory(data_dir)) as store:
        store.pipeline("default", "p").objects.put(f"k{n}", b"x")
    return n


def test_concurrent_first_opens_create_the_schema_once(data_dir: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        assert sorted(pool.map(_open_and_put, [(str(data_dir), n) for n in range(8)])) == list(range(8))
    with sqlite3.connect(data_dir / "objects.db") as raw:
        assert raw.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall() == [(SCHEMA_HEAD,)]
        assert raw.execute("SELECT count(*) FROM objects").fetchone() == (8,)


@pytest.mark.sqlite_only
def test_schema_error_for_a_damaged_database(make_store: StoreFactory, data_dir: Path) -> None:
    data_dir.mkdir(parents=True)
    (data_dir / "objects.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(Exception, match="not a valid SQLite database") as raised:
        make_store()
    from objstore.errors import StorageError

    assert isinstance(raised.value, StorageError)


def test_status_of_a_missing_store_creates_nothing(tmp_path: Path) -> None:
    data = tmp_path / "never-opened"
    with ObjStore(Settings.for_directory(data), upgrade_schema=False) as store:
        assert [s.state for s in store.schema_status()] == ["empty", "empty", "empty"]
    assert not data.exists()


@pytest.mark.sqlite_only
def test_status_tells_newer_from_older(store: ObjStore, data_dir: Path) -> None:
    store.close()
    with sqlite3.connect(data_dir / "objects.db") as raw:
        raw.execute(f"UPDATE {VERSION_TABLE} SET version_num = '9999_from_the_future'")
    with ObjStore(Settings.for_directory(data_dir), upgrade_schema=False) as again:
        states = {s.label.split()[0]: s.state for s in again.schema_status()}
    assert states == {"server": "current", "object": "newer", "secret": "current"}


def _database_at(path: Path, revision: str) -> Database:
    from alembic import command

    database = Database(path, label=f"database {path.name}")
    config = _alembic_config()
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    return database


def test_older_database_is_upgraded_on_open_keeping_its_data(data_dir: Path) -> None:
    data_dir.mkdir(parents=True)
    for name in ("objects.db", "objstore.db", "secrets.db"):
        _database_at(data_dir / name, "0001_foundation").close()
    with sqlite3.connect(data_dir / "objects.db") as raw:
        raw.execute("INSERT INTO object_pipelines (id, namespace, pipeline) VALUES (1, 'default', 'p')")
        raw.execute(
            "INSERT INTO objects (scope_id, run, key, size, sha256, content_type, created_at, data) "
            "VALUES (1, 0, 'k', 2, ?, 'application/octet-stream', 0, ?)",
            (hashlib.sha256(b"VV").hexdigest(), b"VV"),
        )
    with ObjStore(Settings.for_directory(data_dir), upgrade_schema=False) as store:
        assert {s.state for s in store.schema_status()} == {"older"}
    database = Database(data_dir / "objects.db", label="object database")
    with pytest.raises(SchemaError, match="objstore db upgrade"):
        ensure_schema(database, auto_upgrade=False)
    database.close()
    with ObjStore(Settings.for_directory(data_dir)) as store:  # SQLite: upgraded on open
        assert all(s.current == SCHEMA_HEAD for s in store.schema_status())
        assert store.pipeline("default", "p").objects.get("k") == b"VV"
