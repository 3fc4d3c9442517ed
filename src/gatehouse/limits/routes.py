"""Routes: /admin/rate-limits (read and change at runtime), /admin/usage, /me/usage and /me/usage/history."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from gatehouse.auth.access import require
from gatehouse.auth.roles import Role
from gatehouse.core.components import provided
from gatehouse.deps import ActorDep, BusDep, DatabaseDep, PrincipalDep, SessionDep, SettingsDep
from gatehouse.errors import BadRequest, errors
from gatehouse.fields import MAX_DB_INT, IsoDate
from gatehouse.limits import quotas, service, usage
from gatehouse.limits.errors import UnknownRateLimit
from gatehouse.limits.prices.money import decimal_of_nanos
from gatehouse.limits.ratelimit import RateLimiter, RuleState
from gatehouse.limits.schemas import MyUsage, MyUsageHistory, RateLimitRead, RateLimitUpdate, UsageDay, UsageRead

router = APIRouter()
LimiterDep = Annotated[RateLimiter, provided(RateLimiter)]
SpendDep = Annotated[usage.SpendReader, provided(usage.SpendReader)]


def _rules(rules: list[RuleState]) -> list[RateLimitRead]:
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
        for r in rules
    ]


@router.get(
    "/admin/rate-limits", response_model=list[RateLimitRead], tags=["limits"], dependencies=[require(Role.ADMIN)]
)
async def get_rate_limits(limiter: LimiterDep) -> list[RateLimitRead]:
    """Every rate limit with the value in force."""
    return _rules(limiter.rules())


@router.put(
    "/admin/rate-limits",
    response_model=list[RateLimitRead],
    tags=["limits"],
    dependencies=[require(Role.ADMIN)],
    responses=errors(UnknownRateLimit),
)
async def put_rate_limits(
    body: RateLimitUpdate, actor: ActorDep, database: DatabaseDep, bus: BusDep, limiter: LimiterDep
) -> list[RateLimitRead]:
    """Change limits at runtime: persisted, and in force on every replica within a second."""
    rules = await service.change_limits(
        database.sessionmaker, bus=bus, limiter=limiter, limits=body.limits, reset=body.reset, actor=actor
    )
    return _rules(rules)


def _row(row: usage.UsageRow, currency: str) -> UsageRead:
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
        spend=decimal_of_nanos(row.spend_nanos),
        spend_nanos=row.spend_nanos,
        currency=currency,
        unpriced_requests=row.unpriced_requests,
    )


@router.get(
    "/admin/usage",
    responses=errors(BadRequest),
    response_model=list[UsageRead],
    tags=["limits"],
    dependencies=[require(Role.MONITOR)],
)
async def get_usage(
    session: SessionDep,
    settings: SettingsDep,
    spend: SpendDep,
    start: Annotated[IsoDate | None, Query(alias="from", description="First day (YYYY-MM-DD); default: today.")] = None,
    end: Annotated[IsoDate | None, Query(alias="to", description="Last day, inclusive; default: `from`.")] = None,
    user_id: Annotated[int | None, Query(ge=1, le=MAX_DB_INT, description="Only this user.")] = None,
) -> list[UsageRead]:
    """Usage per user per day, with each user's quotas and the percentage used, and what it cost."""
    start = start or quotas.quota_day(settings.quota_timezone)
    rows = await usage.usage_between(session, start=start, end=end or start, user_id=user_id)
    rows = await usage.with_spend(session, rows, spend=spend.read, timezone=settings.quota_timezone, user_id=user_id)
    return [_row(r, settings.price_currency) for r in rows]


@router.get("/me/usage", response_model=MyUsage, tags=["me"], dependencies=[require(Role.USER)])
async def my_usage(principal: PrincipalDep, session: SessionDep, settings: SettingsDep, spend: SpendDep) -> MyUsage:
    """The caller's usage today, their quotas, what today's requests cost, and when the day resets."""
    timezone = settings.quota_timezone
    today = quotas.quota_day(timezone)
    row = await usage.usage_for(session, user_id=principal.user_id, day=today)
    (row,) = await usage.with_spend(session, [row], spend=spend.read, timezone=timezone, user_id=principal.user_id)
    return MyUsage(**_row(row, settings.price_currency).model_dump(), resets_at=quotas.resets_at(timezone, today))


@router.get("/me/usage/history", response_model=MyUsageHistory, tags=["me"], dependencies=[require(Role.USER)])
async def my_usage_history(
    principal: PrincipalDep,
    session: SessionDep,
    settings: SettingsDep,
    spend: SpendDep,
    days: Annotated[int, Query(ge=1, le=usage.MAX_RANGE_DAYS, description="How many days, ending today.")] = 30,
) -> MyUsageHistory:
    """The caller's usage per day over the last `days` days (today included): messages, tokens and spend."""
    end = quotas.quota_day(settings.quota_timezone)
    start = end - timedelta(days=days - 1)
    rows = await usage.history(
        session, user_id=principal.user_id, start=start, end=end, spend=spend.read, timezone=settings.quota_timezone
    )
    return MyUsageHistory(
        start=start,
        end=end,
        currency=settings.price_currency,
        days=[
            UsageDay(
                day=r.day,
                messages=r.messages,
                tokens=r.tokens,
                spend=decimal_of_nanos(r.spend_nanos),
                spend_nanos=r.spend_nanos,
                unpriced_requests=r.unpriced_requests,
            )
            for r in rows
        ],
    )
