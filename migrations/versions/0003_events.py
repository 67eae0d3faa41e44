"""Event log and pruning leases.

Revision ID: 0003_events
Revises: 0002_vault
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_events"
down_revision = "0002_vault"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("namespace", sa.String(64), nullable=True),
        sa.Column("pipeline", sa.String(64), nullable=True),
        sa.Column("run", sa.Integer(), nullable=True),
        sa.Column("emitted_at", sa.BigInteger(), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_events_emitted_at", "events", ["emitted_at"], unique=False)
    op.create_index("ix_events_kind_id", "events", ["kind", "id"], unique=False)
    op.create_index(
        "ix_events_namespace_pipeline_id", "events", ["namespace", "pipeline", "id"], unique=False
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("acquired_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_index("ix_events_namespace_pipeline_id", table_name="events")
    op.drop_index("ix_events_kind_id", table_name="events")
    op.drop_index("ix_events_emitted_at", table_name="events")
    op.drop_table("events")
