"""Readiness (GET /readyz) and the health detail (GET /admin/health): every dependency checked with a time limit,
so a detail page answers and never hangs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from gatehouse import __version__
from gatehouse.core.logging import get_logger
from gatehouse.core.redis_state import RedisState
from gatehouse.core.shutdown import Shutdown
from gatehouse.db.database import Database
from gatehouse.db.migrate import current_revisions
from gatehouse.gateway.streams.registry import StreamRegistry
from gatehouse.limits.ratelimit import RateLimiter
from gatehouse.monitoring.schemas import (
    DatabaseCheck,
    DiskCheck,
    HealthReport,
    MigrationsCheck,
    RedisCheck,
    StorageCheck,
    StreamsCheck,
)
from gatehouse.monitoring.storage import collect
from gatehouse.settings import Settings
from gatehouse.upstreams.registry import UpstreamRegistry

log = get_logger("gatehouse.health")
READY_TIMEOUT = 2.0
DATABASE_TIMEOUT = 2.0  # seconds, for the health detail's checks
REDIS_TIMEOUT = 1.0
STREAMS_TIMEOUT = 2.0
STORAGE_TIMEOUT = 2.0
MAX_ERROR_CHARS = 200
TROUBLED_UPSTREAM = frozenset({"down", "degraded"})  # states that make the whole gateway `degraded`


def _describe(exc: BaseException) -> str:
    """An error's class and driver message, short (a SQLAlchemy error's own text would repeat its SQL)."""
    if isinstance(exc, TimeoutError):
        return "TimeoutError: no answer in time"
    reason = getattr(exc, "orig", None) or exc
    return f"{type(reason).__name__}: {str(reason)[:MAX_ERROR_CHARS]}"


async def _timed(call: Callable[[], Awaitable[Any]]) -> float:
    """Milliseconds `call` took."""
    started = time.perf_counter()
    await call()
    return round((time.perf_counter() - started) * 1000, 3)


async def check_database(engine: AsyncEngine, head: tuple[str, ...]) -> tuple[DatabaseCheck, MigrationsCheck]:
    """A `SELECT 1` round trip, then the schema's revision(s) against the code's head."""
    kind = engine.dialect.name
    migrations = MigrationsCheck(status="unknown", current=None, head=list(head))
    try:
        async with asyncio.timeout(DATABASE_TIMEOUT), engine.connect() as conn:
            latency = await _timed(lambda: conn.execute(text("SELECT 1")))
        database = DatabaseCheck(kind=kind, status="ok", latency_ms=latency, error=None)
    except Exception as exc:
        return DatabaseCheck(kind=kind, status="error", latency_ms=None, error=_describe(exc)), migrations
    try:
        async with asyncio.timeout(DATABASE_TIMEOUT):
            current = await current_revisions(engine)
    except Exception as exc:
        return database.model_copy(update={"status": "error", "error": _describe(exc)}), migrations
    status = "ok" if set(current) == set(head) else "behind"
    return database, MigrationsCheck(status=status, current=list(current), head=list(head))


async def check_redis(state: RedisState, limiter: RateLimiter) -> RedisCheck:
    """A PING on a fresh connection (connected first, so the latency is the round trip), never waiting long; with
    what this replica's requests go by (the shared state) and where its rate limits are counted."""
    mode = limiter.mode
    replicas = limiter.replicas if mode == "local" else None
    if not state.configured:
        return RedisCheck(
            status="not configured",
            latency_ms=None,
            error=None,
            state="not configured",
            down_since=None,
            down_error=None,
            rate_limits="memory",
            rate_limit_replicas=None,
        )
    import redis.asyncio as redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    client = redis.Redis.from_url(
        state.url, socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT, retry=Retry(NoBackoff(), 0)
    )
    status: Literal["ok", "error"] = "ok"
    latency: float | None = None
    error: str | None = None
    try:
        async with asyncio.timeout(REDIS_TIMEOUT * 2 + 0.5):
            await client.ping()
            latency = await _timed(client.ping)
    except Exception as exc:
        status, error = "error", _describe(exc)
    finally:
        await client.aclose()
    since = state.down_since
    return RedisCheck(
        status=status,
        latency_ms=latency,
        error=error,
        state="up" if state.up else "down",
        down_since=datetime.fromtimestamp(since, UTC) if since is not None else None,
        down_error=state.error,
        rate_limits=mode,
        rate_limit_replicas=replicas,
    )


async def _count_streams(streams: StreamRegistry) -> StreamsCheck:
    local = len(streams.local())
    try:
        async with asyncio.timeout(STREAMS_TIMEOUT):
            everywhere, complete = await streams.everywhere()
    except TimeoutError:
        return StreamsCheck(local=local, all=None)
    return StreamsCheck(local=local, all=len(everywhere) if complete else None)


async def check_storage(engine: AsyncEngine, settings: Settings) -> StorageCheck:
    """Sizes and free disk (no table detail: that is `gatehouse db stats`), within a time limit."""
    try:
        async with asyncio.timeout(STORAGE_TIMEOUT):
            report = await collect(engine, settings, largest=0)
    except Exception as exc:
        return StorageCheck(
            status="error",
            database_bytes=None,
            wal_bytes=None,
            backup_dir_bytes=None,
            backups=None,
            log_dir_bytes=None,
            disks=[],
            error=_describe(exc),
        )
    return StorageCheck(
        status=report.status,
        database_bytes=report.database.size_bytes,
        wal_bytes=report.database.wal_bytes,
        backup_dir_bytes=report.backups.bytes,
        backups=report.backups.backups,
        log_dir_bytes=report.logs.bytes,
        disks=[
            DiskCheck(
                path=found.label,
                directory=found.path,
                free_bytes=found.free_bytes,
                total_bytes=found.total_bytes,
                free_percent=found.free_percent,
                status=found.status,
                reason=found.reason,
            )
            for found in report.disks
        ],
        error=None,
    )


@dataclass(frozen=True)
class Replica:
    """This process among the replicas: its id (the bus's origin) and when it started."""

    id: str
    started_at: float = field(default_factory=time.time)


class HealthCheck:
    """Readiness (GET /readyz, the cheap probe) and the health detail (GET /admin/health)."""

    def __init__(
        self,
        *,
        database: Database,
        settings: Settings,
        streams: StreamRegistry,
        upstreams: UpstreamRegistry,
        replica: Replica,
        redis: RedisState,
        rate_limiter: RateLimiter,
        shutdown: Shutdown | None = None,
    ) -> None:
        self.shutdown = shutdown if shutdown is not None else Shutdown()
        self.database = database
        self.settings = settings
        self.streams = streams
        self.upstreams = upstreams
        self.replica = replica
        self.redis = redis
        self.rate_limiter = rate_limiter

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, body): not draining (SIGTERM received), the database answers and its schema is at the code's
        migration head; or the failed check named, without the driver's text (the route is public: that text goes
        to the log)."""
        database = self.database
        checks: dict[str, str] = {}
        if self.shutdown.draining:
            checks["shutdown"] = "draining: this replica is shutting down and takes no new work"
            return False, {"status": "draining", "failed": "shutdown", "checks": checks}
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                # Read-only: on SQLite a probe must not queue behind a writer for the write lock.
                async with database.read_engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
                checks["database"] = "ok"
                current = await current_revisions(database.read_engine)
        except Exception as exc:
            log.error("readiness_database_failed", error=f"{type(exc).__name__}: {exc}")
            checks["database"] = f"database unreachable: {type(exc).__name__}; see the server log"
            return False, {"status": "unavailable", "failed": "database", "checks": checks}
        if set(current) != set(database.head_revisions):
            checks["migrations"] = (
                f"database at {', '.join(current) or 'no revision'}, code expects "
                f"{', '.join(database.head_revisions)}: run `gatehouse db upgrade`"
            )
            return False, {"status": "unavailable", "failed": "migrations", "checks": checks}
        checks["migrations"] = "ok"
        return True, {"status": "ready", "checks": checks}

    async def report(self) -> HealthReport:
        """Every dependency's state, checked concurrently; database or schema trouble is `failing`."""
        (database, migrations), redis_check, streams, storage = await asyncio.gather(
            check_database(self.database.read_engine, self.database.head_revisions),
            check_redis(self.redis, self.rate_limiter),
            _count_streams(self.streams),
            check_storage(self.database.read_engine, self.settings),
        )
        upstreams = self.upstreams.status()
        if database.status != "ok" or migrations.status != "ok":
            status = "failing"
        elif (
            redis_check.status == "error"
            or redis_check.state == "down"
            or any(u.get("state") in TROUBLED_UPSTREAM for u in upstreams)
            or storage.status == "warn"
        ):
            status = "degraded"
        else:
            status = "ok"
        return HealthReport(
            status=status,
            version=__version__,
            replica=self.replica.id,
            uptime_seconds=round(time.time() - self.replica.started_at, 3),
            database=database,
            migrations=migrations,
            redis=redis_check,
            upstreams=upstreams,
            streams=streams,
            storage=storage,
        )
