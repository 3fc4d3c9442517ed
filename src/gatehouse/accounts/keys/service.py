"""API keys: create (the key shown once, only its hash stored), list, revoke, rotate; every change audited, and
every replica told at once. Services flush; the caller commits."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.accounts.errors import InvalidExpiry, KeyNotFound
from gatehouse.accounts.events import KeyCreatedEvent, KeyRevokedEvent
from gatehouse.accounts.users import service as users
from gatehouse.audit.service import record
from gatehouse.auth.actor import Actor
from gatehouse.auth.models import ApiKey
from gatehouse.auth.roles import Role
from gatehouse.auth.tokens import hash_token, key_prefix, new_api_key
from gatehouse.core.bus import EventBus, Signal
from gatehouse.db.base import utcnow
from gatehouse.db.session import signal_after_commit

# Far enough for any real key; nearer than the year 9999, where converting to UTC overflows.
MAX_KEY_LIFETIME = timedelta(days=100 * 365)
KeyState = Literal["active", "revoked", "expired"]


async def create(
    session: AsyncSession,
    *,
    actor: Actor,
    user_id: int,
    name: str,
    expires_at: datetime | None = None,
    raw_key: str | None = None,
) -> tuple[ApiKey, str]:
    """A new key for a user, audited: returns the row and the key itself, which is shown once and never stored."""
    if expires_at is not None:
        now = utcnow()
        if expires_at <= now:
            raise InvalidExpiry("expires_at must be in the future.", param="expires_at")
        if expires_at > now + MAX_KEY_LIFETIME:
            raise InvalidExpiry(
                "expires_at must be within 100 years; omit it for a key that never expires.", param="expires_at"
            )
    raw = raw_key or new_api_key()
    key = ApiKey(user_id=user_id, name=name, prefix=key_prefix(raw), key_hash=hash_token(raw), expires_at=expires_at)
    session.add(key)
    await session.flush()
    event = KeyCreatedEvent(key_id=key.id, prefix=key.prefix, name=name, user_id=user_id, expires_at=expires_at)
    await record(session, event, actor=actor)
    return key, raw


async def create_for_user(
    session: AsyncSession,
    *,
    actor: Actor,
    actor_role: Role,
    user_id: int,
    name: str,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """An admin creates a key for another user (e.g. a service account); 404 when no such user."""
    user = await users.get_or_raise(session, user_id=user_id)
    users.ensure_may_manage(actor_role=actor_role, target_role=user.role, doing="create keys for")
    return await create(session, actor=actor, user_id=user.id, name=name, expires_at=expires_at)


async def list_for_user(session: AsyncSession, *, user_id: int, include_revoked: bool = True) -> list[ApiKey]:
    """A user's keys, newest first."""
    query = select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.id.desc())
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return list((await session.execute(query)).scalars())


async def list_keys(
    session: AsyncSession,
    *,
    user_id: int | None = None,
    state: KeyState | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[ApiKey]:
    """Keys of every user (or one), newest first, at most `limit`, optionally only those older than `before_id`."""
    query = select(ApiKey).order_by(ApiKey.id.desc()).limit(limit)
    if user_id is not None:
        query = query.where(ApiKey.user_id == user_id)
    now = utcnow()
    if state == "active":
        query = query.where(ApiKey.revoked_at.is_(None), (ApiKey.expires_at.is_(None)) | (ApiKey.expires_at > now))
    elif state == "revoked":
        query = query.where(ApiKey.revoked_at.is_not(None))
    elif state == "expired":
        query = query.where(ApiKey.revoked_at.is_(None), ApiKey.expires_at <= now)
    if before_id is not None:
        query = query.where(ApiKey.id < before_id)
    return list((await session.execute(query)).scalars())


def state_of(key: ApiKey, now: datetime) -> KeyState:
    """A key's state at `now`."""
    if key.revoked_at is not None:
        return "revoked"
    return "expired" if key.expires_at is not None and key.expires_at <= now else "active"


async def get_or_raise(session: AsyncSession, *, key_id: int, user_id: int | None = None) -> ApiKey:
    """A key by id (optionally only if it belongs to `user_id`), or 404."""
    key = await session.get(ApiKey, key_id)
    if key is None or (user_id is not None and key.user_id != user_id):
        raise KeyNotFound(f"No API key with id {key_id}.")
    return key


async def get_by_raw(session: AsyncSession, *, raw_key: str) -> ApiKey | None:
    """The key row for a raw key, if it exists."""
    return (await session.execute(select(ApiKey).where(ApiKey.key_hash == hash_token(raw_key)))).scalar_one_or_none()


async def revoke(session: AsyncSession, *, bus: EventBus, actor: Actor, key: ApiKey) -> ApiKey:
    """Revoke a key (audited); every replica refuses it from the next request on."""
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        await session.flush()
        event = KeyRevokedEvent(key_id=key.id, prefix=key.prefix, name=key.name, user_id=key.user_id)
        await record(session, event, actor=actor)
    signal_after_commit(session, bus, Signal.KEY_CHANGED, {"key_id": key.id})
    return key


async def revoke_own(session: AsyncSession, *, bus: EventBus, actor: Actor, user_id: int, key_id: int) -> ApiKey:
    """A user revokes one of their own keys (404 for anyone else's)."""
    key = await get_or_raise(session, key_id=key_id, user_id=user_id)
    return await revoke(session, bus=bus, actor=actor, key=key)


async def revoke_as_admin(
    session: AsyncSession, *, bus: EventBus, actor: Actor, actor_role: Role, key_id: int
) -> ApiKey:
    """An admin revokes any user's key; only a superadmin may revoke a superadmin's."""
    key = await get_or_raise(session, key_id=key_id)
    owner = await users.get_or_raise(session, user_id=key.user_id)
    users.ensure_may_manage(actor_role=actor_role, target_role=owner.role, doing="revoke keys of")
    return await revoke(session, bus=bus, actor=actor, key=key)


async def rotate(
    session: AsyncSession, *, bus: EventBus, actor: Actor, user_id: int, name: str
) -> tuple[ApiKey, str, list[ApiKey]]:
    """Replace a user's active keys named `name` with one new key: (new key row, the key itself, revoked rows)."""
    old = [k for k in await list_for_user(session, user_id=user_id, include_revoked=False) if k.name == name]
    key, raw = await create(session, actor=actor, user_id=user_id, name=name)
    for previous in old:
        await revoke(session, bus=bus, actor=actor, key=previous)
    return key, raw, old


# One key's last-used time (parameters p_key_id, p_when); also run directly by SQLite's statement store.
KEY_USED = update(ApiKey).where(ApiKey.id == bindparam("p_key_id")).values(last_used_at=bindparam("p_when"))


async def record_use(session: AsyncSession, *, last_used: dict[int, datetime]) -> None:
    """Write batched last-used times (one UPDATE per key, never per request)."""
    for key_id, when in last_used.items():
        await session.execute(KEY_USED, {"p_key_id": key_id, "p_when": when})
