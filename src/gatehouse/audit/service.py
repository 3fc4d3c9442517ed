"""Recording, querying and verifying the audit log. `record` runs in the caller's transaction, so an
event exists exactly when its change does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.audit.chain import GENESIS, PURGE_ACTION, Break, Verifier, canonical_details, purge_anchor, row_hash
from gatehouse.audit.events import AuditPurgedEvent, Event, stored_names, stored_names_under
from gatehouse.audit.models import AuditEvent, AuditHead
from gatehouse.auth.actor import Actor
from gatehouse.core.feed import EventFeed
from gatehouse.db.base import utcnow
from gatehouse.db.session import after_commit

HEAD_ID = 1
VERIFY_BATCH = 2000


async def record(session: AsyncSession, event: Event, *, actor: Actor, feed: EventFeed | None = None) -> AuditEvent:
    """Append one event to the chain, in the caller's transaction; one with a `feed_kind` also goes on the live
    feed once that transaction has committed (a change rolled back never happened)."""
    target_id = event.target_id()
    # An event about one thing that names none this time (a login for an unknown email) has no target at all.
    untargeted = event.target is not None and target_id is None
    row = await append(
        session,
        actor=actor,
        action=event.action,
        target_type=None if untargeted else event.target_type,
        target_id=target_id,
        details=event.details(),
    )
    kind = event.feed_kind
    if feed is not None and kind is not None:
        data = event.feed_data(actor)

        async def publish() -> None:
            feed.publish(kind, data)

        after_commit(session, publish)
    return row


async def append(
    session: AsyncSession,
    *,
    actor: Actor,
    action: str,
    target_type: str | None = None,
    target_id: int | str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one row to the chain as given, in the caller's transaction. Changes are recorded as typed events
    through `record`; this is what `record` writes with, and what writes rows that have no event class (tests
    building a chain of a given shape)."""
    # Locking the head serializes appends across replicas (PostgreSQL row lock; SQLite has one writer).
    head = await session.get(AuditHead, HEAD_ID, with_for_update=True)
    if head is None:
        head = AuditHead(id=HEAD_ID, last_id=0, last_hash=GENESIS)
        session.add(head)
    fields: dict[str, Any] = {
        "created_at": utcnow(),
        "actor_type": actor.type,
        "actor_id": actor.user_id,
        "actor_key_id": actor.key_id,
        "actor_label": actor.label,
        "client_ip": actor.ip,
        "action": action,
        "target_type": target_type,
        "target_id": str(target_id) if target_id is not None else None,
        "details": canonical_details(details),
        "request_id": actor.request_id,
    }
    event = AuditEvent(**fields, prev_hash=head.last_hash, hash=row_hash(head.last_hash, fields))
    session.add(event)
    await session.flush()
    head.last_id, head.last_hash = event.id, event.hash
    await session.flush()
    return event


@dataclass(frozen=True)
class AuditFilter:
    """What to list; every field is optional."""

    action: str | None = None
    actor_id: int | None = None
    target_type: str | None = None
    target_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def list_events(
    session: AsyncSession,
    *,
    where: AuditFilter,
    before_id: int | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> Sequence[AuditEvent]:
    """Events matching `where`, newest first (or oldest first after `after_id`), at most `limit`."""
    query = select(AuditEvent)
    if where.action:
        # "key." lists every key event; "key.created" only those. Rows stored under an action's legacy name are
        # found under either name (audit/events.py).
        if where.action.endswith("."):
            legacy = stored_names_under(where.action)
            prefix = AuditEvent.action.startswith(where.action, autoescape=True)
            query = query.where(or_(prefix, AuditEvent.action.in_(legacy)) if legacy else prefix)
        else:
            query = query.where(AuditEvent.action.in_(stored_names(where.action)))
    if where.actor_id is not None:
        query = query.where(AuditEvent.actor_id == where.actor_id)
    if where.target_type:
        query = query.where(AuditEvent.target_type == where.target_type)
    if where.target_id:
        query = query.where(AuditEvent.target_id == where.target_id)
    if where.since:
        query = query.where(AuditEvent.created_at >= where.since)
    if where.until:
        query = query.where(AuditEvent.created_at < where.until)
    if after_id is not None:
        query = query.where(AuditEvent.id > after_id).order_by(AuditEvent.id)
    else:
        if before_id is not None:
            query = query.where(AuditEvent.id < before_id)
        query = query.order_by(AuditEvent.id.desc())
    return (await session.execute(query.limit(limit))).scalars().all()


@dataclass(frozen=True)
class Verification:
    """The result of `verify_chain`."""

    checked: int
    broken: Break | None

    @property
    def ok(self) -> bool:
        return self.broken is None


async def verify_chain(session: AsyncSession) -> Verification:
    """Walk the whole chain in id order (in batches) and report the first break."""
    anchors = [
        anchor
        for details in (
            await session.execute(select(AuditEvent.details).where(AuditEvent.action == PURGE_ACTION))
        ).scalars()
        if (anchor := purge_anchor(details)) is not None
    ]
    verifier = Verifier(anchors)
    last_id = 0
    while True:
        batch = (
            (
                await session.execute(
                    select(AuditEvent).where(AuditEvent.id > last_id).order_by(AuditEvent.id).limit(VERIFY_BATCH)
                )
            )
            .scalars()
            .all()
        )
        if not batch:
            break
        for row in batch:
            broken = verifier.check(row)
            if broken is not None:
                return Verification(verifier.count, broken)
        last_id = batch[-1].id
        session.expunge_all()
    head = await session.get(AuditHead, HEAD_ID)
    head_id = head.last_id if head is not None and head.last_id else None
    return Verification(verifier.count, verifier.finish(head_id, head.last_hash if head else None))


@dataclass(frozen=True)
class Purge:
    """What a retention purge removed."""

    removed: int
    last_removed_id: int | None


async def purge_before(session: AsyncSession, *, cutoff: datetime, actor: Actor, limit: int | None = None) -> Purge:
    """Remove the oldest events, those before `cutoff` (at most `limit` of them), and keep what remains
    verifiable, in the caller's transaction.

    Only a prefix of the chain (in id order) is removed: everything before the first event at or after
    `cutoff`. The chained `audit.purged` event appended afterwards records the hash of the last removed event,
    which is where the oldest remaining event points (audit/chain.py), so `gatehouse audit verify` still
    passes and still notices any other deletion. With `limit`, call it again (in a new transaction) until it
    removes fewer: each call is a short transaction with its own anchor, so a purge of millions of events
    never blocks audited changes (or, on SQLite, every writer) for long.
    """
    await session.get(AuditHead, HEAD_ID, with_for_update=True)  # no append interleaves with the purge
    first_kept = (
        await session.execute(select(func.min(AuditEvent.id)).where(AuditEvent.created_at >= cutoff))
    ).scalar_one_or_none()
    older = select(AuditEvent.id, AuditEvent.hash)
    if first_kept is not None:
        older = older.where(AuditEvent.id < first_kept)
    last = None
    if limit is not None:
        last = (await session.execute(older.order_by(AuditEvent.id).offset(limit - 1).limit(1))).first()
    if last is None:
        last = (await session.execute(older.order_by(AuditEvent.id.desc()).limit(1))).first()
    if last is None:
        return Purge(removed=0, last_removed_id=None)
    last_id, last_hash = last
    result = await session.execute(delete(AuditEvent).where(AuditEvent.id <= last_id))
    removed = int(getattr(result, "rowcount", 0) or 0)
    event = AuditPurgedEvent(last_purged_hash=last_hash, last_purged_id=last_id, purged=removed, before=cutoff)
    await record(session, event, actor=actor)
    return Purge(removed=removed, last_removed_id=last_id)
