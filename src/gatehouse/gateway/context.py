"""What serving a gateway request takes, in one object the composition root builds: the settings, the quotas,
the rate limiter, the upstreams, the live streams, the request log, the price table, the live feed and the stored
responses; and the settlements still running, which the shutdown waits for."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from gatehouse.accounts.access.policy import AccessPolicy
from gatehouse.core.feed import EventFeed
from gatehouse.core.tracing import Tracer
from gatehouse.gateway.requestlog import RequestLogWriter
from gatehouse.gateway.stored.service import StoredResponses
from gatehouse.gateway.streams.registry import StreamRegistry
from gatehouse.limits.budgets import BudgetRegistry
from gatehouse.limits.prices.table import PriceTable
from gatehouse.limits.quotas import Quotas
from gatehouse.limits.ratelimit import RateLimiter
from gatehouse.settings import Settings
from gatehouse.upstreams.registry import UpstreamRegistry


@dataclass(eq=False, repr=False)
class Gateway:
    """The gateway's collaborators (one per process)."""

    settings: Settings
    quotas: Quotas  # the quota reservation, its progress and its settlement
    rate_limiter: RateLimiter
    upstreams: UpstreamRegistry
    streams: StreamRegistry
    request_log: RequestLogWriter
    prices: PriceTable  # every price version, in memory: a request's cost at settlement
    feed: EventFeed
    stored_responses: StoredResponses  # the Responses API's stored responses, per user
    access: AccessPolicy  # who may use which model
    budgets: BudgetRegistry  # which budgets beside the user's day have a limit
    # OpenTelemetry (core/tracing.py), set by the app when OTEL_ENABLED is true; None: tracing is off and costs nothing.
    tracer: Tracer | None = None
    background: set[asyncio.Task[None]] = field(default_factory=set)

    def track(self, task: asyncio.Task[None]) -> None:
        """Keep a task that must finish before shutdown (a settlement outliving its request)."""
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def drain(self) -> None:
        """Wait for the tracked tasks (at shutdown, before the request log and the database close)."""
        if self.background:
            await asyncio.gather(*list(self.background), return_exceptions=True)
