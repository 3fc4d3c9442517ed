"""Which Gatehouse processes are serving a database: each writes a heartbeat row every few seconds.

`gatehouse backup restore` reads it to refuse overwriting a database that is in use; `GET /admin/jobs` shows
it; quota recovery (limits/recovery.py) settles the reservations of the processes it finds dead. A process that
stops cleanly deletes its row; one that crashed goes stale after STALE_BEATS of its own heartbeat intervals, or
is known dead at once by a process on the same host (its pid no longer runs, or is the new process's own).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import socket
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse import __version__
from gatehouse.core.logging import get_logger
from gatehouse.core.tasks import every, logged
from gatehouse.core.tasks import stop as stop_task
from gatehouse.db.base import utcnow
from gatehouse.jobs.models import ReplicaBeat

log = get_logger("gatehouse.replicas")
HEARTBEAT_SECONDS = 5.0  # REPLICA_HEARTBEAT_SECONDS
STALE_BEATS = 4  # heartbeats missed in a row: the process is gone (or cannot reach the database)
FORGET_SECONDS = 24 * 3600.0  # stale rows older than this are deleted by the next heartbeat of any replica


@functools.cache
def host_identity() -> str | None:
    """Where a pid means one process: the host name, its boot and the pid namespace (Linux). Two containers with
    the same host name but their own pid namespaces differ; a process restarted in its container does not. None
    where the kernel does not say (then only a stale heartbeat tells a replica is gone)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return hashlib.sha256(f"{socket.gethostname()}\0{boot}\0{namespace}".encode()).hexdigest()[:32]


async def database_now(session: AsyncSession) -> datetime:
    """The database server's clock (PostgreSQL), so that replicas whose clocks differ judge heartbeats alike; on
    SQLite, which only ever serves one machine, this machine's."""
    if session.get_bind().dialect.name == "postgresql":
        now = (await session.execute(select(func.now()))).scalar_one()
        return now.astimezone(UTC) if isinstance(now, datetime) else utcnow()
    return utcnow()


def stale_after(row: ReplicaBeat) -> timedelta:
    """How long after its last heartbeat a replica counts as gone."""
    return timedelta(seconds=STALE_BEATS * (row.heartbeat_seconds or HEARTBEAT_SECONDS))


def is_live(row: ReplicaBeat, now: datetime) -> bool:
    """Whether the replica wrote a heartbeat recently enough."""
    return row.seen_at >= now - stale_after(row)


def known_dead(row: ReplicaBeat, *, me: str) -> bool:
    """Whether a replica is certainly gone before its heartbeat goes stale: it ran on this host (same pid
    namespace) and its pid no longer runs, or is this very process's (which is not that replica)."""
    if row.id == me or row.host_id is None or row.host_id != host_identity():
        return False  # another host, or one that cannot tell (host_identity() is None there)
    if row.pid == os.getpid():
        return True
    try:
        os.kill(row.pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists, and belongs to someone else
        return False
    return False


async def forget_stale(session: AsyncSession, now: datetime) -> int:
    """Delete the rows of processes gone for more than FORGET_SECONDS; how many went."""
    forgotten = ReplicaBeat.seen_at < now - timedelta(seconds=FORGET_SECONDS)
    result = await session.execute(delete(ReplicaBeat).where(forgotten))
    return int(getattr(result, "rowcount", 0) or 0)


async def live_replicas(session: AsyncSession) -> Sequence[ReplicaBeat]:
    """The processes whose heartbeat is fresh (within STALE_BEATS of their own intervals), oldest first."""
    now = await database_now(session)
    query = select(ReplicaBeat).order_by(ReplicaBeat.started_at)
    return [row for row in (await session.execute(query)).scalars().all() if is_live(row, now)]


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
        async with self._sessionmaker() as session, session.begin():
            now = await database_now(session)
            result = await session.execute(
                update(ReplicaBeat).where(ReplicaBeat.id == self.replica).values(seen_at=now)
            )
            if not getattr(result, "rowcount", 0):
                session.add(
                    ReplicaBeat(
                        id=self.replica,
                        host=socket.gethostname()[:255],
                        host_id=host_identity(),
                        pid=os.getpid(),
                        heartbeat_seconds=self._interval,
                        version=__version__,
                        started_at=now,
                        seen_at=now,
                    )
                )
                await forget_stale(session, now)
