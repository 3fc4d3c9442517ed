"""The ops sampler: each process stores, about once a minute, how many database statements it ran and how long
they took. Kept in `ops_sample`, so GET /admin/metrics reports SQL latency over days, across restarts and replicas."""

from __future__ import annotations

import asyncio

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from gatehouse.core.logging import get_logger
from gatehouse.core.metrics import UNCOUNTED_OPTION, statement_totals
from gatehouse.core.tasks import every
from gatehouse.core.tasks import stop as stop_task
from gatehouse.db.base import utcnow
from gatehouse.monitoring.models import OpsSample

log = get_logger("gatehouse.sampler")
SAMPLE_SECONDS = 60.0


class OpsSampler:
    """Writes one `ops_sample` row per interval: the statements run since the previous row, when there were any."""

    def __init__(self, engine: AsyncEngine, *, replica: str, interval_seconds: float = SAMPLE_SECONDS) -> None:
        # Its own INSERT stays out of the totals, so an idle process writes no rows at all.
        self._engine = engine.execution_options(**{UNCOUNTED_OPTION: True})
        self._replica = replica
        self._interval = interval_seconds
        self._stored = statement_totals()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Begin sampling; what ran before now is not this process's traffic to report."""
        self._stored = statement_totals()
        # A failed round is logged; the counts keep accumulating, so the next row covers its interval too.
        self._task = asyncio.create_task(
            every(self._interval, self.sample, log=log, event="ops_sample_failed"), name="gatehouse-ops-sampler"
        )

    async def close(self) -> None:
        """Stop, and store what was measured since the last row (at shutdown)."""
        await stop_task(self._task)
        self._task = None
        await self.sample()

    async def sample(self) -> bool:
        """Store the statements run since the previous row; False (and no row) when there were none."""
        async with self._lock:
            statements, seconds = statement_totals()
            count = statements - self._stored[0]
            if count <= 0:
                return False
            async with self._engine.begin() as conn:
                await conn.execute(
                    insert(OpsSample).values(
                        created_at=utcnow(),
                        replica=self._replica,
                        statements=count,
                        statement_seconds=max(seconds - self._stored[1], 0.0),
                    )
                )
            self._stored = (statements, seconds)
            return True
