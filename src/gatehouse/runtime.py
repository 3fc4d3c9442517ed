"""The per-process objects the app shares: settings, database, bus, caches, upstreams, writers."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from gatehouse.accounts.principal import AuthCache
from gatehouse.core.bus import EventBus
from gatehouse.core.feed import EventFeed
from gatehouse.settings import Settings

if TYPE_CHECKING:
    from gatehouse.db.statements import StatementStore
    from gatehouse.gateway.requestlog import RequestLogWriter
    from gatehouse.limits.ratelimit import RateLimiter
    from gatehouse.ops.jobs import JobRunner
    from gatehouse.ops.streams import StreamRegistry
    from gatehouse.upstreams.registry import UpstreamRegistry


@dataclass
class Runtime:
    """Everything a request or a job needs beyond its own arguments; one per process."""

    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    read_engine: AsyncEngine  # the same pool; SQLite transactions on it begin deferred (db/engine.py read_only)
    read_sessionmaker: async_sessionmaker[AsyncSession]  # for lookups that never write (auth, readiness)
    autocommit_engine: AsyncEngine  # a small pool of its own, for single atomic statements
    statements: StatementStore  # runs the quota reservation and settlement (db/statements.py)
    bus: EventBus
    events: EventFeed  # the live feed behind GET /admin/events
    auth_cache: AuthCache
    upstreams: UpstreamRegistry
    request_log: RequestLogWriter
    rate_limiter: RateLimiter
    streams: StreamRegistry
    secret: str
    head_revisions: tuple[str, ...]
    jobs: JobRunner | None = None  # set once the runtime exists (jobs get the runtime)
    started_at: float = field(default_factory=time.time)
    background: set[asyncio.Task[None]] = field(default_factory=set)

    def track(self, task: asyncio.Task[None]) -> None:
        """Keep a task that must finish before shutdown (e.g. a settlement outliving its request)."""
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def drain(self) -> None:
        """Wait for tracked tasks (at shutdown, before the database closes)."""
        if self.background:
            await asyncio.gather(*list(self.background), return_exceptions=True)
