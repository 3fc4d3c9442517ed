"""Rate-limit overrides: persisted, audited, and in force on every replica at once (this one before the change
returns, the others through the bus)."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse.audit.service import record
from gatehouse.auth.actor import Actor
from gatehouse.core.bus import EventBus, Signal
from gatehouse.db.base import utcnow
from gatehouse.db.session import signal_after_commit, transaction
from gatehouse.errors import BadRequest
from gatehouse.limits.errors import UnknownRateLimit
from gatehouse.limits.events import RateLimitChangedEvent
from gatehouse.limits.models import RateLimitOverride
from gatehouse.limits.ratelimit import RULES, RateLimiter, RuleState

Changes = dict[str, tuple[int | None, int | None]]  # rule -> (before, after); None: no limit, or the default


async def set_overrides(
    session: AsyncSession, *, bus: EventBus, limits: dict[str, int | None], reset: list[str], actor: Actor
) -> Changes:
    """Apply new limits and resets in the caller's transaction, audited; every replica reloads them once it is
    committed. Returns what changed."""
    unknown = sorted(name for name in set(limits) | set(reset) if name not in RULES)
    if unknown:
        raise UnknownRateLimit(
            f"Unknown rate limit(s): {', '.join(unknown)}. Known: {', '.join(RULES)}.", param="limits"
        )
    for name, value in limits.items():
        if value is not None and value < 0:
            raise BadRequest(f"Limit `{name}` must be >= 0 (or null for none).", param=f"limits.{name}")
    current = {row.name: row for row in (await session.execute(select(RateLimitOverride))).scalars()}
    changes: Changes = {}
    for name in reset:
        if name in current:
            changes[name] = (current[name].limit, None)
            await session.execute(delete(RateLimitOverride).where(RateLimitOverride.name == name))
    for name, value in limits.items():
        row = current.get(name)
        if row is None:
            session.add(RateLimitOverride(name=name, limit=value, updated_by=actor.user_id))
            changes[name] = (None, value)
        elif row.limit != value:
            changes[name] = (row.limit, value)
            row.limit, row.updated_by, row.updated_at = value, actor.user_id, utcnow()
    await session.flush()
    if changes:
        details = {name: {"before": before, "after": after} for name, (before, after) in changes.items()}
        await record(session, RateLimitChangedEvent(changes=details, reset=sorted(reset)), actor=actor)
    signal_after_commit(session, bus, Signal.LIMITS_CHANGED, {"names": sorted(changes)})
    return changes


async def change_limits(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    bus: EventBus,
    limiter: RateLimiter,
    limits: dict[str, int | None],
    reset: list[str],
    actor: Actor,
) -> list[RuleState]:
    """`set_overrides` as a transaction of its own, in force on this replica when it returns: every rule now."""
    async with transaction(sessionmaker) as session:
        await set_overrides(session, bus=bus, limits=limits, reset=reset, actor=actor)
    await limiter.reload()
    return limiter.rules()
