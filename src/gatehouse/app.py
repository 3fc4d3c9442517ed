"""The application factory: settings in, an ASGI app out. Mounts routers and middleware; the lifespan
builds the Runtime (database, bus, caches, upstreams, writers) and tears it down in order."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gatehouse import __version__
from gatehouse.accounts.admin_routes import router as admin_users_router
from gatehouse.accounts.bootstrap import BootstrapResult, bootstrap_admin, describe
from gatehouse.accounts.erasure_routes import router as erasure_router
from gatehouse.accounts.invite_routes import router as invite_router
from gatehouse.accounts.key_routes import router as keys_router
from gatehouse.accounts.passwords import prepare_dummy_hash
from gatehouse.accounts.principal import AuthCache
from gatehouse.accounts.routes import router as accounts_router
from gatehouse.audit.routes import router as audit_router
from gatehouse.core.bus import create_bus
from gatehouse.core.feed_redis import create_feed
from gatehouse.core.logging import configure_logging, get_logger
from gatehouse.core.metrics import instrument_engine, mark_started, mark_stopped
from gatehouse.core.middleware import RequestContextMiddleware
from gatehouse.db.engine import create_autocommit_engine, create_engine, create_sessionmaker, read_only
from gatehouse.db.migrate import current_revisions, head_revisions, upgrade
from gatehouse.db.statements import SqliteStore, create_store
from gatehouse.errors import install_handlers
from gatehouse.gateway.fastpath import FastPath
from gatehouse.gateway.requestlog import RequestLogWriter
from gatehouse.gateway.routes import router as gateway_router
from gatehouse.limits.ratelimit import RateLimiter
from gatehouse.limits.routes import router as limits_router
from gatehouse.ops.event_routes import router as events_router
from gatehouse.ops.export_routes import router as export_router
from gatehouse.ops.health import router as health_router
from gatehouse.ops.job_routes import router as jobs_router
from gatehouse.ops.jobs import JobRunner
from gatehouse.ops.metrics_routes import router as metrics_router
from gatehouse.ops.replicas import Heartbeat
from gatehouse.ops.sampler import OpsSampler
from gatehouse.ops.snapshot_routes import router as snapshot_router
from gatehouse.ops.stream_routes import router as streams_router
from gatehouse.ops.streams import StreamRegistry
from gatehouse.runtime import Runtime
from gatehouse.settings import Settings, get_settings
from gatehouse.upstreams.config import load_config
from gatehouse.upstreams.registry import UpstreamRegistry
from gatehouse.upstreams.routes import router as upstreams_router
from gatehouse.upstreams.service import sync_from_config

log = get_logger("gatehouse.app")
PREPARED_ENV = "GATEHOUSE_PREPARED"  # set by `gatehouse serve` once it migrated and bootstrapped


class UnsafeSettings(SystemExit):
    """Startup refused: the message names each setting to fix."""


def check_settings(settings: Settings) -> None:
    """Refuse to start with unsafe settings, naming each one."""
    problems = settings.problems()
    if problems:
        raise UnsafeSettings("Gatehouse will not start:\n  - " + "\n  - ".join(problems))


async def prepare(settings: Settings) -> BootstrapResult:
    """Migrate (when RUN_MIGRATIONS), store the configured upstreams, bootstrap the first superadmin; run once
    before serving."""
    engine = create_engine(settings)
    try:
        # Alembic runs only when there is something to do (db/migrate.py: it is slow to import).
        if settings.run_migrations and set(await current_revisions(engine)) != set(head_revisions()):
            await upgrade(settings.database_url)
        sessionmaker = create_sessionmaker(engine)
        await sync_from_config(sessionmaker, load_config(settings))
        return await bootstrap_admin(sessionmaker, settings)
    finally:
        await engine.dispose()


def announce(result: BootstrapResult) -> None:
    """Print generated bootstrap credentials once, to the terminal (never to the logs)."""
    banner = describe(result)
    if banner:
        print(banner, file=sys.stderr, flush=True)


async def shut_down(steps: list[Callable[[], Awaitable[None]]]) -> None:
    """Run every shutdown step in order; one that fails is logged and the rest still run."""
    for step in steps:
        try:
            await step()
        except Exception:
            log.exception("shutdown_step_failed", step=getattr(step, "__qualname__", repr(step)))


def _async(step: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    """A plain function as a shutdown step."""

    async def run() -> None:
        step()

    run.__qualname__ = getattr(step, "__qualname__", repr(step))
    return run


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the ASGI app for these settings (default: from the environment)."""
    settings = settings or get_settings()
    configure_logging(settings)
    check_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if os.environ.get(PREPARED_ENV) != "1":
            announce(await prepare(settings))
        # Built now, off the loop and without holding up readiness: the first login with an unknown email costs
        # what a known one does (a login arriving before it is ready builds it itself).
        dummy_hash = asyncio.create_task(prepare_dummy_hash(), name="gatehouse-dummy-hash")
        engine = create_engine(settings)
        sessionmaker = create_sessionmaker(engine)
        read_engine = read_only(engine)
        autocommit_engine = create_autocommit_engine(settings)
        # The store keeps its connections: leave the autocommit pool room for the rare statements (a quota
        # refusal's explanation) that still go through it.
        statements = create_store(autocommit_engine, size=max(1, min(4, settings.db_pool_size // 2 - 1)))
        bus = create_bus(settings.redis_url, settings.redis_prefix)
        events = create_feed(settings.redis_url, settings.redis_prefix, bus.origin)
        auth_cache = AuthCache(ttl_seconds=settings.auth_cache_seconds)
        bus.subscribe(auth_cache.on_event)
        upstreams = UpstreamRegistry(
            load_config(settings), settings, sessionmaker=create_sessionmaker(read_engine), events=events
        )
        bus.subscribe(upstreams.on_event)
        request_log = RequestLogWriter(
            sessionmaker,
            flush_seconds=settings.request_log_flush_seconds,
            sqlite=statements if isinstance(statements, SqliteStore) else None,
        )
        rate_limiter = RateLimiter(settings, sessionmaker, events=events)
        streams = StreamRegistry(
            replica=bus.origin, redis_url=settings.redis_url, prefix=settings.redis_prefix, events=events
        )
        bus.subscribe(streams.on_event)
        bus.subscribe(rate_limiter.on_event)
        runtime = Runtime(
            settings=settings,
            engine=engine,
            sessionmaker=sessionmaker,
            read_engine=read_engine,
            read_sessionmaker=create_sessionmaker(read_engine),
            autocommit_engine=autocommit_engine,
            statements=statements,
            bus=bus,
            events=events,
            auth_cache=auth_cache,
            upstreams=upstreams,
            request_log=request_log,
            rate_limiter=rate_limiter,
            streams=streams,
            secret=settings.effective_jwt_secret(),
            head_revisions=head_revisions(),
        )
        app.state.runtime = runtime
        instrument_engine(engine)
        instrument_engine(runtime.autocommit_engine)
        mark_started()
        await statements.start()
        await bus.start()
        await events.start()
        await upstreams.start()
        await request_log.start()
        await rate_limiter.start()
        await streams.start()
        sampler = OpsSampler(engine, replica=bus.origin)
        app.state.ops_sampler = sampler
        await sampler.start()
        heartbeat = Heartbeat(sessionmaker, replica=bus.origin)
        await heartbeat.start()
        runtime.jobs = jobs = JobRunner(settings, sessionmaker, replica=bus.origin, runtime=runtime)
        await jobs.start()
        # Everything built so far lives as long as the process: keep it out of the garbage collector's
        # full passes, which would otherwise walk it again and again, a pause of tens of ms under load.
        gc.collect()
        gc.freeze()
        log.info(
            "started",
            version=__version__,
            database=engine.dialect.name,
            redis=bool(settings.redis_url),
            upstreams=list(upstreams.providers),
            demo_only=upstreams.is_demo_only(),
        )
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                await dummy_hash  # its failure must not skip the shutdown steps (it is only a timing guard)
            await shut_down(
                [
                    jobs.close,
                    runtime.drain,
                    streams.close_all,
                    rate_limiter.close,
                    request_log.close,
                    upstreams.close,
                    events.close,
                    bus.close,
                    sampler.close,
                    heartbeat.close,
                    statements.close,
                    runtime.autocommit_engine.dispose,
                    engine.dispose,
                    _async(mark_stopped),
                ]
            )
            log.info("stopped")

    app = FastAPI(
        title="Gatehouse",
        version=__version__,
        lifespan=lifespan,
        description="A self-hosted AI gateway: OpenAI- and Ollama-compatible, with keys, quotas and audit.",
        # Gatehouse has its own metrics (Prometheus) and logs; FastAPI's OpenTelemetry hooks would only cost
        # a provider lookup and an environment read on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    install_handlers(app)
    app.include_router(health_router)
    app.include_router(metrics_router)
    app.include_router(accounts_router)
    app.include_router(invite_router)
    app.include_router(admin_users_router)
    app.include_router(keys_router)
    app.include_router(audit_router)
    app.include_router(streams_router)
    app.include_router(events_router)
    app.include_router(snapshot_router)
    app.include_router(upstreams_router)
    app.include_router(gateway_router)
    app.include_router(limits_router)
    app.include_router(export_router)
    app.include_router(erasure_router)
    app.include_router(jobs_router)
    app.state.fast_path = fast_path = FastPath()
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_request_bytes, fast_path=fast_path)
    return app
