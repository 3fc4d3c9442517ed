"""stored responses of the Responses API

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import gatehouse.db.base

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stored_response",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("previous_response_id", sa.String(length=100), nullable=True),
        sa.Column("created_at", gatehouse.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("input_items", sa.JSON(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["user_account.id"],
            name=op.f("fk_stored_response_user_id_user_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stored_response")),
    )
    with op.batch_alter_table("stored_response", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stored_response_created_at"), ["created_at"], unique=False)
        batch_op.create_index("ix_stored_response_user_created", ["user_id", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("stored_response", schema=None) as batch_op:
        batch_op.drop_index("ix_stored_response_user_created")
        batch_op.drop_index(batch_op.f("ix_stored_response_created_at"))
    op.drop_table("stored_response")
