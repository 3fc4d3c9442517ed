"""groups, access rules, key restrictions, prices and request cost

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-09 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import gatehouse.db.base

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "model_price",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("input_micros", sa.BigInteger(), nullable=True),
        sa.Column("output_micros", sa.BigInteger(), nullable=True),
        sa.Column("cached_input_micros", sa.BigInteger(), nullable=True),
        sa.Column("effective_from", gatehouse.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", gatehouse.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_price")),
    )
    with op.batch_alter_table("model_price", schema=None) as batch_op:
        batch_op.create_index("ix_model_price_model_effective", ["model", "effective_from"], unique=False)

    op.create_table(
        "user_group",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("created_at", gatehouse.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", gatehouse.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_group")),
        sa.UniqueConstraint("name", name=op.f("uq_user_group_name")),
    )
    op.create_table(
        "access_rule",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("group_id", sa.Integer(), nullable=True),
        sa.Column("effect", sa.String(length=8), nullable=False),
        sa.Column("target", sa.String(length=16), nullable=False),
        sa.Column("pattern", sa.String(length=200), nullable=False),
        sa.Column("created_at", gatehouse.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.CheckConstraint("(user_id IS NULL) <> (group_id IS NULL)", name=op.f("ck_access_rule_one_subject")),
        sa.ForeignKeyConstraint(
            ["group_id"], ["user_group.id"], name=op.f("fk_access_rule_group_id_user_group"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user_account.id"], name=op.f("fk_access_rule_user_id_user_account"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_rule")),
    )
    with op.batch_alter_table("access_rule", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_access_rule_group_id"), ["group_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_access_rule_user_id"), ["user_id"], unique=False)

    op.create_table(
        "group_member",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("added_at", gatehouse.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"], ["user_group.id"], name=op.f("fk_group_member_group_id_user_group"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user_account.id"], name=op.f("fk_group_member_user_id_user_account"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("group_id", "user_id", name=op.f("pk_group_member")),
    )
    with op.batch_alter_table("group_member", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_group_member_user_id"), ["user_id"], unique=False)

    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.add_column(sa.Column("group_id", sa.Integer(), nullable=True))
        # A server default, so that the keys already there get false.
        batch_op.add_column(sa.Column("acts_for_users", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("allowed_models", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("allowed_surfaces", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("allowed_networks", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("rate_per_minute", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_api_key_group_id"), ["group_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_api_key_group_id_user_group"), "user_group", ["group_id"], ["id"], ondelete="RESTRICT"
        )

    with op.batch_alter_table("request_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cost_nanos", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("request_log", schema=None) as batch_op:
        batch_op.drop_column("cost_nanos")

    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_api_key_group_id_user_group"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_api_key_group_id"))
        batch_op.drop_column("rate_per_minute")
        batch_op.drop_column("allowed_networks")
        batch_op.drop_column("allowed_surfaces")
        batch_op.drop_column("allowed_models")
        batch_op.drop_column("acts_for_users")
        batch_op.drop_column("group_id")

    with op.batch_alter_table("group_member", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_group_member_user_id"))

    op.drop_table("group_member")
    with op.batch_alter_table("access_rule", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_access_rule_user_id"))
        batch_op.drop_index(batch_op.f("ix_access_rule_group_id"))

    op.drop_table("access_rule")
    op.drop_table("user_group")
    with op.batch_alter_table("model_price", schema=None) as batch_op:
        batch_op.drop_index("ix_model_price_model_effective")

    op.drop_table("model_price")
