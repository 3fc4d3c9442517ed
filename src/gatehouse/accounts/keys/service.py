"""API keys: create (the key shown once, only its hash stored), list, change their settings, revoke, rotate; every
change audited, and every replica told at once. Services flush; the caller commits.

A key's settings (schemas.SETTINGS) are its group, whether it acts for users, and its own restrictions. A key may be
bound only to a group its owner belongs to; only an administrator marks a key acts_for_users; a user may set the
restrictions of their own keys, and afterwards only narrow them (narrowing.py)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.accounts.errors import InvalidExpiry, KeyNotFound, KeySettingNotAllowed
from gatehouse.accounts.events import KeyCreatedEvent, KeyRevokedEvent, KeySettingsChangedEvent
from gatehouse.accounts.groups import service as groups
from gatehouse.accounts.keys.narrowing import ensure_narrows
from gatehouse.accounts.keys.schemas import SETTINGS
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
    settings: Mapping[str, Any] | None = None,
) -> tuple[ApiKey, str]:
    """A new key for a user, audited: returns the row and the key itself, which is shown once and never stored.
    `settings` (group, acts_for_users, restrictions) are taken as given: the caller checked who may set them; a
    group must be one of the user's (404 when it does not exist, 409 `not_group_member`)."""
    if expires_at is not None:
        now = utcnow()
        if expires_at <= now:
            raise InvalidExpiry("expires_at must be in the future.", param="expires_at")
        if expires_at > now + MAX_KEY_LIFETIME:
            raise InvalidExpiry(
                "expires_at must be within 100 years; omit it for a key that never expires.", param="expires_at"
            )
    given = {name: value for name, value in (settings or {}).items() if value not in (None, False)}
    if given.get("group_id") is not None:
        await groups.ensure_member(session, group_id=given["group_id"], user_id=user_id)
    raw = raw_key or new_api_key()
    key = ApiKey(
        user_id=user_id,
        name=name,
        prefix=key_prefix(raw),
        key_hash=hash_token(raw),
        expires_at=expires_at,
        **{"acts_for_users": False, **given},
    )
    session.add(key)
    await session.flush()
    event = KeyCreatedEvent(
        key_id=key.id, prefix=key.prefix, name=name, user_id=user_id, expires_at=expires_at, settings=given or None
    )
    await record(session, event, actor=actor)
    return key, raw


def ensure_may_set(*, role: Role | None, settings: Mapping[str, Any]) -> None:
    """403 `key_setting_not_allowed` when `role` (None: the operator) may not set these settings: acts_for_users
    is an administrator's."""
    if settings.get("acts_for_users") and role is not None and not role.at_least(Role.ADMIN):
        raise KeySettingNotAllowed(
            "Only an administrator marks a key acts_for_users: ask one to create it for you "
            "(POST /admin/users/{id}/keys).",
            param="acts_for_users",
        )


async def create_own(
    session: AsyncSession,
    *,
    actor: Actor,
    role: Role,
    user_id: int,
    name: str,
    expires_at: datetime | None = None,
    settings: Mapping[str, Any] | None = None,
) -> tuple[ApiKey, str]:
    """A user creates a key for themselves, restricted as they choose (bound only to one of their groups;
    acts_for_users only if they are an administrator)."""
    ensure_may_set(role=role, settings=settings or {})
    return await create(session, actor=actor, user_id=user_id, name=name, expires_at=expires_at, settings=settings)


async def create_for_user(
    session: AsyncSession,
    *,
    actor: Actor,
    actor_role: Role,
    user_id: int,
    name: str,
    expires_at: datetime | None = None,
    settings: Mapping[str, Any] | None = None,
) -> tuple[ApiKey, str]:
    """An admin creates a key for another user (e.g. a service account or a front-end); 404 when no such user."""
    user = await users.get_or_raise(session, user_id=user_id)
    users.ensure_may_manage(actor_role=actor_role, target_role=user.role, doing="create keys for")
    ensure_may_set(role=actor_role, settings=settings or {})
    return await create(session, actor=actor, user_id=user.id, name=name, expires_at=expires_at, settings=settings)


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
    group_id: int | None = None,
    state: KeyState | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[ApiKey]:
    """Keys of every user (or one, or those bound to one group), newest first, at most `limit`, optionally only
    those older than `before_id`."""
    query = select(ApiKey).order_by(ApiKey.id.desc()).limit(limit)
    if user_id is not None:
        query = query.where(ApiKey.user_id == user_id)
    if group_id is not None:
        query = query.where(ApiKey.group_id == group_id)
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


def settings_of(key: ApiKey) -> dict[str, Any]:
    """A key's settings, by name."""
    return {name: getattr(key, name) for name in SETTINGS}


async def change_settings(
    session: AsyncSession, *, bus: EventBus, actor: Actor, key: ApiKey, changes: Mapping[str, Any]
) -> ApiKey:
    """Apply settings to a key as given (the caller checked who may); a group must be one of the owner's. Audited
    when something changed; every replica forgets the cached key once committed."""
    before = settings_of(key)
    changed = {name: value for name, value in changes.items() if before[name] != value}
    if changed.get("group_id") is not None:
        await groups.ensure_member(session, group_id=changed["group_id"], user_id=key.user_id)
    if not changed:
        return key
    for name, value in changed.items():
        setattr(key, name, value)
    await session.flush()
    fields = {name: {"before": before[name], "after": value} for name, value in changed.items()}
    event = KeySettingsChangedEvent(
        key_id=key.id, prefix=key.prefix, name=key.name, user_id=key.user_id, changes=fields
    )
    await record(session, event, actor=actor)
    signal_after_commit(session, bus, Signal.KEY_CHANGED, {"key_id": key.id})
    return key


async def change_settings_as_admin(
    session: AsyncSession,
    *,
    bus: EventBus,
    actor: Actor,
    actor_role: Role | None,
    key_id: int,
    changes: Mapping[str, Any],
) -> ApiKey:
    """An administrator (or the operator: `actor_role` None) changes any key's settings; only a superadmin
    changes a superadmin's."""
    key = await get_or_raise(session, key_id=key_id)
    owner = await users.get_or_raise(session, user_id=key.user_id)
    users.ensure_may_manage(actor_role=actor_role, target_role=owner.role, doing="change keys of")
    return await change_settings(session, bus=bus, actor=actor, key=key, changes=changes)


async def change_own_settings(
    session: AsyncSession,
    *,
    bus: EventBus,
    actor: Actor,
    role: Role,
    user_id: int,
    key_id: int,
    changes: Mapping[str, Any],
) -> ApiKey:
    """A user changes the settings of one of their keys (404 for anyone else's): only narrowing its restrictions,
    unless they are an administrator, who may set anything on their own keys."""
    key = await get_or_raise(session, key_id=key_id, user_id=user_id)
    if not role.at_least(Role.ADMIN):
        ensure_narrows(key.id, settings_of(key), dict(changes))
    return await change_settings(session, bus=bus, actor=actor, key=key, changes=changes)


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
