"""Transactions and what runs once they commit: the bus signals and feed events of a change are published only
after its rows are in the database (a rolled-back change never happened)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse.core.bus import EventBus, Signal

AfterCommit = Callable[[], Awaitable[None]]


def after_commit(session: AsyncSession, callback: AfterCommit) -> None:
    """Run `callback` once the session's transaction has committed (e.g. publish a bus event)."""
    session.info.setdefault("after_commit", []).append(callback)


async def run_after_commit(session: AsyncSession) -> None:
    """Called by whoever commits: fire the callbacks registered with `after_commit`."""
    callbacks: list[AfterCommit] = session.info.pop("after_commit", [])
    for callback in callbacks:
        await callback()


@asynccontextmanager
async def transaction(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A unit of work: committed when the block ends (then its after-commit callbacks run), rolled back on error."""
    async with sessionmaker() as session:
        async with session.begin():
            yield session
        await run_after_commit(session)


def signal_after_commit(session: AsyncSession, bus: EventBus, signal: Signal, data: dict[str, Any]) -> None:
    """Tell every replica (this one first) once the change is committed."""

    async def publish() -> None:
        await bus.publish(signal, data)

    after_commit(session, publish)
