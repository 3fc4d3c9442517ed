"""The composition root: builds the process's long-lived objects in order, provides them to the routes (through
core/components.py), and closes them in reverse order. Imported by app.py and cli/ only.

`running(settings)` is the app's lifespan: an AsyncExitStack, so a start that fails half-way closes what it had
started, and a shutdown step that fails is logged while the others still run. `prepare(settings)` is what runs
once before serving (migrations, upstreams from the file, the bootstrap superadmin).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse import __version__
from gatehouse.accounts.access.policy import AccessPolicy
from gatehouse.accounts.acting.service import Acting
from gatehouse.accounts.bootstrap import BootstrapResult, bootstrap_admin, describe
from gatehouse.accounts.scheduled import purge_expired
from gatehouse.alerts.scheduled import purge_alerts
from gatehouse.alerts.watcher import AlertWatcher
from gatehouse.auth.access import Authenticator
from gatehouse.auth.actor import Actor
from gatehouse.auth.cache import AuthCache
from gatehouse.auth.passwords import prepare_dummy_hash
from gatehouse.backups.scheduled import backup_job
from gatehouse.blocklist.loader import BlocklistLoader
from gatehouse.blocklist.matcher import Blocklist
from gatehouse.blocklist.scheduled import purge_expired_blocks
from gatehouse.configuration.reload import Reloader, SettingsHook
from gatehouse.core.bus import EventBus, create_bus
from gatehouse.core.components import Components
from gatehouse.core.feed import EventFeed
from gatehouse.core.feed_redis import create_feed
from gatehouse.core.logging import get_logger
from gatehouse.core.metrics import instrument_engine, mark_started, mark_stopped
from gatehouse.core.redis_state import RedisState
from gatehouse.core.shutdown import SHUTDOWN
from gatehouse.core.shutdown import install as install_shutdown
from gatehouse.db.database import Database, open_database
from gatehouse.db.engine import create_engine, create_sessionmaker
from gatehouse.db.migrate import current_revisions, head_revisions, upgrade
from gatehouse.db.sqllog import SqlLog
from gatehouse.db.statements import SqliteStore, StatementStore, create_store
from gatehouse.gateway.context import Gateway
from gatehouse.gateway.requestlog import RequestLogWriter
from gatehouse.gateway.scheduled import purge_request_log
from gatehouse.gateway.spend import spend_by_user
from gatehouse.gateway.stored.scheduled import purge_stored_responses
from gatehouse.gateway.stored.service import StoredResponses
from gatehouse.gateway.streams.registry import StreamRegistry
from gatehouse.jobs.job import Job
from gatehouse.jobs.purge import purge_job
from gatehouse.jobs.replicas import Heartbeat
from gatehouse.jobs.runner import JobRunner
from gatehouse.jobs.scheduled import forget_stale_replicas, purge_audit, purge_job_runs
from gatehouse.limits.budgets import BudgetRegistry
from gatehouse.limits.prices.config import apply_config
from gatehouse.limits.prices.service import ServedModels
from gatehouse.limits.prices.table import PriceTable
from gatehouse.limits.quotas import Quotas
from gatehouse.limits.ratelimit import RateLimiter
from gatehouse.limits.recovery import ReservationRecovery
from gatehouse.limits.scheduled import sweep_rate_limits
from gatehouse.limits.usage import SpendReader
from gatehouse.monitoring.health import HealthCheck, Replica
from gatehouse.monitoring.loglevel import LogLevelControl, override_store
from gatehouse.monitoring.maintain import maintain_job
from gatehouse.monitoring.sampler import OpsSampler
from gatehouse.monitoring.scheduled import purge_ops_samples
from gatehouse.monitoring.storage import StorageGauges
from gatehouse.settings import Settings
from gatehouse.upstreams.config import GatewayConfig, load_config
from gatehouse.upstreams.registry import UpstreamRegistry
from gatehouse.upstreams.scheduled import probe_job
from gatehouse.upstreams.seeding import sync_from_config
from gatehouse.upstreams.service import UpstreamChanges

log = get_logger("gatehouse.runtime")
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
        config = load_config(settings)
        await sync_from_config(sessionmaker, config)
        await _apply_config_prices(settings, sessionmaker, config)
        return await bootstrap_admin(sessionmaker, settings)
    finally:
        await engine.dispose()


async def _apply_config_prices(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], config: GatewayConfig
) -> None:
    """The file's `prices:` into the price table; running replicas are told through Redis when it is configured."""
    bus = create_bus(settings.redis_url, settings.redis_prefix)
    try:
        await apply_config(sessionmaker, config.prices, currency=settings.price_currency, bus=bus)
    finally:
        await bus.close()


def announce(result: BootstrapResult) -> None:
    """Print generated bootstrap credentials once, to the terminal (never to the logs)."""
    banner = describe(result)
    if banner:
        print(banner, file=sys.stderr, flush=True)


def job_definitions(
    settings: Settings, *, upstreams: UpstreamRegistry | None = None, rate_limiter: RateLimiter | None = None
) -> list[Job]:
    """Every job, as each domain defines it; in the CLI (no registry, no limiter) the probe cannot run and the purge
    has no rate-limit windows to sweep."""
    steps = [
        purge_audit,
        purge_request_log,
        purge_stored_responses,
        purge_ops_samples,
        purge_job_runs,
        purge_expired,
        purge_alerts,
        purge_expired_blocks,
        forget_stale_replicas,
        sweep_rate_limits(rate_limiter),
    ]
    return [purge_job(settings, steps), backup_job(settings), probe_job(settings, upstreams), maintain_job(settings)]


@dataclass(eq=False, repr=False)
class Runtime:
    """Everything the process shares, built once by `running`; routes get their parts through `components`."""

    settings: Settings
    db: Database
    statements: StatementStore  # runs the quota reservation and settlement (db/statements.py)
    bus: EventBus
    redis: RedisState  # whether Redis answers, shared by every Redis client (not configured: always up)
    feed: EventFeed  # the live feed behind GET /admin/events
    auth: Authenticator
    upstreams: UpstreamRegistry
    request_log: RequestLogWriter
    rate_limiter: RateLimiter
    streams: StreamRegistry
    gateway: Gateway
    jobs: JobRunner
    components: Components


def _reads_settings(*parts: object) -> SettingsHook:
    """The reload hook of parts that read their `settings` attribute at each use (nothing derived at construction)."""

    def apply(settings: Settings) -> None:
        for part in parts:
            setattr(part, "settings", settings)  # noqa: B010 (each part's own attribute, typed there)

    return apply


def _listen_for_sighup(stack: AsyncExitStack, reloader: Reloader) -> None:
    """`kill -HUP <pid>` (and `gatehouse reload` without Redis) reloads this process's configuration. uvicorn
    handles SIGINT and SIGTERM only, so SIGHUP would otherwise end a single-process server; with --workers, uvicorn's
    supervisor keeps SIGHUP for itself (it restarts the workers) while each worker listens here."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, lambda: reloader.start(actor=Actor.system("SIGHUP")))

    def stop_listening() -> None:
        loop.remove_signal_handler(signal.SIGHUP)  # which restores the default: ending the process
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload sent during the shutdown is not a kill

    stack.callback(stop_listening)


def _drain_on_sigterm(stack: AsyncExitStack, settings: Settings, streams: StreamRegistry) -> None:
    """SIGTERM drains before uvicorn stops (core/shutdown.py); at the deadline the requests still running here are
    terminated as an operator's terminate would, with `shutdown_deadline`, and settled."""
    undo = install_shutdown(
        SHUTDOWN,
        drain_seconds=settings.shutdown_drain_seconds,
        deadline_seconds=settings.shutdown_deadline_seconds,
        on_deadline=lambda: streams.terminate_local("SHUTDOWN_DEADLINE_SECONDS reached"),
    )
    stack.callback(undo)


def _logged(step: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
    """A shutdown step whose failure is logged, so that the steps after it still run."""

    async def run() -> None:
        try:
            await step()
        except Exception:
            log.exception("shutdown_step_failed", step=getattr(step, "__qualname__", repr(step)))

    return run


async def _started(
    stack: AsyncExitStack, start: Callable[[], Awaitable[object]], close: Callable[[], Awaitable[object]]
) -> None:
    """Start a part and have the stack close it (closed too when its own start fails half-way)."""
    stack.push_async_callback(_logged(close))
    await start()


@asynccontextmanager
async def running(
    settings: Settings, components: Components | None = None, *, blocklist: Blocklist | None = None
) -> AsyncIterator[Runtime]:
    """Build and start everything, provide it to the routes, and yield the Runtime; close it all afterwards.
    `blocklist` is the one the app's middleware reads (filled here, and kept current)."""
    started_at = time.time()
    components = components if components is not None else Components()
    async with AsyncExitStack() as stack:
        stack.callback(components.clear)  # registered first, so undone last: the parts stay findable to the end
        # Built now, off the loop and without holding up readiness: the first login with an unknown email costs
        # what a known one does (a login arriving before it is ready builds it itself).
        dummy_hash = asyncio.create_task(prepare_dummy_hash(), name="gatehouse-dummy-hash")

        async def await_dummy_hash() -> None:
            with contextlib.suppress(Exception):  # its failure must not skip the shutdown (a timing guard only)
                await dummy_hash

        stack.push_async_callback(await_dummy_hash)
        mark_started()
        stack.callback(mark_stopped)
        db = open_database(settings)
        stack.push_async_callback(_logged(db.close))
        instrument_engine(db.engine)
        instrument_engine(db.autocommit_engine)
        # The store keeps its connections: leave the autocommit pool room for the rare statements (a quota
        # refusal's explanation) that still go through it.
        statements = create_store(db.autocommit_engine, size=max(1, min(4, settings.db_pool_size // 2 - 1)))
        await _started(stack, statements.start, statements.close)
        # One view of Redis for all its clients: once one finds it unreachable, requests skip it (rate limits fall
        # back, signals are held) until the state's probe hears it again.
        redis_state = RedisState(settings.redis_url)
        await _started(stack, redis_state.start, redis_state.close)
        bus = create_bus(settings.redis_url, settings.redis_prefix, redis_state)
        heartbeat = Heartbeat(db.sessionmaker, replica=bus.origin, interval_seconds=settings.replica_heartbeat_seconds)
        await _started(stack, heartbeat.start, heartbeat.close)
        await _started(stack, bus.start, bus.close)
        feed = create_feed(settings.redis_url, settings.redis_prefix, bus.origin, redis_state)
        await _started(stack, feed.start, feed.close)
        redis_state.announce_on(feed)
        sampler = OpsSampler(db.engine, replica=bus.origin)
        await _started(stack, sampler.start, sampler.close)
        # Sizes and free disk for the gauges, measured in the background: a scrape only reads them.
        storage_gauges = StorageGauges(db.read_engine, settings)
        await _started(stack, storage_gauges.start, storage_gauges.close)
        # SLOW_SQL_MS and LOG_SQL, and the log level: the settings', or an override in force (PUT /admin/log-level).
        sql_log = SqlLog()
        sql_log.watch(db.engine)
        sql_log.watch(db.autocommit_engine)
        log_levels = LogLevelControl(settings, override_store(settings), sql_log, replica=bus.origin)
        bus.subscribe(log_levels.on_event)
        await _started(stack, log_levels.start, log_levels.close)
        auth = Authenticator(
            settings=settings,
            read_sessionmaker=db.read_sessionmaker,
            cache=AuthCache(ttl_seconds=settings.auth_cache_seconds),
            secret=settings.effective_jwt_secret(),
        )
        bus.subscribe(auth.cache.on_event)
        redis_state.subscribe(auth.cache.on_redis)
        # The people front-ends' keys act for, cached as keys are and emptied by the same signals.
        acting = Acting(
            settings=settings, sessionmaker=db.sessionmaker, read_sessionmaker=db.read_sessionmaker, feed=feed
        )
        bus.subscribe(acting.on_event)
        redis_state.subscribe(acting.on_redis)
        upstreams = UpstreamRegistry(load_config(settings), settings, sessionmaker=db.read_sessionmaker, feed=feed)
        bus.subscribe(upstreams.on_event)
        await _started(stack, upstreams.start, upstreams.close)
        request_log = RequestLogWriter(
            db.sessionmaker,
            flush_seconds=settings.request_log_flush_seconds,
            sqlite=statements if isinstance(statements, SqliteStore) else None,
        )
        await _started(stack, request_log.start, request_log.close)
        prices = PriceTable(
            db.read_sessionmaker,
            currency=settings.price_currency,
            signals_reach_us=lambda: redis_state.configured and redis_state.up,
        )
        bus.subscribe(prices.on_event)
        await _started(stack, prices.start, prices.close)
        rate_limiter = RateLimiter(settings, db.sessionmaker, feed=feed, redis=redis_state)
        bus.subscribe(rate_limiter.on_event)
        await _started(stack, rate_limiter.start, rate_limiter.close)
        streams = StreamRegistry(
            replica=bus.origin,
            redis_url=settings.redis_url,
            prefix=settings.redis_prefix,
            feed=feed,
            redis_state=redis_state,
        )
        bus.subscribe(streams.on_event)
        await _started(stack, streams.start, streams.close_all)
        quotas = Quotas(
            statements,
            replica=bus.origin,
            timezone=settings.quota_timezone,
            wait_seconds=settings.quota_wait_seconds,
            checkpoint_seconds=settings.quota_checkpoint_seconds,
            currency=settings.price_currency,
        )
        await _started(stack, quotas.start, quotas.close)
        budgets = BudgetRegistry(db.read_sessionmaker)
        bus.subscribe(budgets.on_event)
        budgets.signals_reach_us = lambda: redis_state.configured and redis_state.up
        await _started(stack, budgets.start, budgets.close)
        # Before serving: a process restarted after a crash settles what its previous self held at once.
        recovery = ReservationRecovery(
            db.sessionmaker,
            replica=bus.origin,
            interval_seconds=settings.replica_heartbeat_seconds,
            checkpoint_seconds=settings.quota_checkpoint_seconds,
            feed=feed,
        )
        await _started(stack, recovery.start, recovery.close)
        stored_responses = StoredResponses(statements, db.sessionmaker, db.read_sessionmaker)
        access = AccessPolicy(db.read_sessionmaker, default=settings.model_access_default)
        bus.subscribe(access.on_event)
        access.signals_reach_us = lambda: redis_state.configured and redis_state.up
        await _started(stack, access.start, access.close)
        blocked = BlocklistLoader(blocklist if blocklist is not None else Blocklist(), db.read_sessionmaker)
        bus.subscribe(blocked.on_event)
        blocked.signals_reach_us = lambda: redis_state.configured and redis_state.up
        await _started(stack, blocked.start, blocked.close)
        gateway = Gateway(
            settings=settings,
            quotas=quotas,
            rate_limiter=rate_limiter,
            upstreams=upstreams,
            streams=streams,
            request_log=request_log,
            prices=prices,
            feed=feed,
            stored_responses=stored_responses,
            access=access,
            budgets=budgets,
        )
        # Closed before the request log and the statements: settlements still under way write through them.
        stack.push_async_callback(_logged(gateway.drain))
        jobs = JobRunner(
            settings,
            db.sessionmaker,
            replica=bus.origin,
            jobs=job_definitions(settings, upstreams=upstreams, rate_limiter=rate_limiter),
        )
        runtime = Runtime(
            settings=settings,
            db=db,
            statements=statements,
            bus=bus,
            redis=redis_state,
            feed=feed,
            auth=auth,
            upstreams=upstreams,
            request_log=request_log,
            rate_limiter=rate_limiter,
            streams=streams,
            gateway=gateway,
            jobs=jobs,
            components=components,
        )
        await _started(stack, jobs.start, jobs.close)
        # Off the request path: it reads the counters the requests write, every BUDGET_ALERT_CHECK_SECONDS.
        alerts = AlertWatcher(settings, db.sessionmaker, replica=bus.origin, feed=feed)
        await _started(stack, alerts.start, alerts.close)
        health = HealthCheck(
            database=db,
            settings=settings,
            streams=streams,
            upstreams=upstreams,
            replica=Replica(id=bus.origin, started_at=started_at),  # the uptime counts from the start of the start
            redis=redis_state,
            rate_limiter=rate_limiter,
            shutdown=SHUTDOWN,
        )
        changes = UpstreamChanges(db.sessionmaker, registry=upstreams, bus=bus, feed=feed, settings=settings)

        # Live reload: each part whose settings may change takes the new Settings through one hook.
        def provide(new: Settings) -> None:
            components.add(new, Settings)

        reloader = Reloader(
            settings,
            replica=bus.origin,
            sessionmaker=db.sessionmaker,
            upstreams=upstreams,
            bus=bus,
            feed=feed,
            hooks=[
                auth.apply_settings,
                alerts.apply_settings,
                log_levels.apply_settings,
                _reads_settings(runtime, gateway, rate_limiter, jobs, health, changes),
                provide,
            ],
        )
        bus.subscribe(reloader.on_event)
        stack.push_async_callback(_logged(reloader.close))
        components.add(reloader)
        if os.environ.get(PREPARED_ENV) == "1":  # under `gatehouse serve`; an app embedded in tests leaves it be
            _listen_for_sighup(stack, reloader)
            _drain_on_sigterm(stack, settings, streams)
        for part in (settings, db, auth, upstreams, changes, request_log, rate_limiter, streams, gateway, jobs, health):
            components.add(part)
        components.add(stored_responses)
        components.add(log_levels)
        components.add(alerts)
        components.add(access)
        components.add(acting)
        components.add(blocked.blocklist)
        components.add(blocked)
        components.add(statements, StatementStore)
        components.add(bus, EventBus)
        components.add(redis_state)
        components.add(feed, EventFeed)
        components.add(prices)
        components.add(ServedModels(lambda: [model.name for model in upstreams.models()]))
        components.add(SpendReader(spend_by_user))
        # Everything built so far lives as long as the process: keep it out of the garbage collector's
        # full passes, which would otherwise walk it again and again, a pause of tens of ms under load.
        gc.collect()
        gc.freeze()
        log.info(
            "started",
            version=__version__,
            database=db.dialect,
            redis=bool(settings.redis_url),
            upstreams=list(upstreams.providers),
            demo_only=upstreams.is_demo_only(),
        )
        yield runtime
    log.info("stopped")
