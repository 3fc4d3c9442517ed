"""Users, API keys and console sessions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gatehouse.auth.roles import Role, UserStatus
from gatehouse.db.base import Base, UTCDateTime, utcnow


class User(Base):
    __tablename__ = "user_account"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Stored lower-cased, so the unique index makes emails unique case-insensitively.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(20), default=Role.USER.value)
    status: Mapped[str] = mapped_column(String(20), default=UserStatus.ACTIVE.value)
    password_hash: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Daily quotas; None means unlimited. New users get DEFAULT_MESSAGES_PER_DAY / DEFAULT_TOKENS_PER_DAY.
    messages_per_day: Mapped[int | None] = mapped_column(Integer)
    tokens_per_day: Mapped[int | None] = mapped_column(BigInteger)
    # Monthly quotas and spend limits (spend in billionths of PRICE_CURRENCY); None means unlimited.
    messages_per_month: Mapped[int | None] = mapped_column(Integer)
    tokens_per_month: Mapped[int | None] = mapped_column(BigInteger)
    spend_per_day_nanos: Mapped[int | None] = mapped_column(BigInteger)
    spend_per_month_nanos: Mapped[int | None] = mapped_column(BigInteger)
    # Moderation: blocked while blocked_at is set and blocked_until is empty or still ahead.
    blocked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    block_reason: Mapped[str | None] = mapped_column(String(1000))  # internal note: never shown to the user
    blocked_by: Mapped[int | None] = mapped_column(Integer)

    keys: Mapped[list[ApiKey]] = relationship(back_populates="user", lazy="raise")

    @property
    def role_enum(self) -> Role:
        return Role(self.role)


class ApiKey(Base):
    __tablename__ = "api_key"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    # SHA-256 of the whole key: keys are 256-bit random, so a fast hash is safe and keeps auth cheap.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A project or service key: its requests count against this group (and follow its access rules) rather than
    # every group of its owner. RESTRICT: a group with keys bound to it cannot be deleted from under them.
    group_id: Mapped[int | None] = mapped_column(ForeignKey("user_group.id", ondelete="RESTRICT"), index=True)
    # A front-end's key: its requests name the person they are made for, who is then the caller.
    acts_for_users: Mapped[bool] = mapped_column(Boolean, default=False)
    # The key's own restrictions (None: none): model patterns, client surfaces, client networks (CIDR), and
    # requests per minute. They narrow what the user may do; they never widen it.
    allowed_models: Mapped[list[str] | None] = mapped_column(JSON)
    allowed_surfaces: Mapped[list[str] | None] = mapped_column(JSON)
    allowed_networks: Mapped[list[str] | None] = mapped_column(JSON)
    rate_per_minute: Mapped[int | None] = mapped_column(Integer)
    # Quotas and spend limits of its own (spend in billionths of PRICE_CURRENCY); None means unlimited.
    messages_per_day: Mapped[int | None] = mapped_column(Integer)
    tokens_per_day: Mapped[int | None] = mapped_column(BigInteger)
    spend_per_day_nanos: Mapped[int | None] = mapped_column(BigInteger)
    messages_per_month: Mapped[int | None] = mapped_column(Integer)
    tokens_per_month: Mapped[int | None] = mapped_column(BigInteger)
    spend_per_month_nanos: Mapped[int | None] = mapped_column(BigInteger)

    user: Mapped[User] = relationship(back_populates="keys", lazy="raise")


class Group(Base):
    """A team, a project or a cohort: members, access rules, and (through keys bound to it) project keys."""

    __tablename__ = "user_group"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # Quotas and spend limits of the whole group, across its members and its keys (spend in billionths of
    # PRICE_CURRENCY); None means unlimited.
    messages_per_day: Mapped[int | None] = mapped_column(Integer)
    tokens_per_day: Mapped[int | None] = mapped_column(BigInteger)
    spend_per_day_nanos: Mapped[int | None] = mapped_column(BigInteger)
    messages_per_month: Mapped[int | None] = mapped_column(Integer)
    tokens_per_month: Mapped[int | None] = mapped_column(BigInteger)
    spend_per_month_nanos: Mapped[int | None] = mapped_column(BigInteger)


class GroupMember(Base):
    """A user's membership of a group (a user may belong to several)."""

    __tablename__ = "group_member"

    group_id: Mapped[int] = mapped_column(ForeignKey("user_group.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("user_account.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class UserSession(Base):
    __tablename__ = "user_session"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(300))


Index("ix_user_account_role_status", User.role, User.status)
