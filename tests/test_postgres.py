"""What is particular to PostgreSQL: explicit schema upgrades, concurrent upgrades, event ids that commit in
order, and a connection the server dropped. (Everything else runs on PostgreSQL through the ``engine``
fixture.) These tests need ``OBJSTORE_TEST_POSTGRES_URL``; CI sets it."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from objstore.cli.main import cli
from objstore.config import Settings
from objstore.db.revision import SCHEMA_HEAD, VERSION_TABLE
from objstore.engine import ObjStore
from objstore.errors import SchemaError, StorageError
from tests.databases import POSTGRES_URL, PostgresSchema, create_schema, plain_url, run_sql

pytestmark = pytest.mark.skipif(not POSTGRES_URL, reason="needs OBJSTORE_TEST_POSTGRES_URL (CI sets it)")


@pytest.fixture
def empty_schema() -> Iterator[PostgresSchema]:
    """A schema with no tables at all (a database nobody ran `objstore db upgrade` on)."""
    yield from create_schema(migrated=False)


def _settings(root: Path, url: str, **overrides: Any) -> Settings:
    database = {"engine": "postgres", "postgres": {"url": url}}
    return Settings.for_directory(
        root,
        object_store=database,
        secret_store=database,
        server={"storage_engine": "postgres", "postgres": {"url": url}},
        **overrides,
    )


def _config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "objstore.toml"
    path.write_text(
        f'[object_store]\nengine = "postgres"\n[object_store.postgres]\nurl = "{url}"\n'
        f'[secret_store]\nengine = "postgres"\n[secret_store.postgres]\nurl = "{url}"\n'
        f'[server]\nstorage_engine = "postgres"\n[server.postgres]\nurl = "{url}"\n'
    )
    return path


def test_a_new_database_is_created_only_by_db_upgrade(empty_schema: PostgresSchema, tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="objstore db upgrade") as refused:
        ObjStore(_settings(tmp_path, empty_schema.url))
    assert "has no objstore schema yet" in str(refused.value)
    config = _config(tmp_path, empty_schema.url)
    runner = CliRunner()
    status = runner.invoke(cli, ["--config", str(config), "db", "status"])
    assert status.exit_code == 0 and "empty" in status.stdout, status.output
    refused_command = runner.invoke(cli, ["--config", str(config), "objects", "ls", "-p", "build"])
    assert refused_command.exit_code != 0 and "objstore db upgrade" in refused_command.stderr
    assert "Traceback" not in refused_command.output
    upgraded = runner.invoke(cli, ["--config", str(config), "db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    with ObjStore(_settings(tmp_path, empty_schema.url)) as store:
        store.pipeline("default", "p").objects.put("k", b"v")
        assert [s.current for s in store.schema_status()] == [SCHEMA_HEAD]


def test_an_older_database_is_not_upgraded_on_open(empty_schema: PostgresSchema, tmp_path: Path) -> None:
    ObjStore(_settings(tmp_path, empty_schema.url), upgrade_schema=False).upgrade()
    with ObjStore(_settings(tmp_path, empty_schema.url)) as store:
        run_sql(store.object_db, f"UPDATE {VERSION_TABLE} SET version_num = '0002_vault'")
    with pytest.raises(SchemaError, match="0002_vault") as refused:
        ObjStore(_settings(tmp_path, empty_schema.url))
    assert "objstore db upgrade" in str(refused.value)


def test_a_newer_database_is_refused(empty_schema: PostgresSchema, tmp_path: Path) -> None:
    ObjStore(_settings(tmp_path, empty_schema.url), upgrade_schema=False).upgrade()
    with ObjStore(_settings(tmp_path, empty_schema.url)) as store:
        run_sql(store.object_db, f"UPDATE {VERSION_TABLE} SET version_num = '9999_from_the_future'")
    with pytest.raises(SchemaError, match="9999_from_the_future"):
        ObjStore(_settings(tmp_path, empty_schema.url))
    with pytest.raises(SchemaError, match="newer than this objstore"):
        ObjStore(_settings(tmp_path, empty_schema.url), upgrade_schema=False).upgrade()


def _upgrade(url: str) -> list[str | None]:
    with ObjStore(_settings(Path("/nonexistent-objstore-test"), url), upgrade_schema=False) as store:
        return [status.current for status in store.upgrade()]


def test_concurrent_upgrades_create_the_schema_once(empty_schema: PostgresSchema) -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.map(_upgrade, [empty_schema.url] * 6)
    assert results == [[SCHEMA_HEAD]] * 6
    with ObjStore(_settings(Path("/nonexistent-objstore-test"), empty_schema.url)) as store:
        assert run_sql(store.object_db, f"SELECT version_num FROM {VERSION_TABLE}") == [(SCHEMA_HEAD,)]


def test_a_dropped_connection_is_replaced(postgres_schema: PostgresSchema, tmp_path: Path) -> None:
    postgres_schema.empty_tables()  # the session's schema: what earlier tests stored there goes first
    store = ObjStore(_settings(tmp_path, postgres_schema.url))
    objects = store.pipeline("default", "p").objects
    objects.put("k", b"v")
    ((pid,),) = run_sql(store.object_db, "SELECT pg_backend_pid()")
    with psycopg.connect(plain_url(POSTGRES_URL), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(StorageError, match=r"cannot be reached|failed"):
        objects.get("k")  # this call learns that the server closed the connection
    assert objects.get("k") == b"v"  # the next one connects again
    store.close()


_PUT_FUNCTION = (
    "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
    "WHERE n.nspname = current_schema() AND p.proname LIKE 'objstore%'"
)


def _downgrade(store: ObjStore, revision: str) -> None:
    from alembic import command

    from objstore.db.migrate import _alembic_config

    config = _alembic_config()
    with store.object_db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def test_the_put_function_comes_and_goes_with_its_revision(
    empty_schema: PostgresSchema, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, empty_schema.url)
    ObjStore(settings, upgrade_schema=False).upgrade()
    with ObjStore(settings) as store:
        assert run_sql(store.object_db, _PUT_FUNCTION) == [("objstore_insert_object",)]
        store.pipeline("default", "p").objects.put("before", b"kept")
        _downgrade(store, "0003_events")
        assert run_sql(store.object_db, _PUT_FUNCTION) == []
    with pytest.raises(SchemaError, match="0003_events"):
        ObjStore(settings)  # the code needs the function: upgrade first
    ObjStore(settings, upgrade_schema=False).upgrade()
    with ObjStore(settings) as store:
        objects = store.pipeline("default", "p").objects
        objects.put("after", b"new")
        assert (objects.get("before"), objects.get("after")) == (b"kept", b"new")


def test_limits_beyond_32_bits_reach_the_put_function(
    postgres_schema: PostgresSchema, tmp_path: Path
) -> None:
    postgres_schema.empty_tables()  # the session's schema: what earlier tests stored there goes first
    huge = 2**31 + 5  # psycopg sends it as bigint: the function must take one
    database = {"engine": "postgres", "postgres": {"url": postgres_schema.url}}
    settings = Settings.for_directory(
        tmp_path,
        object_store={**database, "pipeline_object_limit": huge, "run_object_expiry": huge},
        secret_store=database,
        server={"storage_engine": "postgres", "postgres": {"url": postgres_schema.url}},
    )
    with ObjStore(settings) as store:
        pipe = store.pipeline("default", "huge-limits")
        pipe.objects.put("k", b"v")
        pipe.start_run().objects.put("r", b"w")
        assert pipe.objects.get("k") == b"v" and pipe.run(1).objects.get("r") == b"w"
