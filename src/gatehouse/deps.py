"""Dependency wiring every route shares: the database session, the caller, their audit actor, and (through
`provided`) the process's components. Domain-specific components are asked for where they are used."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.auth.access import resolve_principal
from gatehouse.auth.actor import Actor, actor_for
from gatehouse.auth.principal import Principal
from gatehouse.core.bus import EventBus
from gatehouse.core.components import components_of, provided
from gatehouse.core.feed import EventFeed
from gatehouse.db.database import Database
from gatehouse.db.session import run_after_commit
from gatehouse.settings import Settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request: committed after the route returns (before the response), else rolled back; the
    after-commit callbacks (bus signals, feed events) run once it is committed."""
    async with components_of(request).get(Database).sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
    await run_after_commit(session)


async def get_principal(request: Request) -> Principal:
    """The authenticated caller (resolved once per request by the route's access declaration)."""
    return await resolve_principal(request)


async def get_actor(request: Request) -> Actor:
    """The authenticated caller as an audit actor."""
    return actor_for(request, await resolve_principal(request))


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
ActorDep = Annotated[Actor, Depends(get_actor)]
SettingsDep = Annotated[Settings, provided(Settings)]
DatabaseDep = Annotated[Database, provided(Database)]
BusDep = Annotated[EventBus, provided(EventBus)]
FeedDep = Annotated[EventFeed, provided(EventFeed)]
