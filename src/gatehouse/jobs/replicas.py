"""Which Gatehouse processes are serving a database: each writes a heartbeat row every few seconds.

`gatehouse backup restore` reads it to refuse overwriting a database that is in use; `GET /admin/jobs` shows
it. A process that stops cleanly deletes its row; one that crashed goes stale after STALE_SECONDS.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse import __version__
from gatehouse.core.logging import get_logger
from gatehouse.core.tasks import every, logged
from gatehouse.core.tasks import stop as stop_task
from gatehouse.db.base import utcnow
from gatehouse.jobs.models import ReplicaBeat

log = get_logger("gatehouse.replicas")
HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 20.0  # four missed heartbeats: the process is gone (or cannot reach the database)
FORGET_SECONDS = 24 * 3600.0  # stale rows older than this are deleted by the next heartbeat of any replica


async def forget_stale(session: AsyncSession, now: datetime) -> int:
    """Delete the rows of processes gone for more than FORGET_SECONDS; how many went."""
    forgotten = ReplicaBeat.seen_at < now - timedelta(seconds=FORGET_SECONDS)
    result = await session.execute(delete(ReplicaBeat).where(forgotten))
    return int(getattr(result, "rowcount", 0) or 0)


async def live_replicas(session: AsyncSession) -> Sequence[ReplicaBeat]:
    """The processes that wrote a heartbeat within STALE_SECONDS, oldest first."""
    fresh_since = utcnow() - timedelta(seconds=STALE_SECONDS)
    query = select(ReplicaBeat).where(ReplicaBeat.seen_at >= fresh_since).order_by(ReplicaBeat.started_at)
    return (await session.execute(query)).scalars().all()


class Heartbeat:
    """Keeps this process's `replica` row fresh while it serves."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        replica: str,
        interval_seconds: float = HEARTBEAT_SECONDS,
    ) -> None:
        self._sessionmaker = sessionmaker
        self.replica = replica
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Write the first heartbeat now (so a restore started right after sees this process), then keep beating."""
        await logged(self.beat, log=log, event="replica_heartbeat_failed")
        self._task = asyncio.create_task(
            every(self._interval, self.beat, log=log, event="replica_heartbeat_failed"), name="gatehouse-heartbeat"
        )

    async def close(self) -> None:
        """Stop beating and remove this process's row: it no longer serves."""
        await stop_task(self._task)
        self._task = None
        async with self._sessionmaker() as session, session.begin():
            await session.execute(delete(ReplicaBeat).where(ReplicaBeat.id == self.replica))

    async def beat(self) -> None:
        """Refresh this process's row (creating it if a restore or a purge removed it)."""
        now = utcnow()
        async with self._sessionmaker() as session, session.begin():
            result = await session.execute(
                update(ReplicaBeat).where(ReplicaBeat.id == self.replica).values(seen_at=now)
            )
            if not getattr(result, "rowcount", 0):
                session.add(
                    ReplicaBeat(
                        id=self.replica,
                        host=socket.gethostname()[:255],
                        pid=os.getpid(),
                        version=__version__,
                        started_at=now,
                        seen_at=now,
                    )
                )
                await forget_stale(session, now)
