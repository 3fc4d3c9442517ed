"""budget alerts and their webhook deliveries

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-11 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import gatehouse.db.base

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "budget_alert",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=1), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("period", sa.String(length=1), nullable=False),
        sa.Column("start", sa.Date(), nullable=False),
        sa.Column("measure", sa.String(length=16), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.Column("limit", sa.BigInteger(), nullable=False),
        sa.Column("subject_name", sa.String(length=320), nullable=False),
        sa.Column("replica", sa.String(length=64), nullable=False),
        sa.Column("created_at", gatehouse.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budget_alert")),
        sa.UniqueConstraint(
            "scope", "subject_id", "period", "start", "measure", "threshold", name="uq_budget_alert_crossing"
        ),
    )
    op.create_table(
        "alert_delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(length=300), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("created_at", gatehouse.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_attempt_at", gatehouse.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", gatehouse.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", gatehouse.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("lease_until", gatehouse.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["budget_alert.id"], name=op.f("fk_alert_delivery_alert_id_budget_alert"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_delivery")),
    )
    with op.batch_alter_table("alert_delivery", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alert_delivery_alert_id"), ["alert_id"], unique=False)
        batch_op.create_index("ix_alert_delivery_status_lease", ["status", "lease_until"], unique=False)

    with op.batch_alter_table("usage_counter", schema=None) as batch_op:
        batch_op.create_index("ix_usage_counter_day", ["day"], unique=False)

    with op.batch_alter_table("budget_counter", schema=None) as batch_op:
        batch_op.create_index("ix_budget_counter_start", ["start"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("budget_counter", schema=None) as batch_op:
        batch_op.drop_index("ix_budget_counter_start")

    with op.batch_alter_table("usage_counter", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_counter_day")

    with op.batch_alter_table("alert_delivery", schema=None) as batch_op:
        batch_op.drop_index("ix_alert_delivery_status_lease")
        batch_op.drop_index(batch_op.f("ix_alert_delivery_alert_id"))

    op.drop_table("alert_delivery")
    op.drop_table("budget_alert")
