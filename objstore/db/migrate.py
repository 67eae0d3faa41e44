"""Schema versions: detect, create, upgrade, refuse.

Opening a database compares its recorded revision with ``SCHEMA_HEAD`` with one query and without
importing Alembic, so opening an up-to-date store stays cheap. Only when they differ is Alembic loaded:
an empty database is created and stamped, an older one upgraded (or refused with the command to run,
where upgrades are explicit), one newer than this code refused with both revisions named.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from objstore.db.database import Database
from objstore.db.revision import SCHEMA_HEAD, VERSION_TABLE
from objstore.errors import ObjStoreError, SchemaError, StorageError

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["SchemaStatus", "ensure_schema", "migrations_path", "schema_status", "upgrade"]


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """Where one database stands."""

    label: str
    current: str | None  # None: no objstore schema yet (or no database file at all)
    head: str
    newer: bool = False  # the database is at a revision this code does not know: upgrade objstore

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head

    @property
    def state(self) -> str:
        """One word for people: "current", "empty", "older" (run db upgrade) or "newer" (upgrade objstore)."""
        if self.up_to_date:
            return "current"
        if self.current is None:
            return "empty"
        return "newer" if self.newer else "older"


def migrations_path() -> Path:
    """The migration scripts: inside the installed package, else the source tree's top-level folder."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "_migrations", package.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise StorageError(
        f"objstore's migration scripts are missing (looked beside {package}); reinstall objstore"
    )


def _alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_path()))
    return config


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(_alembic_config())
    return {script.revision for script in scripts.walk_revisions()}


def current_revision(database: Database) -> str | None:
    """The revision recorded in the database, or None if it has no objstore schema yet.

    A database file that does not exist is reported as empty without being created.
    """
    if not database.exists():
        return None
    try:
        row = database.query_one(f"SELECT version_num FROM {VERSION_TABLE}", {})
    except SchemaError:
        return None  # no version table: a new, empty database
    return None if row is None else str(row[0])


def schema_status(database: Database) -> SchemaStatus:
    current = current_revision(database)
    newer = current is not None and current != SCHEMA_HEAD and current not in _known_revisions()
    return SchemaStatus(database.label, current, SCHEMA_HEAD, newer)


def _refuse_newer(database: Database, revision: str) -> SchemaError:
    return SchemaError(
        f"{database.label} is at schema revision {revision!r}, newer than this objstore knows "
        f"(its newest is {SCHEMA_HEAD!r}); upgrade objstore to a version that knows it, "
        "or open a backup made with this version"
    )


def ensure_schema(database: Database, *, auto_upgrade: bool = True) -> SchemaStatus:
    """Make sure ``database`` is at ``SCHEMA_HEAD``: create it if empty, upgrade it if older and allowed.

    A database whose ``upgrades_on_open`` is false (PostgreSQL, shared by many hosts) is never changed
    here: an empty or older one raises the SchemaError that says to run ``objstore db upgrade``.
    """
    status = schema_status(database)
    if status.up_to_date:
        return status
    if status.current is not None and status.current not in _known_revisions():
        raise _refuse_newer(database, status.current)
    if not database.upgrades_on_open:
        found = (
            "has no objstore schema yet"
            if status.current is None
            else (f"is at schema revision {status.current!r}")
        )
        raise SchemaError(
            f"{database.label} {found}; this objstore needs {SCHEMA_HEAD!r}: run `objstore db upgrade` "
            "(once, from one host) to create or upgrade it"
        )
    if status.current is not None and not auto_upgrade:
        raise SchemaError(
            f"{database.label} is at schema revision {status.current!r} but this objstore needs "
            f"{SCHEMA_HEAD!r}; run `objstore db upgrade`"
        )
    return upgrade(database)


def upgrade(database: Database) -> SchemaStatus:
    """Apply every missing migration in one transaction; a no-op when already at head."""
    from alembic import command

    before = current_revision(database)
    if before is not None and before != SCHEMA_HEAD and before not in _known_revisions():
        raise _refuse_newer(database, before)
    config = _alembic_config()
    try:
        # One transaction (BEGIN IMMEDIATE) around the whole upgrade: concurrent first opens from several
        # processes serialise here, and the second finds the schema already at head.
        with database.engine.begin() as connection:
            database.begin_migration(connection)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except ObjStoreError:
        raise
    except Exception as error:
        raise StorageError(f"upgrading {database.label} failed: {error}") from None
    return schema_status(database)
