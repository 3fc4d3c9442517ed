"""Route: GET /admin/usage/report, usage and spend by user, group, key, model, upstream and surface (JSON or CSV)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query
from starlette.responses import Response

from gatehouse.auth.access import require
from gatehouse.auth.roles import Role
from gatehouse.db.base import utcnow
from gatehouse.deps import DatabaseDep, SettingsDep
from gatehouse.errors import errors
from gatehouse.fields import MAX_DB_INT, Text
from gatehouse.reports import render, service
from gatehouse.reports.errors import InvalidRange, UnknownDimension
from gatehouse.reports.query import (
    DEFAULT_LIMIT,
    DIMENSIONS,
    MAX_LIMIT,
    Filters,
    ReportQuery,
    parse_group_by,
    parse_range,
)
from gatehouse.reports.schemas import UsageReport

router = APIRouter()


@router.get(
    "/admin/usage/report",
    response_model=UsageReport,
    tags=["limits"],
    dependencies=[require(Role.MONITOR)],
    responses=errors(UnknownDimension, InvalidRange)
    | {200: {"content": {"text/csv": {}}, "description": "JSON, or CSV with format=csv or Accept: text/csv"}},
)
async def usage_report(
    database: DatabaseDep,
    settings: SettingsDep,
    group_by: Annotated[
        list[str] | None,
        Query(description=f"One or more of {', '.join(DIMENSIONS)}, comma-separated or repeated; default: user."),
    ] = None,
    start: Annotated[
        str | None,
        Query(
            alias="from",
            max_length=64,
            description="A date (its start, in QUOTA_TIMEZONE) or an ISO datetime; default: the first of this month "
            "(with `to`: the first of `to`'s month).",
        ),
    ] = None,
    end: Annotated[
        str | None,
        Query(
            alias="to",
            max_length=64,
            description="A date (included) or an ISO datetime (excluded); default: the end of this month (with "
            "`from`: now). At most 366 days after `from`.",
        ),
    ] = None,
    user_id: Annotated[int | None, Query(ge=1, le=MAX_DB_INT, description="Only this user's requests.")] = None,
    group_id: Annotated[
        int | None, Query(ge=1, le=MAX_DB_INT, description="Only the requests that belong to this group.")
    ] = None,
    key_id: Annotated[int | None, Query(ge=1, le=MAX_DB_INT, description="Only this key's requests.")] = None,
    model: Annotated[Text | None, Query(max_length=200, description="Only this model's requests.")] = None,
    upstream: Annotated[Text | None, Query(max_length=100, description="Only this upstream's requests.")] = None,
    surface: Annotated[Text | None, Query(max_length=16, description="Only this client surface's requests.")] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="At most this many rows; the rest are summed in `other`.")
    ] = DEFAULT_LIMIT,
    format: Annotated[
        Literal["json", "csv"] | None, Query(description="json or csv; default: by the Accept header, else json.")
    ] = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response | UsageReport:
    """Requests, errors, tokens, cost and unpriced requests per user, group, key, model, upstream or surface (or a
    combination), over a range of up to 366 days, with totals; sorted by cost then requests. A request belongs to
    its key's group, else to every group its user is a member of now."""
    timezone = settings.quota_timezone
    since, until = parse_range(start, end, timezone=timezone, now=utcnow())
    query = ReportQuery(
        group_by=parse_group_by(group_by or ["user"]),
        start=since,
        end=until,
        filters=Filters(
            user_id=user_id, group_id=group_id, key_id=key_id, model=model, upstream=upstream, surface=surface
        ),
        limit=limit,
    )
    # A read-only transaction: on SQLite it does not hold the write lock while the report is computed.
    async with database.read_sessionmaker() as session, session.begin():
        report = await service.report(session, query=query)
    if format == "csv" or (format is None and "text/csv" in (accept or "")):
        name = f"usage-report-{since:%Y%m%dT%H%M}-{until:%Y%m%dT%H%M}.csv"
        return Response(
            render.to_csv(report, currency=settings.price_currency),
            media_type=render.MEDIA_TYPE,
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )
    return UsageReport.of(report, timezone=timezone, currency=settings.price_currency)
