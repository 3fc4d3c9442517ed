"""Ending a live stream from any replica: audited, then the bus carries it to the replica that holds it, which
closes the upstream connection (the relay answers `terminated_by_operator` and settles usage as usual).

While Redis is unreachable a stream held by another replica can be neither found nor reached: the answer is a
503 `streams_unavailable` (nothing is recorded), never a 404 that would say the stream ended."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.accounts import managing
from gatehouse.accounts.users.moderation import may_moderate
from gatehouse.audit.service import record
from gatehouse.auth.actor import Actor
from gatehouse.auth.models import User
from gatehouse.core.bus import EventBus, Signal
from gatehouse.core.feed import EventFeed
from gatehouse.db.session import signal_after_commit
from gatehouse.gateway.errors import StreamNotFound, StreamsUnavailable
from gatehouse.gateway.events import StreamTerminatedEvent
from gatehouse.gateway.streams.registry import StreamRegistry

UNAVAILABLE_RETRY_SECONDS = 5  # Retry-After of a 503 streams_unavailable


async def terminate(
    session: AsyncSession,
    *,
    streams: StreamRegistry,
    bus: EventBus,
    feed: EventFeed | None,
    actor: Actor,
    stream_id: str,
    reason: str,
) -> dict[str, Any]:
    """End a stream wherever it runs: {id, status (terminated here, or terminating elsewhere), replica}."""
    local = streams.get_local(stream_id)
    target: dict[str, Any] | None
    if local is not None:
        target = local.public()
    else:
        everywhere, complete = await streams.everywhere()
        target = next((s for s in everywhere if s["id"] == stream_id), None)
        if target is None and not complete:
            raise StreamsUnavailable(
                f"Stream {stream_id} is not on this replica, and Redis is unavailable, so the other replicas' streams "
                f"can be neither found nor reached. Retry in {UNAVAILABLE_RETRY_SECONDS} s, or send this request to "
                "the replica that holds the stream.",
                headers={"retry-after": str(UNAVAILABLE_RETRY_SECONDS)},
            )
        if target is None:
            raise StreamNotFound(f"No live stream {stream_id}: it may have ended (see GET /admin/streams).")
    # As for a block: only a superadmin ends a superadmin's request, and anyone else only those of users ranked
    # below them (a monitor: plain users').
    owner = await session.get(User, target["user_id"])
    if owner is not None:
        may_moderate(await managing.role_of(session, actor=actor), owner.role, "terminate the streams of")
    event = StreamTerminatedEvent(
        stream_id=stream_id,
        reason=reason,
        user_id=target["user_id"],
        model=target["model"],
        replica=target["replica"],
    )
    # Once the audit row is committed: the bus delivers locally at once and to the replica holding the stream,
    # then the live feed says it was done (after-commit callbacks run in the order they were registered).
    signal_after_commit(session, bus, Signal.STREAM_TERMINATE, {"id": stream_id, "reason": reason})
    await record(session, event, actor=actor, feed=feed)
    return {
        "id": stream_id,
        "status": "terminated" if local is not None else "terminating",
        "replica": target["replica"],
    }
