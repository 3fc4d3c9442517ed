"""Keeps this replica's in-memory blocklist (matcher.py) in step with the database.

Reloaded on the bus's BLOCKLIST_CHANGED signal (a change on any replica, or through the CLI with REDIS_URL set),
after a Redis outage (RECONNECTED: signals may have been missed), and as a safety net every SAFETY_SECONDS; when
signals cannot reach this replica at all (no Redis: a CLI change in another process, or Redis down) every
UNSIGNALLED_SECONDS instead. Expiry needs no reload: the matcher checks it on a hit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse.blocklist.matcher import Blocklist
from gatehouse.blocklist.service import active_entries
from gatehouse.core.bus import Signal
from gatehouse.core.logging import get_logger
from gatehouse.core.tasks import every, logged, stop

log = get_logger("gatehouse.blocklist")
SAFETY_SECONDS = 30.0
UNSIGNALLED_SECONDS = 1.0


class BlocklistLoader:
    """Loads `blocklist` from the database (see the module docstring)."""

    def __init__(self, blocklist: Blocklist, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.blocklist = blocklist
        self.sessionmaker = sessionmaker
        # Whether bus signals reach this replica (Redis configured and up).
        self.signals_reach_us: Callable[[], bool] = lambda: False
        self._task: asyncio.Task[None] | None = None
        self._reloading = asyncio.Lock()
        self._loaded_at = 0.0
        self.loaded = 0

    async def reload(self) -> None:
        """Read the entries not yet expired and swap them in."""
        async with self._reloading:
            async with self.sessionmaker() as session:
                entries = await active_entries(session)
            before = self.blocklist.count
            self.blocklist.replace(entries)
            self._loaded_at = time.monotonic()
            self.loaded += 1
        if before != len(entries):
            log.info("blocklist_loaded", entries=len(entries))

    async def start(self) -> None:
        await self.reload()
        self._task = asyncio.create_task(
            every(UNSIGNALLED_SECONDS, self._reload_when_due, log=log, event="blocklist_reload_failed"),
            name="gatehouse-blocklist-reload",
        )

    async def close(self) -> None:
        await stop(self._task)
        self._task = None

    async def _reload_when_due(self) -> None:
        # A failure (the database away) leaves the list in memory standing; the next round retries.
        due = SAFETY_SECONDS if self.signals_reach_us() else UNSIGNALLED_SECONDS
        if time.monotonic() - self._loaded_at >= due:
            await self.reload()

    async def on_event(self, kind: str, data: dict[str, Any]) -> None:
        """Bus handler: a change somewhere, or signals that may have been missed."""
        if kind in (Signal.BLOCKLIST_CHANGED, Signal.RECONNECTED):
            await logged(self.reload, log=log, event="blocklist_reload_failed")
