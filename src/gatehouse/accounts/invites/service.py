"""Invites: create, list, revoke, and redeem one atomically at sign-up. Services flush; the caller commits."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.accounts import managing
from gatehouse.accounts.errors import (
    InvalidExpiry,
    InviteEmailMismatch,
    InviteExpired,
    InviteInvalid,
    InviteNotFound,
    InviteRequired,
    InviteRevoked,
    InviteUsedUp,
    SignupClosed,
)
from gatehouse.accounts.events import InviteCreatedEvent, InviteRedeemedEvent, InviteRevokedEvent, UserSignedUpEvent
from gatehouse.accounts.invites.models import Invite
from gatehouse.accounts.users import service as users
from gatehouse.audit.service import record
from gatehouse.auth.actor import Actor
from gatehouse.auth.models import User
from gatehouse.auth.roles import Role
from gatehouse.auth.tokens import hash_token
from gatehouse.db.base import utcnow
from gatehouse.errors import BadRequest
from gatehouse.settings import Settings, SignupMode

INVITE_PREFIX = "ghi_"
DEFAULT_EXPIRY_HOURS = 7 * 24
MAX_EXPIRY_HOURS = 365 * 24
MAX_TOKEN_LENGTH = 256
MAX_PAGE = 200


class InviteStatus(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    USED_UP = "used_up"
    REVOKED = "revoked"


def status_of(invite: Invite, now: datetime) -> InviteStatus:
    """An invite's status at `now` (revoked, then used up, then expired, wins)."""
    if invite.revoked_at is not None:
        return InviteStatus.REVOKED
    if invite.uses >= invite.max_uses:
        return InviteStatus.USED_UP
    if invite.expires_at is not None and invite.expires_at <= now:
        return InviteStatus.EXPIRED
    return InviteStatus.ACTIVE


def _status_clause(status: InviteStatus, now: datetime) -> ColumnElement[bool]:
    """The SQL twin of `status_of`, for filtering lists."""
    live = and_(Invite.revoked_at.is_(None), Invite.uses < Invite.max_uses)
    if status is InviteStatus.REVOKED:
        return Invite.revoked_at.is_not(None)
    if status is InviteStatus.USED_UP:
        return and_(Invite.revoked_at.is_(None), Invite.uses >= Invite.max_uses)
    if status is InviteStatus.EXPIRED:
        return and_(live, Invite.expires_at.is_not(None), Invite.expires_at <= now)
    return and_(live, or_(Invite.expires_at.is_(None), Invite.expires_at > now))


def new_invite_token() -> str:
    """A fresh invite token: 256 random bits, recognisable by its prefix."""
    return INVITE_PREFIX + secrets.token_urlsafe(32)


def resolve_expiry(*, now: datetime, expires_in_hours: int | None, expires_at: datetime | None) -> datetime:
    """When a new invite expires: `expires_at`, or `expires_in_hours` (default a week) from now."""
    if expires_at is None:
        return now + timedelta(hours=expires_in_hours or DEFAULT_EXPIRY_HOURS)
    if expires_at <= now:
        raise InvalidExpiry("expires_at must be in the future.", param="expires_at")
    if expires_at > now + timedelta(hours=MAX_EXPIRY_HOURS):
        raise InvalidExpiry("expires_at must be within a year.", param="expires_at")
    return expires_at


async def create(
    session: AsyncSession,
    *,
    actor: Actor,
    actor_role: Role,
    email: str | None,
    role: Role,
    max_uses: int,
    expires_in_hours: int | None = None,
    expires_at: datetime | None = None,
) -> tuple[Invite, str]:
    """A new invite: returns the row and the token, which is shown once and stored only as a hash."""
    users.ensure_may_manage(actor_role=actor_role, target_role=role, doing="invite")
    now = utcnow()
    token = new_invite_token()
    invite = Invite(
        token_hash=hash_token(token),
        email=users.normalise_email(email) if email else None,
        role=role.value,
        created_by=actor.user_id,
        created_at=now,
        expires_at=resolve_expiry(now=now, expires_in_hours=expires_in_hours, expires_at=expires_at),
        max_uses=max_uses,
        uses=0,
    )
    session.add(invite)
    await session.flush()
    event = InviteCreatedEvent(
        invite_id=invite.id, email=invite.email, role=invite.role, max_uses=max_uses, expires_at=invite.expires_at
    )
    await record(session, event, actor=actor)
    return invite, token


async def list_invites(
    session: AsyncSession, *, status: InviteStatus | None = None, before_id: int | None = None, limit: int = 50
) -> tuple[list[Invite], int | None]:
    """Invites newest first, at most `limit`, and the cursor (`before_id`) of the next page, if any."""
    limit = max(1, min(limit, MAX_PAGE))
    query = select(Invite).order_by(Invite.id.desc()).limit(limit + 1)
    if status is not None:
        query = query.where(_status_clause(status, utcnow()))
    if before_id is not None:
        query = query.where(Invite.id < before_id)
    rows = list((await session.execute(query)).scalars())
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].id
    return rows, None


async def get_or_raise(session: AsyncSession, *, invite_id: int) -> Invite:
    """An invite by id, or 404."""
    invite = await session.get(Invite, invite_id)
    if invite is None:
        raise InviteNotFound(f"No invite with id {invite_id}.")
    return invite


async def revoke(session: AsyncSession, *, actor: Actor, invite_id: int) -> Invite:
    """Revoke an invite so nobody can redeem it any more; revoking twice changes nothing. An invite to become a
    superadmin is a superadmin's to revoke, as it was to create."""
    invite = await get_or_raise(session, invite_id=invite_id)
    await managing.ensure_actor_may_manage(session, actor=actor, target_role=invite.role, doing="revoke an invite for")
    if invite.revoked_at is None:
        invite.revoked_at = utcnow()
        await session.flush()
        event = InviteRevokedEvent(
            invite_id=invite.id, email=invite.email, role=invite.role, uses=invite.uses, max_uses=invite.max_uses
        )
        await record(session, event, actor=actor)
    return invite


@dataclass(frozen=True, slots=True)
class Redemption:
    """One use of an invite, counted."""

    invite_id: int
    role: Role
    uses: int
    max_uses: int


async def redeem(session: AsyncSession, *, token: str, email: str) -> Redemption:
    """Count one use of an invite for `email`, or raise a 400 saying why it cannot be used."""
    now = utcnow()
    token_hash = hash_token(token)
    email = users.normalise_email(email)
    # One conditional UPDATE: two replicas redeeming the last use at once cannot both succeed (PostgreSQL
    # re-checks the WHERE after the row lock; SQLite has one writer). It rolls back with the sign-up.
    counted = (
        await session.execute(
            update(Invite)
            .where(
                Invite.token_hash == token_hash,
                Invite.revoked_at.is_(None),
                Invite.uses < Invite.max_uses,
                or_(Invite.expires_at.is_(None), Invite.expires_at > now),
                or_(Invite.email.is_(None), Invite.email == email),
            )
            .values(uses=Invite.uses + 1, last_used_at=now)
            .returning(Invite.id, Invite.role, Invite.uses, Invite.max_uses),
            execution_options={"synchronize_session": False},
        )
    ).first()
    if counted is None:
        raise await _refusal(session, token_hash=token_hash, email=email, now=now)
    invite_id, role, uses, max_uses = counted
    return Redemption(invite_id=invite_id, role=Role(role), uses=uses, max_uses=max_uses)


async def _refusal(session: AsyncSession, *, token_hash: str, email: str, now: datetime) -> BadRequest:
    """Why an invite could not be redeemed, as the error to answer."""
    invite = (await session.execute(select(Invite).where(Invite.token_hash == token_hash))).scalar_one_or_none()
    ask = "ask an administrator for a new invite."
    if invite is None:
        return InviteInvalid(f"This invite is not valid: check the link, or {ask}", param="invite")
    status = status_of(invite, now)
    if status is InviteStatus.REVOKED:
        return InviteRevoked(f"This invite was revoked: {ask}", param="invite")
    if status is InviteStatus.USED_UP:
        return InviteUsedUp(f"This invite has been used up: {ask}", param="invite")
    if status is InviteStatus.EXPIRED:
        return InviteExpired(f"This invite has expired: {ask}", param="invite")
    if invite.email is not None and invite.email != email:
        return InviteEmailMismatch(
            "This invite is for another email address: sign up with the address it was sent to.", param="email"
        )
    return InviteInvalid(f"This invite cannot be used now: {ask}", param="invite")


async def sign_up(
    session: AsyncSession,
    *,
    settings: Settings,
    actor: Actor,
    invite_token: str | None,
    email: str,
    password: str,
    display_name: str = "",
) -> User:
    """Create an account as SIGNUP_MODE allows, redeeming the invite when one is given (`actor`: the caller)."""
    mode = settings.signup_mode
    if mode is SignupMode.CLOSED:
        raise SignupClosed("Sign-up is closed: ask an administrator to create your account.")
    if invite_token is None and mode is SignupMode.INVITE:
        raise InviteRequired(
            "Sign-up needs an invite: ask an administrator for one and send it as `invite`.", param="invite"
        )
    redemption = await redeem(session, token=invite_token, email=email) if invite_token else None
    # A taken email or a weak password raises here, and the request's rollback gives the invite use back.
    user = await users.new_user(
        session,
        email=email,
        role=redemption.role if redemption else Role.USER,
        password=password,
        display_name=display_name,
        messages_per_day=settings.default_messages_per_day,
        tokens_per_day=settings.default_tokens_per_day,
    )
    newcomer = replace(actor, type="user", user_id=user.id, key_id=None, label=user.email)
    invite_id = redemption.invite_id if redemption else None
    signed_up = UserSignedUpEvent(
        user_id=user.id, email=user.email, role=user.role, mode=mode.value, invite_id=invite_id
    )
    await record(session, signed_up, actor=newcomer)
    if redemption is not None:
        redeemed = InviteRedeemedEvent(
            invite_id=redemption.invite_id,
            user_id=user.id,
            email=user.email,
            uses=redemption.uses,
            max_uses=redemption.max_uses,
        )
        await record(session, redeemed, actor=newcomer)
    return user
