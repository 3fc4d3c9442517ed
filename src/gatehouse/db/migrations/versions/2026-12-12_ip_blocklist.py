"""the IP/CIDR blocklist

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-12 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import gatehouse.db.base

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "blocked_network",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("network", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("created_at", gatehouse.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_by_label", sa.String(length=320), nullable=True),
        sa.Column("expires_at", gatehouse.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blocked_network")),
        sa.UniqueConstraint("network", name=op.f("uq_blocked_network_network")),
    )
    with op.batch_alter_table("blocked_network", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_blocked_network_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("blocked_network", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_blocked_network_expires_at"))

    op.drop_table("blocked_network")
