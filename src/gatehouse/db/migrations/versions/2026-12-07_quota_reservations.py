"""quota reservations, and where each replica runs

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import gatehouse.db.base

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "quota_reservation",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("replica", sa.String(length=64), nullable=False),
        sa.Column("messages", sa.Integer(), nullable=False),
        sa.Column("granted", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("created_at", gatehouse.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("checkpoint_at", gatehouse.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quota_reservation")),
    )
    with op.batch_alter_table("replica", schema=None) as batch_op:
        batch_op.add_column(sa.Column("host_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("heartbeat_seconds", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("replica", schema=None) as batch_op:
        batch_op.drop_column("heartbeat_seconds")
        batch_op.drop_column("host_id")
    op.drop_table("quota_reservation")
