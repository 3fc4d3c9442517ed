"""Access rules: a group's or a user's allow or deny of models, aliases or whole upstreams, by `*` pattern."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from gatehouse.db.base import Base, UTCDateTime, utcnow


class AccessRule(Base):
    """One rule of one subject: exactly one of `user_id` and `group_id` is set (so deleting either deletes its
    rules). `target` says what `pattern` matches: the model name a client asks for (an alias is such a name too),
    or the name of the upstream that would serve it."""

    __tablename__ = "access_rule"
    __table_args__ = (CheckConstraint("(user_id IS NULL) <> (group_id IS NULL)", name="one_subject"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), index=True)
    group_id: Mapped[int | None] = mapped_column(ForeignKey("user_group.id", ondelete="CASCADE"), index=True)
    effect: Mapped[str] = mapped_column(String(8))  # allow | deny
    target: Mapped[str] = mapped_column(String(16))  # model | upstream
    pattern: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[int | None] = mapped_column(Integer)
