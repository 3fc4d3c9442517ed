"""budgets: monthly quotas, spend limits, group and key budgets

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-10 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import gatehouse.db.base

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "budget_counter",
        sa.Column("key", sa.String(length=48), nullable=False),
        sa.Column("scope", sa.String(length=1), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("period", sa.String(length=1), nullable=False),
        sa.Column("start", sa.Date(), nullable=False),
        sa.Column("messages", sa.Integer(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_nanos", sa.BigInteger(), nullable=False),
        sa.Column("reserved_tokens", sa.BigInteger(), nullable=False),
        sa.Column("reserved_cost", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", gatehouse.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_budget_counter")),
    )
    with op.batch_alter_table("budget_counter", schema=None) as batch_op:
        batch_op.create_index("ix_budget_counter_subject", ["scope", "subject_id", "start"], unique=False)

    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.add_column(sa.Column("messages_per_day", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("tokens_per_day", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("spend_per_day_nanos", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("messages_per_month", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("tokens_per_month", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("spend_per_month_nanos", sa.BigInteger(), nullable=True))

    with op.batch_alter_table("quota_reservation", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cost", sa.BigInteger(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("budgets", sa.String(length=1000), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("input_micros", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("output_micros", sa.BigInteger(), nullable=True))

    # Server defaults, so that the rows already there (and reservations in flight during a rolling upgrade) get 0.
    with op.batch_alter_table("usage_counter", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cost_nanos", sa.BigInteger(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("reserved_cost", sa.BigInteger(), nullable=False, server_default="0"))

    with op.batch_alter_table("user_account", schema=None) as batch_op:
        batch_op.add_column(sa.Column("messages_per_month", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("tokens_per_month", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("spend_per_day_nanos", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("spend_per_month_nanos", sa.BigInteger(), nullable=True))

    with op.batch_alter_table("user_group", schema=None) as batch_op:
        batch_op.add_column(sa.Column("messages_per_day", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("tokens_per_day", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("spend_per_day_nanos", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("messages_per_month", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("tokens_per_month", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("spend_per_month_nanos", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("user_group", schema=None) as batch_op:
        batch_op.drop_column("spend_per_month_nanos")
        batch_op.drop_column("tokens_per_month")
        batch_op.drop_column("messages_per_month")
        batch_op.drop_column("spend_per_day_nanos")
        batch_op.drop_column("tokens_per_day")
        batch_op.drop_column("messages_per_day")

    with op.batch_alter_table("user_account", schema=None) as batch_op:
        batch_op.drop_column("spend_per_month_nanos")
        batch_op.drop_column("spend_per_day_nanos")
        batch_op.drop_column("tokens_per_month")
        batch_op.drop_column("messages_per_month")

    with op.batch_alter_table("usage_counter", schema=None) as batch_op:
        batch_op.drop_column("reserved_cost")
        batch_op.drop_column("cost_nanos")

    with op.batch_alter_table("quota_reservation", schema=None) as batch_op:
        batch_op.drop_column("output_micros")
        batch_op.drop_column("input_micros")
        batch_op.drop_column("budgets")
        batch_op.drop_column("cost")

    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.drop_column("spend_per_month_nanos")
        batch_op.drop_column("tokens_per_month")
        batch_op.drop_column("messages_per_month")
        batch_op.drop_column("spend_per_day_nanos")
        batch_op.drop_column("tokens_per_day")
        batch_op.drop_column("messages_per_day")

    with op.batch_alter_table("budget_counter", schema=None) as batch_op:
        batch_op.drop_index("ix_budget_counter_subject")

    op.drop_table("budget_counter")
