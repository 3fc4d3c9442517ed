"""Routes: /admin/streams (every in-flight gateway request, on every replica) and terminate."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from gatehouse.accounts.errors import RoleNotAllowed
from gatehouse.auth.access import require
from gatehouse.auth.roles import Role
from gatehouse.core.components import provided
from gatehouse.deps import ActorDep, BusDep, FeedDep, SessionDep
from gatehouse.errors import errors
from gatehouse.fields import Text
from gatehouse.gateway.errors import StreamNotFound, StreamsUnavailable
from gatehouse.gateway.streams import service
from gatehouse.gateway.streams.registry import StreamRegistry

router = APIRouter(prefix="/admin/streams", tags=["streams"])
MONITOR = [require(Role.MONITOR)]
StreamsDep = Annotated[StreamRegistry, provided(StreamRegistry)]
StreamId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$", description="A stream id from GET /admin/streams.")]


class TerminateRequest(BaseModel):
    reason: Text = Field(min_length=1, max_length=500, description="Shown to the client and kept in the audit log.")


@router.get("", dependencies=MONITOR)
async def list_streams(streams: StreamsDep) -> dict[str, Any]:
    """Every in-flight gateway request: id, user, key, model, upstream, start, tokens so far, replica; `complete` is
    false while Redis is unavailable (only this replica's are listed then)."""
    items, complete = await streams.everywhere()
    return {"items": items, "complete": complete}


@router.post(
    "/{stream_id}/terminate",
    responses=errors(StreamNotFound, RoleNotAllowed, StreamsUnavailable),
    dependencies=MONITOR,
)
async def terminate_stream(
    stream_id: StreamId,
    body: TerminateRequest,
    actor: ActorDep,
    session: SessionDep,
    streams: StreamsDep,
    bus: BusDep,
    feed: FeedDep,
) -> dict[str, Any]:
    """End a request on whichever replica holds it: the client gets `terminated_by_operator`, usage is settled."""
    return await service.terminate(
        session, streams=streams, bus=bus, feed=feed, actor=actor, stream_id=stream_id, reason=body.reason
    )
