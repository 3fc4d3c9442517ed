"""Routes: /healthz and /readyz (probes), /metrics (Prometheus), /admin/metrics (the stored traffic snapshot),
/admin/health (every dependency in detail) and /admin/events (the live feed as server-sent events)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import JSONResponse, Response

from gatehouse.auth.access import public, require
from gatehouse.auth.roles import Role
from gatehouse.core.components import provided
from gatehouse.core.metrics import count_event_loop_tasks, scrape
from gatehouse.db.base import utcnow
from gatehouse.deps import DatabaseDep, FeedDep
from gatehouse.errors import ValidationFailed
from gatehouse.monitoring import snapshot
from gatehouse.monitoring.feed import SSE_HEADERS, follow, kind_filter
from gatehouse.monitoring.health import HealthCheck
from gatehouse.monitoring.schemas import HealthReport, MetricsSeries, MetricsSnapshot

router = APIRouter()
HealthDep = Annotated[HealthCheck, provided(HealthCheck)]
MONITOR = [require(Role.MONITOR)]
MAX_DAYS = 90
MAX_MINUTES = 1440
MAX_HOURLY_DAYS = 7


@router.get("/healthz", tags=["health"], dependencies=[public()])
async def healthz() -> dict[str, str]:
    """The process is alive; checks no dependency (for liveness probes)."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    tags=["health"],
    dependencies=[public()],
    responses={503: {"description": "A check failed, or the replica is draining (shutting down)"}},
)
async def readyz(health: HealthDep) -> JSONResponse:
    """200 when the database answers and its schema is at the code's migration head; else 503 naming the check
    (status `draining` from the SIGTERM on: the proxy takes the replica out while it still serves)."""
    ready, body = await health.readiness()
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get(
    "/metrics",
    tags=["ops"],
    dependencies=[require(Role.MONITOR, bearer_setting="metrics_token")],
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
)
async def metrics() -> Response:
    """Every metric of this process, or of all workers under `gatehouse serve --workers N`."""
    count_event_loop_tasks()  # on the loop, which the scrape's thread is not
    # Off the loop: in multiprocess mode a scrape reads every worker's files.
    return Response(await asyncio.to_thread(scrape), media_type=CONTENT_TYPE_LATEST)


@router.get("/admin/metrics", response_model=MetricsSnapshot, tags=["ops"], dependencies=MONITOR)
async def get_metrics(
    database: DatabaseDep,
    days: Annotated[
        int | None, Query(ge=1, le=MAX_DAYS, description=f"The last N days (1 to {MAX_DAYS}), ending now; default 1.")
    ] = None,
    minutes: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_MINUTES,
            description=f"Or: the last N minutes (1 to {MAX_MINUTES}), ending now (requests per minute, say). "
            "Not with `days`.",
        ),
    ] = None,
) -> MetricsSnapshot:
    """Requests, errors, latency and time-to-first-token percentiles, streams and tokens: overall, per model and
    per upstream; plus the mean SQL statement latency. Every replica gives the same answer."""
    if minutes is not None and days is not None:
        raise ValidationFailed("Give `days` or `minutes`, not both.", param="minutes")
    return await snapshot.read(database, days=days, minutes=minutes, until=utcnow())


@router.get("/admin/metrics/series", response_model=MetricsSeries, tags=["ops"], dependencies=MONITOR)
async def get_metrics_series(
    database: DatabaseDep,
    days: Annotated[int, Query(ge=1, le=MAX_DAYS, description=f"The last N days (1 to {MAX_DAYS}), ending now.")] = 30,
    bucket: Annotated[
        Literal["day", "hour"], Query(description=f"Per UTC day, or per hour (at most {MAX_HOURLY_DAYS} days).")
    ] = "day",
) -> MetricsSeries:
    """Requests, errors, tokens and cost per day or hour, from stored data: the console's charts."""
    if bucket == "hour" and days > MAX_HOURLY_DAYS:
        raise ValidationFailed(f"Per hour covers at most {MAX_HOURLY_DAYS} days.", param="days")
    return await snapshot.read_series(database, days=days, unit=bucket, until=utcnow())


@router.get("/admin/health", response_model=HealthReport, tags=["ops"], dependencies=MONITOR)
async def get_health(health: HealthDep) -> HealthReport:
    """Database (latency), migrations, Redis, upstreams, version, uptime and live streams; always a 200, with
    `status` ok, degraded or failing."""
    return await health.report()


# One server-sent event of /admin/events, as its fields (the `data` field is JSON text).
SSE_EVENT = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "event": {"type": "string"},
        "data": {"type": "string"},
        "retry": {"type": "integer"},
    },
}


@router.get(
    "/admin/events",
    tags=["events"],
    dependencies=MONITOR,
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Server-sent events: `id`, `event` (the kind) and `data` (a JSON object) per event; a "
            "`gap` event when events after Last-Event-ID are no longer kept.",
            "content": {"text/event-stream": {"schema": SSE_EVENT}},
        }
    },
)
async def events(
    feed: FeedDep,
    last_event_id: Annotated[
        str | None,
        Header(max_length=64, description="Resume after this event id (sent by EventSource when it reconnects)."),
    ] = None,
    last_event_id_query: Annotated[
        str | None,
        Query(alias="last_event_id", max_length=64, description="The same, for clients that cannot set headers."),
    ] = None,
    kinds: Annotated[
        str | None,
        Query(
            max_length=500,
            description='Only these kinds: a comma list of kinds and prefixes ending in "." '
            '("upstream.,stream.ended").',
        ),
    ] = None,
    follow_: Annotated[
        bool,
        Query(alias="follow", description="false: send what follows Last-Event-ID (or nothing) and end, for polling."),
    ] = True,
) -> StreamingResponse:
    """Live events (upstream states and overrides, streams started/ended/terminated, blocks, limits) as SSE."""
    cursor = last_event_id or last_event_id_query or None
    return StreamingResponse(
        follow(feed, cursor, kind_filter(kinds), forever=follow_), media_type="text/event-stream", headers=SSE_HEADERS
    )
