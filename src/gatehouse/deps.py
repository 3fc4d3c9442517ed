"""All dependency wiring for routes: the runtime, the database session, the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.accounts.auth import resolve_principal
from gatehouse.accounts.principal import Principal
from gatehouse.audit.service import Actor
from gatehouse.db.session import run_after_commit
from gatehouse.fields import MAX_DB_INT
from gatehouse.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    """The process's Runtime, set up by the app's lifespan."""
    runtime: Runtime = request.app.state.runtime
    return runtime


async def _runtime(request: Request) -> Runtime:
    # async on purpose: FastAPI runs a plain `def` dependency in its thread pool, a thread hop (and, under
    # load, a wait for the GIL) on every request for what is one attribute read.
    return get_runtime(request)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request: committed after the route returns (before the response), else rolled back."""
    runtime = get_runtime(request)
    async with runtime.sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
    await run_after_commit(session)


async def get_principal(request: Request) -> Principal:
    """The authenticated caller (resolved once per request by the route's access declaration)."""
    return await resolve_principal(request, get_runtime(request))


def client_ip(request: Request) -> str | None:
    """The caller's address (uvicorn resolves X-Forwarded-For from FORWARDED_ALLOW_IPS proxies)."""
    return request.client.host if request.client else None


def actor_for(request: Request, principal: Principal | None) -> Actor:
    """Who is acting in this request, for the audit log."""
    request_id = getattr(request.state, "request_id", None) or request.scope.get("state", {}).get("request_id")
    if principal is None:
        return Actor(type="anonymous", ip=client_ip(request), request_id=request_id)
    return Actor(
        type="key" if principal.via_key else "user",
        user_id=principal.user_id,
        key_id=principal.key_id,
        label=principal.email,
        ip=client_ip(request),
        request_id=request_id,
    )


async def get_actor(request: Request) -> Actor:
    """The authenticated caller as an audit actor."""
    return actor_for(request, await resolve_principal(request, get_runtime(request)))


RuntimeDep = Annotated[Runtime, Depends(_runtime)]
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
ActorDep = Annotated[Actor, Depends(get_actor)]
# A database id in a path: out of range is a 422 naming the parameter, not an overflow in the driver.
IdPath = Annotated[int, Path(ge=1, le=MAX_DB_INT)]
