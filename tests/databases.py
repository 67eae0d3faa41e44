"""The databases the tests run on: SQLite always, and PostgreSQL when ``OBJSTORE_TEST_POSTGRES_URL`` is set.

On PostgreSQL every test session gets its own schema (migrated once, dropped at the end) and every test starts
from empty tables. The engine reaches the code under test through objstore's own environment variables
(``OBJSTORE_OBJECT_STORE__ENGINE=postgres`` ...), so stores opened by a fixture, by ``Settings.load``, by the
command line or by a child process all use the same database.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from objstore.db.database import Database

POSTGRES_URL_VARIABLE = "OBJSTORE_TEST_POSTGRES_URL"
POSTGRES_URL = os.environ.get(POSTGRES_URL_VARIABLE, "")
ENGINES = ["sqlite", "postgres"] if POSTGRES_URL else ["sqlite"]

# Tables emptied between tests (the version table keeps its row: the schema stays migrated).
_DATA_TABLES = "pipelines, runs, events, leases, object_pipelines, objects, vault_keys, secrets"


def vault_key(key: str) -> dict[str, Any]:
    """The ``secret_store`` override that sets the encryption key whichever engine is in use."""
    return {"sqlite": {"encryption_key": key}, "postgres": {"encryption_key": key}}


def plain_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@dataclass
class PostgresSchema:
    """A private schema in the test server; ``url`` connects with it first on the search path."""

    base_url: str
    name: str

    @property
    def url(self) -> str:
        separator = "&" if "?" in self.base_url else "?"
        return f"{self.base_url}{separator}options=-csearch_path%3D{self.name}"

    def environment(self) -> dict[str, str]:
        return {
            "OBJSTORE_OBJECT_STORE__ENGINE": "postgres",
            "OBJSTORE_OBJECT_STORE__POSTGRES__URL": self.url,
            "OBJSTORE_SECRET_STORE__ENGINE": "postgres",
            "OBJSTORE_SECRET_STORE__POSTGRES__URL": self.url,
            "OBJSTORE_SERVER__STORAGE_ENGINE": "postgres",
            "OBJSTORE_SERVER__POSTGRES__URL": self.url,
        }

    def execute(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(plain_url(self.base_url), autocommit=True) as connection:
            connection.execute(f"SET search_path TO {self.name}")
            connection.execute(statement)  # type: ignore[arg-type]  # test-owned text

    def empty_tables(self) -> None:
        self.execute(f"TRUNCATE {_DATA_TABLES} RESTART IDENTITY")


def create_schema(*, migrated: bool = True) -> Iterator[PostgresSchema]:
    """A new schema, with objstore's tables unless ``migrated`` is False, dropped afterwards. Fails (never
    skips) without a server."""
    import psycopg

    from objstore.db.migrate import upgrade
    from objstore.db.postgres import PostgresDatabase

    name = f"objstore_test_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(plain_url(POSTGRES_URL), autocommit=True, connect_timeout=10) as connection:
            connection.execute(f"CREATE SCHEMA {name}")  # type: ignore[arg-type]
    except psycopg.OperationalError as error:
        raise RuntimeError(
            f"{POSTGRES_URL_VARIABLE} is set but the PostgreSQL server cannot be reached: {error}"
        ) from None
    schema = PostgresSchema(POSTGRES_URL, name)
    if migrated:
        database = PostgresDatabase(schema.url, label="test database")
        try:
            upgrade(database)
        finally:
            database.close()
    try:
        yield schema
    finally:
        with psycopg.connect(plain_url(POSTGRES_URL), autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA {name} CASCADE")  # type: ignore[arg-type]


def run_sql(
    database: Database, statement: str, params: Mapping[str, Any] | None = None
) -> list[tuple[Any, ...]]:
    """Run one statement (``:name`` parameters) on an objstore database, whichever its engine, in its own
    transaction; the rows it returned. For tests that reach under the API (corrupting a row, counting)."""

    def work(conn: Any) -> list[tuple[Any, ...]]:
        cursor = conn.execute(database.sql(statement), params or {})
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else []

    return database.write(work)


def dump(database: Database, *tables: str) -> list[tuple[Any, ...]]:
    """Every row of ``tables``, in a stable order: to show that something changed nothing."""
    return [(table, *row) for table in tables for row in sorted(run_sql(database, f"SELECT * FROM {table}"))]


def for_engine(config: Path, engine: str) -> Path:
    """Make a configuration file written for SQLite (by ``init-config``) usable on ``engine``: on PostgreSQL
    the file's encryption key is also given to the PostgreSQL secret store (the engine and URLs come from
    the environment that the ``engine`` fixture sets)."""
    if engine == "postgres":
        text = config.read_text()
        keys = [line for line in text.splitlines() if line.startswith("encryption_key = ")]
        if keys:
            config.write_text(f"{text}\n[secret_store.postgres]\n{keys[0]}\n")
    return config
