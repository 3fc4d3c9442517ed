"""Routes: /admin/upstreams (list, provision, change, delete) and their overrides."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from sqlalchemy import select

from gatehouse.auth.access import require
from gatehouse.auth.roles import Role
from gatehouse.deps import ActorDep, RuntimeDep, SessionDep
from gatehouse.fields import IdPath
from gatehouse.runtime import Runtime
from gatehouse.upstreams import service
from gatehouse.upstreams.models import UpstreamRow
from gatehouse.upstreams.schemas import OverrideRequest, UpstreamCreate, UpstreamRead, UpstreamUpdate

router = APIRouter(tags=["upstreams"])


# What an upstream this replica has not loaded (yet) shows of its live state.
_NOT_LOADED: dict[str, Any] = {
    "state": "unknown",
    "probe": "unknown",
    "last_error": None,
    "latency_ms": None,
    "checked_at": None,
    "consecutive_failures": 0,
    "breaker_open": False,
    "override": None,
    "inflight": 0,
    "models": [],
}


def _read(row: UpstreamRow, runtime: Runtime) -> UpstreamRead:
    live = runtime.upstreams.get(row.name)
    loaded = live is not None and live.id == row.id
    view = runtime.upstreams.describe(live) if live is not None and loaded else _NOT_LOADED
    return UpstreamRead(
        id=row.id,
        name=row.name,
        kind=row.kind,
        base_url=row.base_url,
        source=row.source,
        api_key_set=bool(row.api_key) or (live is not None and bool(live.config.resolved_api_key())),
        api_key_env=row.api_key_env or None,
        models=list(row.models or []),
        discover=row.discover,
        headers=sorted(row.headers or {}),
        connect_timeout=row.connect_timeout,
        read_timeout=row.read_timeout,
        max_connections=row.max_connections,
        created_at=row.created_at,
        updated_at=row.updated_at,
        state=view["state"],
        probe=view["probe"],
        last_error=view["last_error"],
        latency_ms=view["latency_ms"],
        checked_at=view["checked_at"],
        consecutive_failures=view["consecutive_failures"],
        breaker_open=view["breaker_open"],
        override=view["override"],
        inflight=view["inflight"],
        served_models=view["models"],
        replica=runtime.bus.origin,
    )


async def _refreshed(session: SessionDep, runtime: Runtime, row: UpstreamRow) -> UpstreamRead:
    """Commit, apply on this replica at once (the others follow on the bus), and show the result."""
    await session.commit()
    await runtime.upstreams.reload()
    return _read(row, runtime)


@router.get("/admin/upstreams", response_model=list[UpstreamRead], dependencies=[require(Role.MONITOR)])
async def list_upstreams(session: SessionDep, runtime: RuntimeDep) -> list[UpstreamRead]:
    """Every stored upstream with this replica's view of its health."""
    rows = (await session.execute(select(UpstreamRow).order_by(UpstreamRow.id))).scalars()
    return [_read(row, runtime) for row in rows]


@router.post("/admin/upstreams", response_model=UpstreamRead, status_code=201, dependencies=[require(Role.ADMIN)])
async def create_upstream(
    body: UpstreamCreate, session: SessionDep, runtime: RuntimeDep, actor: ActorDep
) -> UpstreamRead:
    """Provision an upstream: validated (unique name, known kind, the URL answers unless `skip_check`)."""
    values = {"name": body.name, **body.values()}
    row = await service.create(
        session, values=values, skip_check=body.skip_check, settings=runtime.settings, bus=runtime.bus, actor=actor
    )
    return await _refreshed(session, runtime, row)


@router.get("/admin/upstreams/{upstream_id}", response_model=UpstreamRead, dependencies=[require(Role.MONITOR)])
async def get_upstream(upstream_id: IdPath, session: SessionDep, runtime: RuntimeDep) -> UpstreamRead:
    """One upstream with this replica's view of its health."""
    return _read(await service.get_row(session, upstream_id), runtime)


@router.patch("/admin/upstreams/{upstream_id}", response_model=UpstreamRead, dependencies=[require(Role.ADMIN)])
async def update_upstream(
    upstream_id: IdPath, body: UpstreamUpdate, session: SessionDep, runtime: RuntimeDep, actor: ActorDep
) -> UpstreamRead:
    """Change an API-provisioned upstream (requests already on it finish on the old settings)."""
    row = await service.get_row(session, upstream_id)
    await service.update(
        session,
        row,
        changes=body.values(),
        skip_check=body.skip_check,
        settings=runtime.settings,
        bus=runtime.bus,
        actor=actor,
    )
    return await _refreshed(session, runtime, row)


@router.delete("/admin/upstreams/{upstream_id}", status_code=204, dependencies=[require(Role.ADMIN)])
async def delete_upstream(upstream_id: IdPath, session: SessionDep, runtime: RuntimeDep, actor: ActorDep) -> Response:
    """Remove an API-provisioned upstream; requests already on it finish."""
    row = await service.get_row(session, upstream_id)
    await service.delete(session, row, bus=runtime.bus, actor=actor)
    await session.commit()
    await runtime.upstreams.reload()
    return Response(status_code=204)


@router.put("/admin/upstreams/{upstream_id}/override", response_model=UpstreamRead, dependencies=[require(Role.ADMIN)])
async def put_override(
    upstream_id: IdPath, body: OverrideRequest, session: SessionDep, runtime: RuntimeDep, actor: ActorDep
) -> UpstreamRead:
    """Force a state: `down` stops new requests at once, `drain` lets requests on it finish, `up` ignores probes."""
    row = await service.get_row(session, upstream_id)
    await service.set_override(session, row, state=body.state, reason=body.reason, bus=runtime.bus, actor=actor)
    read = await _refreshed(session, runtime, row)
    runtime.feed.publish(
        "upstream.override",
        {"upstream": row.name, "id": row.id, "state": body.state.value, "reason": body.reason, "by": actor.label},
    )
    return read


@router.delete(
    "/admin/upstreams/{upstream_id}/override", response_model=UpstreamRead, dependencies=[require(Role.ADMIN)]
)
async def delete_override(
    upstream_id: IdPath, session: SessionDep, runtime: RuntimeDep, actor: ActorDep
) -> UpstreamRead:
    """Return the upstream to its probed state."""
    row = await service.get_row(session, upstream_id)
    had = row.override_state
    await service.clear_override(session, row, bus=runtime.bus, actor=actor)
    read = await _refreshed(session, runtime, row)
    if had:
        runtime.feed.publish(
            "upstream.override_cleared", {"upstream": row.name, "id": row.id, "was": had, "by": actor.label}
        )
    return read
