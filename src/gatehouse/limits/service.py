"""Rate-limit overrides: persisted, announced on the bus so every replica applies them at once."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.audit.service import record
from gatehouse.auth.actor import Actor
from gatehouse.core.bus import EventBus
from gatehouse.db.base import utcnow
from gatehouse.db.session import after_commit
from gatehouse.errors import BadRequest
from gatehouse.limits.models import RateLimitOverride
from gatehouse.limits.ratelimit import LIMITS_CHANGED, RULES


async def set_overrides(
    session: AsyncSession, *, bus: EventBus, limits: dict[str, int | None], reset: list[str], actor: Actor
) -> dict[str, tuple[int | None, int | None]]:
    """Apply new limits and resets; returns {name: (before, after)} of what changed (None: no limit/default)."""
    unknown = sorted(set(limits) | set(reset) - set(RULES))
    unknown = [name for name in unknown if name not in RULES]
    if unknown:
        raise BadRequest(
            f"Unknown rate limit(s): {', '.join(unknown)}. Known: {', '.join(RULES)}.",
            code="unknown_rate_limit",
            param="limits",
        )
    for name, value in limits.items():
        if value is not None and value < 0:
            raise BadRequest(f"Limit `{name}` must be >= 0 (or null for none).", param=f"limits.{name}")
    current = {row.name: row for row in (await session.execute(select(RateLimitOverride))).scalars()}
    changes: dict[str, tuple[int | None, int | None]] = {}
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
        await record(
            session,
            actor=actor,
            action="rate_limits.changed",
            target_type="rate_limit",
            details={"changes": details, "reset": sorted(reset)},
        )
    after_commit(session, lambda: bus.publish(LIMITS_CHANGED, {"names": sorted(changes)}))
    return changes
