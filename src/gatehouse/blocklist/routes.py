"""Routes: /admin/blocklist (list, add) and /admin/blocklist/{id} (remove)."""

from __future__ import annotations

from fastapi import APIRouter, status

from gatehouse.auth.access import require
from gatehouse.auth.roles import Role
from gatehouse.blocklist import service
from gatehouse.blocklist.errors import AlreadyBlocked, BlockNotFound, BlocksCaller, InvalidExpiry, InvalidNetwork
from gatehouse.blocklist.schemas import BlockCreate, BlockRead
from gatehouse.db.base import utcnow
from gatehouse.deps import ActorDep, BusDep, FeedDep, SessionDep
from gatehouse.errors import errors
from gatehouse.fields import IdPath

router = APIRouter()
MONITOR = [require(Role.MONITOR)]
ADMIN = [require(Role.ADMIN)]


@router.get("/admin/blocklist", response_model=list[BlockRead], tags=["admin"], dependencies=MONITOR)
async def list_blocks(session: SessionDep) -> list[BlockRead]:
    """Every blocked network, newest first; expired entries show `expired: true` until the retention purge."""
    now = utcnow()
    return [BlockRead.of(row, now=now) for row in await service.list_entries(session)]


@router.post(
    "/admin/blocklist",
    responses=errors(InvalidNetwork, InvalidExpiry, BlocksCaller, AlreadyBlocked),
    response_model=BlockRead,
    status_code=status.HTTP_201_CREATED,
    tags=["admin"],
    dependencies=ADMIN,
)
async def add_block(body: BlockCreate, session: SessionDep, actor: ActorDep, bus: BusDep, feed: FeedDep) -> BlockRead:
    """Block an address or a CIDR network on every route but the health probes, on every replica within a second;
    until `expires_at`, for `minutes`, or until removed. A network holding your own address needs `force`."""
    row = await service.add(
        session,
        bus=bus,
        feed=feed,
        actor=actor,
        network=body.network,
        reason=body.reason,
        expires_at=body.expires_at,
        minutes=body.minutes,
        force=body.force,
    )
    return BlockRead.of(row, now=utcnow())


@router.delete(
    "/admin/blocklist/{block_id}",
    responses=errors(BlockNotFound),
    response_model=BlockRead,
    tags=["admin"],
    dependencies=ADMIN,
)
async def remove_block(block_id: IdPath, session: SessionDep, actor: ActorDep, bus: BusDep, feed: FeedDep) -> BlockRead:
    """Take a network off the blocklist, on every replica within a second."""
    row = await service.remove(session, bus=bus, feed=feed, actor=actor, block_id=block_id)
    return BlockRead.of(row, now=utcnow())
