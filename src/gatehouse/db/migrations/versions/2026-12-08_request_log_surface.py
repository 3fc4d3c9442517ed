"""the client surface of each request-log row

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, without a default: adding it rewrites no row (rows from before it have none).
    with op.batch_alter_table("request_log") as batch:
        batch.add_column(sa.Column("surface", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("request_log") as batch:
        batch.drop_column("surface")
