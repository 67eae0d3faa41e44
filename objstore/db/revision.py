"""Schema revision constants, kept apart from the schema so that opening a store needs no SQLAlchemy."""

from __future__ import annotations

__all__ = ["SCHEMA_HEAD", "VERSION_TABLE"]

# The newest migration; a test keeps it equal to the head of the scripts in migrations/versions.
SCHEMA_HEAD = "0004_put_function"
# objstore's own version table, so it never collides with a host application's alembic_version.
VERSION_TABLE = "objstore_schema_version"
