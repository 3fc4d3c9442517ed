"""Routes: /admin/rate-limits (read and change at runtime), /admin/usage and /me/usage."""

from __future__ import annotations

from datetime import date, timedelta

from fastapi import APIRouter, Query

from gatehouse.auth.access import require
from gatehouse.auth.roles import Role
from gatehouse.deps import ActorDep, PrincipalDep, RuntimeDep, SessionDep
from gatehouse.errors import BadRequest
from gatehouse.fields import MAX_DB_INT
from gatehouse.limits import quotas, service
from gatehouse.limits.ratelimit import RateLimiter
from gatehouse.limits.schemas import MyUsage, RateLimitRead, RateLimitUpdate, UsageRead

router = APIRouter()
MAX_RANGE_DAYS = 366


def _rules(limiter: RateLimiter) -> list[RateLimitRead]:
    return [
        RateLimitRead(
            name=r.spec.name,
            limit=r.limit,
            per=r.spec.per,
            window=r.spec.window,
            window_seconds=r.spec.window_seconds,
            overridden=r.overridden,
            description=r.spec.description,
        )
        for r in limiter.rules()
    ]


@router.get(
    "/admin/rate-limits", response_model=list[RateLimitRead], tags=["limits"], dependencies=[require(Role.ADMIN)]
)
async def get_rate_limits(runtime: RuntimeDep) -> list[RateLimitRead]:
    """Every rate limit with the value in force."""
    return _rules(runtime.rate_limiter)


@router.put(
    "/admin/rate-limits", response_model=list[RateLimitRead], tags=["limits"], dependencies=[require(Role.ADMIN)]
)
async def put_rate_limits(
    body: RateLimitUpdate, actor: ActorDep, session: SessionDep, runtime: RuntimeDep
) -> list[RateLimitRead]:
    """Change limits at runtime: persisted, and in force on every replica within a second."""
    await service.set_overrides(session, bus=runtime.bus, limits=body.limits, reset=body.reset, actor=actor)
    await session.commit()  # so that the reload below (and the other replicas) see the new values
    await runtime.rate_limiter.reload()
    return _rules(runtime.rate_limiter)


def _row(row: quotas.UsageRow) -> UsageRead:
    return UsageRead(
        user_id=row.user_id,
        email=row.email,
        day=row.day,
        messages=row.messages,
        messages_per_day=row.messages_per_day,
        messages_percent=row.messages_percent,
        tokens=row.tokens,
        tokens_per_day=row.tokens_per_day,
        tokens_percent=row.tokens_percent,
        reserved_tokens=row.reserved_tokens,
    )


@router.get("/admin/usage", response_model=list[UsageRead], tags=["limits"], dependencies=[require(Role.MONITOR)])
async def get_usage(
    session: SessionDep,
    runtime: RuntimeDep,
    start: date | None = Query(None, alias="from", description="First day (YYYY-MM-DD); default: today."),
    end: date | None = Query(None, alias="to", description="Last day, inclusive; default: `from`."),
    user_id: int | None = Query(None, ge=1, le=MAX_DB_INT, description="Only this user."),
) -> list[UsageRead]:
    """Usage per user per day, with each user's quotas and the percentage used."""
    today = quotas.quota_day(runtime.settings.quota_timezone)
    start = start or today
    end = end or start
    if end < start:
        raise BadRequest("`to` must not be before `from`.", param="to")
    if (end - start) > timedelta(days=MAX_RANGE_DAYS):
        raise BadRequest(f"Ask for at most {MAX_RANGE_DAYS} days at a time.", param="to")
    return [_row(r) for r in await quotas.list_usage(session, start=start, end=end, user_id=user_id)]


@router.get("/me/usage", response_model=MyUsage, tags=["me"], dependencies=[require(Role.USER)])
async def my_usage(principal: PrincipalDep, session: SessionDep, runtime: RuntimeDep) -> MyUsage:
    """The caller's usage today, their quotas, and when the day resets."""
    timezone = runtime.settings.quota_timezone
    today = quotas.quota_day(timezone)
    row = await quotas.usage_for(session, user_id=principal.user_id, day=today)
    return MyUsage(**_row(row).model_dump(), resets_at=quotas.resets_at(timezone, today))
