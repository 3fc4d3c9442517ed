"""The operator snapshot behind GET /admin/metrics.

It reads stored data only (the request log and the ops samples), so it survives restarts and every
replica gives the same answer. Percentiles are exact (nearest rank) and computed in the database with window
functions, the same SQL on SQLite and PostgreSQL: no row of the request log is loaded into Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, String, and_, case, func, literal, null, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.selectable import Select, Subquery

from gatehouse.db.database import Database
from gatehouse.gateway.errors import CLIENT_DISCONNECTED, Terminated
from gatehouse.gateway.models import RequestLog
from gatehouse.limits.errors import QuotaExceeded, RateLimited
from gatehouse.limits.prices.money import decimal_of_nanos
from gatehouse.monitoring.models import OpsSample
from gatehouse.monitoring.schemas import (
    MetricsSeries,
    MetricsSnapshot,
    ModelStats,
    Percentiles,
    SeriesPoint,
    SqlStats,
    StreamCounts,
    TrafficStats,
    UpstreamStats,
)

TOTAL, MODEL, UPSTREAM = "total", "model", "upstream"

# --- GET /admin/metrics ----------------------------------------------------------------------------

_REACHED = RequestLog.upstream.is_not(None)
# Failures on our side or an upstream's; refusals (quota, rate limit, 4xx) are counted apart.
_IS_ERROR = or_(RequestLog.status_code >= 500, RequestLog.error_code.startswith("upstream_", autoescape=True))


def _ranked(key: ColumnElement[Any] | QueryableAttribute[Any] | None, *, since: datetime, until: datetime) -> Subquery:
    """The window's rows with their rank by latency and by time to first token, within their group."""
    reached_flag = case((_REACHED, 1), else_=0)
    has_ttft = case((RequestLog.ttft_ms.is_not(None), 1), else_=0)
    group: list[Any] = [] if key is None else [key]
    # Rows that never reached an upstream (and rows without a first token) rank apart: they are left out of the
    # percentiles, and both backends put NULLs at different ends of an ORDER BY.
    by_latency = [*group, reached_flag]
    by_ttft = [*group, has_ttft]
    return (
        select(
            (key if key is not None else null()).label("key"),
            reached_flag.label("reached"),
            case((_IS_ERROR, 1), else_=0).label("error"),
            RequestLog.status_code,
            RequestLog.error_code,
            RequestLog.stream,
            RequestLog.prompt_tokens,
            RequestLog.completion_tokens,
            RequestLog.cost_nanos,
            RequestLog.latency_ms,
            RequestLog.ttft_ms,
            func.row_number().over(partition_by=by_latency, order_by=RequestLog.latency_ms).label("latency_rank"),
            func.count().over(partition_by=by_latency).label("latency_count"),
            func.row_number().over(partition_by=by_ttft, order_by=RequestLog.ttft_ms).label("ttft_rank"),
            func.count().over(partition_by=by_ttft).label("ttft_count"),
        )
        .where(RequestLog.created_at >= since, RequestLog.created_at <= until)
        .subquery()
    )


def _aggregate(dimension: str, ranked: Subquery, *, grouped: bool) -> Select[Any]:
    """One row per group (or one for all rows): counts, sums and nearest-rank percentiles."""
    r = ranked.c

    def count_if(condition: ColumnElement[bool]) -> ColumnElement[Any]:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    def percentile(percent: int, value: Any, rank: Any, count: Any, included: ColumnElement[bool]) -> Any:
        # Nearest rank: the smallest value whose rank is at least percent% of the count.
        return func.min(case((and_(included, rank * 100 >= count * percent), value)))

    # A stream counts from the moment an upstream was tried: refusals (quota, rate limit) never started.
    streamed = and_(r.stream.is_(True), r.reached == 1)
    latency_included = r.reached == 1
    ttft_included = r.ttft_ms.is_not(None)
    query = select(
        literal(dimension, String).label("dimension"),
        r.key if grouped else null().label("key"),
        func.count().label("requests"),
        count_if(r.status_code < 400).label("succeeded"),
        count_if(r.error == 1).label("errors"),
        count_if(r.error_code == QuotaExceeded.code).label("quota_blocks"),
        count_if(r.error_code == RateLimited.code).label("rate_limit_hits"),
        percentile(50, r.latency_ms, r.latency_rank, r.latency_count, latency_included).label("latency_p50"),
        percentile(95, r.latency_ms, r.latency_rank, r.latency_count, latency_included).label("latency_p95"),
        percentile(50, r.ttft_ms, r.ttft_rank, r.ttft_count, ttft_included).label("ttft_p50"),
        percentile(95, r.ttft_ms, r.ttft_rank, r.ttft_count, ttft_included).label("ttft_p95"),
        count_if(streamed).label("streams_started"),
        count_if(and_(streamed, r.status_code == 200)).label("streams_completed"),
        count_if(and_(streamed, r.error_code == Terminated.code)).label("streams_terminated"),
        count_if(and_(streamed, r.error_code == CLIENT_DISCONNECTED)).label("streams_disconnected"),
        count_if(and_(streamed, r.error == 1)).label("streams_failed"),
        func.coalesce(func.sum(r.prompt_tokens), 0).label("tokens_in"),
        func.coalesce(func.sum(r.completion_tokens), 0).label("tokens_out"),
        func.coalesce(func.sum(r.cost_nanos), 0).label("cost_nanos"),
        count_if(and_(r.cost_nanos.is_(None), r.prompt_tokens + r.completion_tokens > 0)).label("unpriced_requests"),
    )
    return query.group_by(r.key) if grouped else query


def _percentiles(p50: Any, p95: Any) -> Percentiles:
    return Percentiles(p50=None if p50 is None else float(p50), p95=None if p95 is None else float(p95))


def _stats(values: Mapping[Any, Any]) -> dict[str, Any]:
    """A result row as TrafficStats' fields (zeros for a missing row)."""

    def number(name: str) -> int:
        return int(values.get(name) or 0)

    requests, errors = number("requests"), number("errors")
    return {
        "requests": requests,
        "succeeded": number("succeeded"),
        "errors": errors,
        "error_rate": errors / requests if requests else None,
        "quota_blocks": number("quota_blocks"),
        "rate_limit_hits": number("rate_limit_hits"),
        "latency_ms": _percentiles(values.get("latency_p50"), values.get("latency_p95")),
        "ttft_ms": _percentiles(values.get("ttft_p50"), values.get("ttft_p95")),
        "streams": StreamCounts(
            started=number("streams_started"),
            completed=number("streams_completed"),
            terminated=number("streams_terminated"),
            disconnected=number("streams_disconnected"),
            failed=number("streams_failed"),
        ),
        "tokens_in": number("tokens_in"),
        "tokens_out": number("tokens_out"),
        "cost": decimal_of_nanos(number("cost_nanos")),
        "cost_nanos": number("cost_nanos"),
        "unpriced_requests": number("unpriced_requests"),
    }


async def traffic(
    session: AsyncSession, *, since: datetime, until: datetime
) -> tuple[TrafficStats, list[ModelStats], list[UpstreamStats]]:
    """Totals, per model and per upstream, for requests logged in [since, until]; one statement, one snapshot."""
    query = union_all(
        _aggregate(TOTAL, _ranked(None, since=since, until=until), grouped=False),
        _aggregate(MODEL, _ranked(RequestLog.model, since=since, until=until), grouped=True),
        _aggregate(UPSTREAM, _ranked(RequestLog.upstream, since=since, until=until), grouped=True),
    )
    rows = (await session.execute(query)).all()
    totals: Mapping[Any, Any] = next((row._mapping for row in rows if row.dimension == TOTAL), {})
    by_model = [ModelStats(model=row.key, **_stats(row._mapping)) for row in rows if row.dimension == MODEL]
    by_upstream = [UpstreamStats(upstream=row.key, **_stats(row._mapping)) for row in rows if row.dimension == UPSTREAM]
    by_model.sort(key=lambda s: (-s.requests, s.model))
    by_upstream.sort(key=lambda s: (-s.requests, s.upstream is None, s.upstream or ""))
    return TrafficStats(**_stats(totals)), by_model, by_upstream


async def sql_latency(session: AsyncSession, *, since: datetime, until: datetime) -> SqlStats:
    """Statements run and their mean duration, from every replica's samples taken in [since, until]."""
    statements, seconds = (
        await session.execute(
            select(
                func.coalesce(func.sum(OpsSample.statements), 0),
                func.coalesce(func.sum(OpsSample.statement_seconds), 0.0),
            ).where(OpsSample.created_at >= since, OpsSample.created_at <= until)
        )
    ).one()
    count = int(statements)  # PostgreSQL sums a BIGINT into a NUMERIC
    return SqlStats(statements=count, mean_ms=float(seconds) * 1000 / count if count else None)


# --- GET /admin/metrics/series ---------------------------------------------------------------------

DAY, HOUR = "day", "hour"


def _bucket(dialect: str, unit: str) -> ColumnElement[Any]:
    """The request's UTC day (`YYYY-MM-DD`) or hour (`YYYY-MM-DDTHH`) as text, on either backend."""
    if dialect == "postgresql":
        utc = func.timezone("UTC", RequestLog.created_at)
        return func.to_char(utc, "YYYY-MM-DD" if unit == DAY else 'YYYY-MM-DD"T"HH24')
    return func.strftime("%Y-%m-%d" if unit == DAY else "%Y-%m-%dT%H", RequestLog.created_at)


def _labels(since: datetime, until: datetime, unit: str) -> list[str]:
    """Every bucket from `since` to `until`, oldest first, in the bucket's text form."""
    step = timedelta(days=1) if unit == DAY else timedelta(hours=1)
    moment = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if unit == DAY:
        moment = moment.replace(hour=0)
    labels = []
    while moment <= until:
        labels.append(moment.strftime("%Y-%m-%d" if unit == DAY else "%Y-%m-%dT%H"))
        moment += step
    return labels


async def series(session: AsyncSession, *, since: datetime, until: datetime, unit: str) -> list[SeriesPoint]:
    """Requests, errors, tokens and cost per UTC day or hour in [since, until]; a point for every bucket (zeros
    where nothing was logged), oldest first."""
    bucket = _bucket(session.get_bind().dialect.name, unit).label("bucket")
    query = (
        select(
            bucket,
            func.count().label("requests"),
            func.coalesce(func.sum(case((_IS_ERROR, 1), else_=0)), 0).label("errors"),
            func.coalesce(func.sum(RequestLog.prompt_tokens), 0).label("tokens_in"),
            func.coalesce(func.sum(RequestLog.completion_tokens), 0).label("tokens_out"),
            func.coalesce(func.sum(RequestLog.cost_nanos), 0).label("cost_nanos"),
        )
        .where(RequestLog.created_at >= since, RequestLog.created_at <= until)
        .group_by(bucket)
    )
    found = {str(row.bucket): row for row in (await session.execute(query)).all()}
    points = []
    for label in _labels(since, until, unit):
        row = found.get(label)
        nanos = int(row.cost_nanos) if row is not None else 0
        points.append(
            SeriesPoint(
                bucket=label,
                requests=int(row.requests) if row is not None else 0,
                errors=int(row.errors) if row is not None else 0,
                tokens_in=int(row.tokens_in) if row is not None else 0,
                tokens_out=int(row.tokens_out) if row is not None else 0,
                cost=decimal_of_nanos(nanos),
                cost_nanos=nanos,
            )
        )
    return points


async def read_series(database: Database, *, days: int, unit: str, until: datetime) -> MetricsSeries:
    """`series` over the last `days` days, read-only."""
    since = until - timedelta(days=days)
    async with database.read_sessionmaker() as session:
        points = await series(session, since=since, until=until, unit=unit)
    return MetricsSeries(days=days, bucket=unit, from_=since, to=until, points=points)


async def metrics(session: AsyncSession, *, days: int | None, minutes: int | None, until: datetime) -> MetricsSnapshot:
    """The snapshot of the `days` days (or the `minutes` minutes) before `until`."""
    since = until - (timedelta(minutes=minutes) if minutes is not None else timedelta(days=days or 1))
    totals, by_model, by_upstream = await traffic(session, since=since, until=until)
    sql = await sql_latency(session, since=since, until=until)
    return MetricsSnapshot(
        days=None if minutes is not None else days or 1,
        minutes=minutes,
        from_=since,
        to=until,
        totals=totals,
        by_model=by_model,
        by_upstream=by_upstream,
        sql=sql,
    )


async def read(database: Database, *, days: int | None, minutes: int | None, until: datetime) -> MetricsSnapshot:
    """`metrics` in a read-only transaction: on SQLite it reads a snapshot and holds no write lock while the
    database sorts."""
    async with database.read_sessionmaker() as session:
        return await metrics(session, days=days, minutes=minutes, until=until)
