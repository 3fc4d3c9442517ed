"""Routes: /admin/metrics (traffic, errors, latency, streams, tokens and SQL latency over days, from stored data)
and /admin/health (every dependency in detail; /readyz stays the cheap probe)."""

from __future__ import annotations

from fastapi import APIRouter, Query

from gatehouse.auth.access import require
from gatehouse.auth.roles import Role
from gatehouse.db.base import utcnow
from gatehouse.deps import RuntimeDep
from gatehouse.monitoring import snapshot
from gatehouse.monitoring.schemas import HealthReport, MetricsSnapshot

router = APIRouter(tags=["ops"])
MAX_DAYS = 90


@router.get("/admin/metrics", response_model=MetricsSnapshot, dependencies=[require(Role.MONITOR)])
async def get_metrics(
    runtime: RuntimeDep,
    days: int = Query(1, ge=1, le=MAX_DAYS, description=f"The last N days (1 to {MAX_DAYS}), ending now."),
) -> MetricsSnapshot:
    """Requests, errors, latency and time-to-first-token percentiles, streams and tokens: overall, per model and
    per upstream; plus the mean SQL statement latency. Every replica gives the same answer."""
    # A read-only transaction: on SQLite it reads a snapshot and holds no write lock while the database sorts.
    async with runtime.db.read_sessionmaker() as session:
        return await snapshot.metrics(session, days=days, until=utcnow())


@router.get("/admin/health", response_model=HealthReport, dependencies=[require(Role.MONITOR)])
async def get_health(runtime: RuntimeDep) -> HealthReport:
    """Database (latency), migrations, Redis, upstreams, version, uptime and live streams; always a 200, with
    `status` ok, degraded or failing."""
    return await snapshot.health(runtime)
