"""The database schema, in SQLAlchemy Core, for every database objstore keeps.

One linear migration history creates every table in every database (the three configured databases may
be one and the same file); each store uses only its own tables. Identity is held in real columns
(namespace, pipeline, run, key), never in joined strings. Timestamps are integer microseconds since the
Unix epoch (UTC): compact, sortable and identical on SQLite and PostgreSQL.

The revision constants live in ``objstore.db.revision`` so that opening a store imports neither this
module nor Alembic.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from objstore.db.revision import SCHEMA_HEAD, VERSION_TABLE

__all__ = [
    "SCHEMA_HEAD",
    "VERSION_TABLE",
    "events",
    "leases",
    "metadata",
    "object_pipelines",
    "objects",
    "pipelines",
    "runs",
    "secrets",
    "vault_keys",
]


# Stable constraint names so later migrations (and batch mode on SQLite) can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

ID_LENGTH = 64
KEY_LENGTH = 255

# --- server database: pipelines and their runs ------------------------------------------------------

pipelines = Table(
    "pipelines",
    metadata,
    Column("namespace", String(ID_LENGTH), nullable=False),
    Column("pipeline", String(ID_LENGTH), nullable=False),
    Column("last_run", Integer, nullable=False, server_default=text("0")),
    Column("created_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("namespace", "pipeline"),
)

runs = Table(
    "runs",
    metadata,
    Column("namespace", String(ID_LENGTH), nullable=False),
    Column("pipeline", String(ID_LENGTH), nullable=False),
    Column("number", Integer, nullable=False),
    Column("started_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("namespace", "pipeline", "number"),
)

# The event log. AUTOINCREMENT: an id is never reused, even after pruning empties the table, so a reader
# paging with "after this id" never skips a new event.
events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(ID_LENGTH), nullable=False),
    Column("namespace", String(ID_LENGTH), nullable=True),
    Column("pipeline", String(ID_LENGTH), nullable=True),
    Column("run", Integer, nullable=True),
    Column("emitted_at", BigInteger, nullable=False),
    Column("details", Text, nullable=False),  # JSON object
    sqlite_autoincrement=True,
)
# Retention deletes by age; listing filters by kind or by pipeline, newest first.
Index("ix_events_emitted_at", events.c.emitted_at)
Index("ix_events_kind_id", events.c.kind, events.c.id)
Index("ix_events_namespace_pipeline_id", events.c.namespace, events.c.pipeline, events.c.id)

# Leases: one row per pruning job, so that of several processes embedding the same databases one runs it
# at a time; a holder that dies stops renewing and the lease passes on once it expires.
leases = Table(
    "leases",
    metadata,
    Column("name", String(ID_LENGTH), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("acquired_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
)

# --- object database -----------------------------------------------------------------------------------

# One row per pipeline that has objects: the scope id the objects refer to (a narrow integer keeps the
# objects' indexes small), and the expiry state kept beside the objects so that a put into a run and the
# sweep that expires it are serialised by the object database's own transactions (runs live elsewhere).
object_pipelines = Table(
    "object_pipelines",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("namespace", String(ID_LENGTH), nullable=False),
    Column("pipeline", String(ID_LENGTH), nullable=False),
    Column("last_run", Integer, nullable=False, server_default=text("0")),
    # Run objects of runs numbered up to this are expired (deleted, and puts refused).
    Column("expired_through", Integer, nullable=False, server_default=text("0")),
    UniqueConstraint("namespace", "pipeline"),
)

objects = Table(
    "objects",
    metadata,
    # Insertion order: the pipeline object limit evicts the smallest ids first.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("scope_id", Integer, ForeignKey("object_pipelines.id"), nullable=False),
    # 0 for pipeline objects, else the run number (runs start at 1); 0 rather than NULL keeps the
    # unique constraint effective on every database.
    Column("run", Integer, nullable=False),
    Column("key", String(KEY_LENGTH), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("content_type", String(255), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # The content itself when it is small; NULL when it lives in the blob store under its sha256.
    Column("data", LargeBinary, nullable=True),
    # Also serves eviction, listing and run expiry (a range of runs): no second index to maintain.
    UniqueConstraint("scope_id", "run", "key"),
)

# Garbage collection asks "does any row still use this blob?": index only the rows that refer to blobs.
Index(
    "ix_objects_blob_sha256",
    objects.c.sha256,
    sqlite_where=objects.c.data.is_(None),
    postgresql_where=objects.c.data.is_(None),
)

# --- secret database -----------------------------------------------------------------------------------

# Data keys, each wrapped by the configured key (the key-encryption key). A wrapped key doubles as the
# key-check record: a wrong configured key fails to unwrap it at open, before anything is written.
vault_keys = Table(
    "vault_keys",
    metadata,
    Column("key_id", Integer, primary_key=True, autoincrement=False),
    Column("wrapped", LargeBinary, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

secrets = Table(
    "secrets",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # "pipeline" or "global"; a global secret has namespace and pipeline "" (never a valid id).
    Column("scope", String(8), nullable=False),
    Column("namespace", String(ID_LENGTH), nullable=False),
    Column("pipeline", String(ID_LENGTH), nullable=False),
    Column("name", String(128), nullable=False),
    # format byte, data-key id, nonce, AES-256-GCM ciphertext and tag (objstore.crypto)
    Column("sealed", LargeBinary, nullable=False),
    Column("key_id", Integer, nullable=False),  # the data key that sealed it: rotation works in batches
    Column("is_text", Boolean, nullable=False),  # get returns what put was given: str or bytes
    # Global secrets: JSON list of full-match namespace globs allowed to read it (deny by default).
    Column("allowed_namespaces", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("scope", "namespace", "pipeline", "name"),
)
Index("ix_secrets_key_id", secrets.c.key_id)
