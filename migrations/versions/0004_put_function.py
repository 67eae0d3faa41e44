"""PostgreSQL: the fast path of an inline put as one server-side function.

On PostgreSQL a put of a small value into a pipeline with room (or an open run) takes the pipeline's
advisory lock and inserts under it. Sent as one SQL function call, that is one prepared statement and one
round trip. The function does no more than the statements it replaces; everything else (eviction,
overwrite, errors) stays in the full transaction in Python. SQLite needs no function: its writers run one
at a time, so one conditional INSERT is enough there. This revision changes nothing on SQLite.

Revision ID: 0004_put_function
Revises: 0003_events
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0004_put_function"
down_revision = "0003_events"
branch_labels = None
depends_on = None

# The limit and the expiry are bigint: settings have no upper bound, and a call whose value does not fit
# its parameter's type would find no function at all. VOLATILE (the default): each statement inside takes
# a new snapshot, so the INSERT's count sees every put committed by the lock's previous holders. The lock
# is released when the caller's transaction ends. Tables are named unqualified, as in every other
# objstore statement: they resolve on the caller's search_path, where objstore's schema comes first.
_CREATE = """
CREATE FUNCTION objstore_insert_object(
    lock_topic integer, lock_key integer,
    p_scope integer, p_run integer, p_key varchar, p_size bigint, p_sha256 varchar,
    p_content_type varchar, p_created_at bigint, p_data bytea,
    p_limit bigint, p_expiry bigint
) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_topic, lock_key);
    IF p_run = 0 THEN
        INSERT INTO objects (scope_id, run, "key", size, sha256, content_type, created_at, data)
        SELECT p_scope, p_run, p_key, p_size, p_sha256, p_content_type, p_created_at, p_data
        WHERE (SELECT count(*) FROM objects WHERE scope_id = p_scope AND run = 0) < p_limit
        ON CONFLICT (scope_id, run, "key") DO NOTHING;
    ELSE
        INSERT INTO objects (scope_id, run, "key", size, sha256, content_type, created_at, data)
        SELECT p_scope, p_run, p_key, p_size, p_sha256, p_content_type, p_created_at, p_data
        WHERE p_run > (SELECT CASE WHEN expired_through > last_run - p_expiry THEN expired_through
                                   ELSE last_run - p_expiry END
                       FROM object_pipelines WHERE id = p_scope)
        ON CONFLICT (scope_id, run, "key") DO NOTHING;
    END IF;
    RETURN FOUND;
END
$$
"""
_DROP = (
    "DROP FUNCTION objstore_insert_object(integer, integer, integer, integer, varchar, bigint, varchar, "
    "varchar, bigint, bytea, bigint, bigint)"
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_CREATE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_DROP)
