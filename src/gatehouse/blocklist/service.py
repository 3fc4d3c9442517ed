"""The blocklist: list, add, remove (each audited; every replica told after commit), and what the replicas load.
Services flush; the caller commits."""

from __future__ import annotations

from datetime import datetime, timedelta
from ipaddress import ip_network

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.audit.service import record
from gatehouse.auth.actor import Actor
from gatehouse.blocklist.errors import AlreadyBlocked, BlockNotFound, BlocksCaller, InvalidExpiry, InvalidNetwork
from gatehouse.blocklist.events import BlocklistAddedEvent, BlocklistEvent, BlocklistRemovedEvent
from gatehouse.blocklist.matcher import client_address, normalise
from gatehouse.blocklist.models import BlockedNetwork
from gatehouse.core.bus import EventBus, Signal
from gatehouse.core.feed import EventFeed
from gatehouse.db.base import utcnow
from gatehouse.db.session import signal_after_commit

MAX_ENTRIES = 100_000  # every replica holds them in memory
MAX_MINUTES = 10 * 366 * 24 * 60  # ten years: longer is "until removed", which is no expiry at all


async def list_entries(session: AsyncSession) -> list[BlockedNetwork]:
    """Every entry, expired ones included until the purge removes them, newest first."""
    return list((await session.execute(select(BlockedNetwork).order_by(BlockedNetwork.id.desc()))).scalars())


async def active_entries(session: AsyncSession, *, now: datetime | None = None) -> list[tuple[str, datetime | None]]:
    """What the replicas enforce: (network, expiry) of every entry not yet expired."""
    now = now or utcnow()
    query = select(BlockedNetwork.network, BlockedNetwork.expires_at).where(
        or_(BlockedNetwork.expires_at.is_(None), BlockedNetwork.expires_at > now)
    )
    return [(network, expires_at) for network, expires_at in (await session.execute(query)).all()]


def expiry(*, expires_at: datetime | None, minutes: int | None, now: datetime) -> datetime | None:
    """When an entry stops blocking: `expires_at`, or `minutes` from now, or never; a clear error otherwise."""
    if expires_at is not None and minutes is not None:
        raise InvalidExpiry("Give `expires_at` or `minutes`, not both (CLI: --until or --minutes).", param="minutes")
    if minutes is not None:
        if not 1 <= minutes <= MAX_MINUTES:
            raise InvalidExpiry(
                f"`minutes` must be between 1 and {MAX_MINUTES} (ten years); leave it out to block until removed.",
                param="minutes",
            )
        return now + timedelta(minutes=minutes)
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise InvalidExpiry(
                "`expires_at` has no time zone: give one, e.g. 2026-12-31T18:00:00Z.", param="expires_at"
            )
        if expires_at <= now:
            raise InvalidExpiry(
                f"`expires_at` {expires_at.isoformat()} is in the past: give a later time, or `minutes`.",
                param="expires_at",
            )
    return expires_at


def _network(value: str) -> str:
    try:
        return normalise(value)
    except ValueError as exc:
        raise InvalidNetwork(f"`network`: {exc}.", param="network") from None


async def add(
    session: AsyncSession,
    *,
    bus: EventBus,
    actor: Actor,
    network: str,
    reason: str,
    expires_at: datetime | None = None,
    minutes: int | None = None,
    force: bool = False,
    feed: EventFeed | None = None,
) -> BlockedNetwork:
    """Block a network (audited; in force on every replica once committed). Refused with 409 when it contains the
    caller's own address (unless `force`) or is listed already."""
    normal = _network(network)
    reason = reason.strip()
    if not reason:
        raise InvalidNetwork("`reason` is empty: say why this network is blocked (operators read it).", param="reason")
    now = utcnow()
    until = expiry(expires_at=expires_at, minutes=minutes, now=now)
    caller = client_address(actor.ip) if actor.ip else None
    if caller is not None and caller in ip_network(normal) and not force:
        raise BlocksCaller(
            f"{normal} contains your own address {actor.ip}: blocking it would lock you out of this gateway (every "
            'route but the health probes). Block a narrower network, or send "force": true (CLI: --force) if that '
            "is what you mean.",
            param="network",
        )
    existing = (
        await session.execute(select(BlockedNetwork).where(BlockedNetwork.network == normal))
    ).scalar_one_or_none()
    if existing is not None:
        raise AlreadyBlocked(
            f"{normal} is on the blocklist already (entry {existing.id}): remove it first "
            f"(DELETE /admin/blocklist/{existing.id}) to change its reason or expiry.",
            param="network",
        )
    count = len((await session.execute(select(BlockedNetwork.id).limit(MAX_ENTRIES))).all())
    if count >= MAX_ENTRIES:
        raise InvalidNetwork(
            f"The blocklist holds {MAX_ENTRIES} entries already: block wider networks, or remove old entries."
        )
    row = BlockedNetwork(
        network=normal,
        reason=reason,
        created_at=now,
        created_by=actor.user_id,
        created_by_label=actor.label,
        expires_at=until,
    )
    session.add(row)
    await session.flush()
    await record(session, _event(BlocklistAddedEvent, row), actor=actor, feed=feed)
    signal_after_commit(session, bus, Signal.BLOCKLIST_CHANGED, {})
    return row


async def remove(
    session: AsyncSession, *, bus: EventBus, actor: Actor, block_id: int, feed: EventFeed | None = None
) -> BlockedNetwork:
    """Take an entry off the blocklist (audited; out of force on every replica once committed); 404 if none."""
    row = await session.get(BlockedNetwork, block_id)
    if row is None:
        raise BlockNotFound(f"No blocklist entry with id {block_id}: list them with GET /admin/blocklist.")
    await record(session, _event(BlocklistRemovedEvent, row), actor=actor, feed=feed)
    await session.delete(row)
    await session.flush()
    signal_after_commit(session, bus, Signal.BLOCKLIST_CHANGED, {})
    return row


def _event(kind: type[BlocklistEvent], row: BlockedNetwork) -> BlocklistEvent:
    return kind(block_id=row.id, network=row.network, reason=row.reason, expires_at=row.expires_at)
