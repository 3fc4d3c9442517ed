"""Routes: /admin/streams (every in-flight gateway request, on every replica) and terminate."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from gatehouse.audit.service import record
from gatehouse.auth.access import require
from gatehouse.auth.roles import Role
from gatehouse.db.session import after_commit
from gatehouse.deps import ActorDep, RuntimeDep, SessionDep
from gatehouse.errors import NotFound
from gatehouse.fields import Text
from gatehouse.gateway.streams.registry import TERMINATE, TERMINATED
from gatehouse.runtime import Runtime

router = APIRouter(tags=["streams"])
StreamId = Path(pattern=r"^[0-9a-f]{16}$", description="A stream id from GET /admin/streams.")


class TerminateRequest(BaseModel):
    reason: Text = Field(min_length=1, max_length=500, description="Shown to the client and kept in the audit log.")


async def _announce(runtime: Runtime, data: dict[str, Any]) -> None:
    runtime.feed.publish(TERMINATED, data)


@router.get("/admin/streams", dependencies=[require(Role.MONITOR)])
async def list_streams(runtime: RuntimeDep) -> dict[str, Any]:
    """Every in-flight gateway request: id, user, key, model, upstream, start, tokens so far, replica."""
    return {"items": await runtime.streams.all()}


@router.post("/admin/streams/{stream_id}/terminate", dependencies=[require(Role.MONITOR)])
async def terminate_stream(
    body: TerminateRequest, actor: ActorDep, session: SessionDep, runtime: RuntimeDep, stream_id: str = StreamId
) -> dict[str, Any]:
    """End a request on whichever replica holds it: the client gets `terminated_by_operator`, usage is settled."""
    local = runtime.streams.get_local(stream_id)
    target: dict[str, Any] | None
    if local is not None:
        target = local.public()
    else:
        target = next((s for s in await runtime.streams.all() if s["id"] == stream_id), None)
        if target is None:
            raise NotFound(
                f"No live stream {stream_id}: it may have ended (see GET /admin/streams).", code="stream_not_found"
            )
    await record(
        session,
        actor=actor,
        action="stream.terminated",
        target_type="stream",
        target_id=stream_id,
        details={
            "reason": body.reason,
            "user_id": target["user_id"],
            "model": target["model"],
            "replica": target["replica"],
        },
    )
    # Once the audit row is committed: the bus delivers locally at once and to the replica holding the stream.
    after_commit(session, lambda: runtime.bus.publish(TERMINATE, {"id": stream_id, "reason": body.reason}))
    announced = {"id": stream_id, "reason": body.reason, "by": actor.label, "replica": target["replica"]}
    after_commit(session, lambda: _announce(runtime, announced))
    return {
        "id": stream_id,
        "status": "terminated" if local is not None else "terminating",
        "replica": target["replica"],
    }
