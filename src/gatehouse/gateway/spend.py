"""What users' requests cost, summed from the request log in the database (the usage views' spend)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.gateway.models import RequestLog
from gatehouse.limits.usage import Spend

# A request that used tokens of a model nothing priced: it cost 0, and the views flag it.
UNPRICED = and_(RequestLog.cost_nanos.is_(None), RequestLog.prompt_tokens + RequestLog.completion_tokens > 0)


async def spend_by_user(session: AsyncSession, start: datetime, end: datetime, user_id: int | None) -> dict[int, Spend]:
    """Per user (or only `user_id`), the cost of the requests logged in [start, end) and how many were unpriced."""
    query = (
        select(
            RequestLog.user_id,
            func.coalesce(func.sum(RequestLog.cost_nanos), 0),
            func.coalesce(func.sum(case((UNPRICED, 1), else_=0)), 0),
        )
        .where(RequestLog.created_at >= start, RequestLog.created_at < end, RequestLog.user_id.is_not(None))
        .group_by(RequestLog.user_id)
    )
    if user_id is not None:
        query = query.where(RequestLog.user_id == user_id)
    rows = (await session.execute(query)).all()
    # PostgreSQL sums a BIGINT into a NUMERIC: back to exact integers.
    return {int(user): Spend(nanos=int(nanos), unpriced_requests=int(unpriced)) for user, nanos, unpriced in rows}
