"""Routes: /admin/upstreams (list, provision, change, delete) and their overrides. Each change is in force on
this replica when the answer comes (upstreams/service.py), so the answer shows its effect."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Response

from gatehouse.auth.access import require
from gatehouse.auth.roles import Role
from gatehouse.core.components import provided
from gatehouse.deps import ActorDep, BusDep, SessionDep
from gatehouse.errors import errors
from gatehouse.fields import IdPath
from gatehouse.upstreams import service
from gatehouse.upstreams.errors import (
    InvalidUpstream,
    UpstreamCheckFailed,
    UpstreamManagedByConfig,
    UpstreamNameTaken,
    UpstreamNotFound,
)
from gatehouse.upstreams.models import UpstreamRow
from gatehouse.upstreams.registry import UpstreamRegistry
from gatehouse.upstreams.schemas import OverrideRequest, UpstreamCreate, UpstreamRead, UpstreamUpdate
from gatehouse.upstreams.service import UpstreamChanges

router = APIRouter(prefix="/admin/upstreams", tags=["upstreams"])
RegistryDep = Annotated[UpstreamRegistry, provided(UpstreamRegistry)]
ChangesDep = Annotated[UpstreamChanges, provided(UpstreamChanges)]
MONITOR = [require(Role.MONITOR)]
ADMIN = [require(Role.ADMIN)]


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


def _read(row: UpstreamRow, registry: UpstreamRegistry, replica: str) -> UpstreamRead:
    live = registry.get(row.name)
    loaded = live is not None and live.id == row.id
    view = registry.describe(live) if live is not None and loaded else _NOT_LOADED
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
        replica=replica,
    )


@router.get("", response_model=list[UpstreamRead], dependencies=MONITOR)
async def list_upstreams(session: SessionDep, registry: RegistryDep, bus: BusDep) -> list[UpstreamRead]:
    """Every stored upstream with this replica's view of its health."""
    return [_read(row, registry, bus.origin) for row in await service.list_rows(session)]


@router.post(
    "",
    responses=errors(InvalidUpstream, UpstreamNameTaken, UpstreamCheckFailed),
    response_model=UpstreamRead,
    status_code=201,
    dependencies=ADMIN,
)
async def create_upstream(body: UpstreamCreate, changes: ChangesDep, actor: ActorDep, bus: BusDep) -> UpstreamRead:
    """Provision an upstream: validated (unique name, known kind, the URL answers unless `skip_check`)."""
    values = {"name": body.name, **body.values()}
    row = await changes.create(actor=actor, values=values, skip_check=body.skip_check)
    return _read(row, changes.registry, bus.origin)


@router.get("/{upstream_id}", responses=errors(UpstreamNotFound), response_model=UpstreamRead, dependencies=MONITOR)
async def get_upstream(upstream_id: IdPath, session: SessionDep, registry: RegistryDep, bus: BusDep) -> UpstreamRead:
    """One upstream with this replica's view of its health."""
    return _read(await service.get_row(session, upstream_id), registry, bus.origin)


@router.patch(
    "/{upstream_id}",
    responses=errors(
        UpstreamNotFound, InvalidUpstream, UpstreamNameTaken, UpstreamCheckFailed, UpstreamManagedByConfig
    ),
    response_model=UpstreamRead,
    dependencies=ADMIN,
)
async def update_upstream(
    upstream_id: IdPath, body: UpstreamUpdate, changes: ChangesDep, actor: ActorDep, bus: BusDep
) -> UpstreamRead:
    """Change an API-provisioned upstream (requests already on it finish on the old settings)."""
    row = await changes.update(upstream_id, actor=actor, changes=body.values(), skip_check=body.skip_check)
    return _read(row, changes.registry, bus.origin)


@router.delete(
    "/{upstream_id}", responses=errors(UpstreamNotFound, UpstreamManagedByConfig), status_code=204, dependencies=ADMIN
)
async def delete_upstream(upstream_id: IdPath, changes: ChangesDep, actor: ActorDep) -> Response:
    """Remove an API-provisioned upstream; requests already on it finish."""
    await changes.delete(upstream_id, actor=actor)
    return Response(status_code=204)


@router.put(
    "/{upstream_id}/override", responses=errors(UpstreamNotFound), response_model=UpstreamRead, dependencies=ADMIN
)
async def put_override(
    upstream_id: IdPath, body: OverrideRequest, changes: ChangesDep, actor: ActorDep, bus: BusDep
) -> UpstreamRead:
    """Force a state: `down` stops new requests at once, `drain` lets requests on it finish, `up` ignores probes."""
    row = await changes.set_override(upstream_id, actor=actor, state=body.state, reason=body.reason)
    return _read(row, changes.registry, bus.origin)


@router.delete(
    "/{upstream_id}/override", responses=errors(UpstreamNotFound), response_model=UpstreamRead, dependencies=ADMIN
)
async def delete_override(upstream_id: IdPath, changes: ChangesDep, actor: ActorDep, bus: BusDep) -> UpstreamRead:
    """Return the upstream to its probed state."""
    row = await changes.clear_override(upstream_id, actor=actor)
    return _read(row, changes.registry, bus.origin)
