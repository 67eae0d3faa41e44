"""Foundation: pipelines and runs; pipeline and run objects.

Revision ID: 0001_foundation
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_foundation"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pipelines",
        sa.Column("namespace", sa.String(64), nullable=False),
        sa.Column("pipeline", sa.String(64), nullable=False),
        sa.Column("last_run", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("namespace", "pipeline", name=op.f("pk_pipelines")),
    )
    op.create_table(
        "runs",
        sa.Column("namespace", sa.String(64), nullable=False),
        sa.Column("pipeline", sa.String(64), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("namespace", "pipeline", "number", name=op.f("pk_runs")),
    )
    op.create_table(
        "object_pipelines",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("namespace", sa.String(64), nullable=False),
        sa.Column("pipeline", sa.String(64), nullable=False),
        sa.Column("last_run", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("expired_through", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_object_pipelines")),
        sa.UniqueConstraint("namespace", "pipeline", name=op.f("uq_object_pipelines_namespace_pipeline")),
    )
    op.create_table(
        "objects",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("scope_id", sa.Integer(), nullable=False),
        sa.Column("run", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["scope_id"], ["object_pipelines.id"], name=op.f("fk_objects_scope_id_object_pipelines")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_objects")),
        sa.UniqueConstraint("scope_id", "run", "key", name=op.f("uq_objects_scope_id_run_key")),
    )
    op.create_index(
        "ix_objects_blob_sha256",
        "objects",
        ["sha256"],
        unique=False,
        sqlite_where=sa.text("data IS NULL"),
        postgresql_where=sa.text("data IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_objects_blob_sha256", table_name="objects")
    op.drop_table("objects")
    op.drop_table("object_pipelines")
    op.drop_table("runs")
    op.drop_table("pipelines")
