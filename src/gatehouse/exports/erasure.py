"""Deletion requests: delete a user and their data, or anonymise them and keep the numbers; audited.

Delete: the user row goes, and with it their keys, console sessions and daily usage counters, and their
request-log rows. Anonymise: usage and request rows stay (they are counted in totals), the account becomes
`deleted-<id>@invalid` with no name, password or block note, disabled, its keys revoked and renamed, its
sessions deleted. Either way their stored responses (the Responses API's conversations) are deleted, invites
addressed to their email lose the address (and are revoked when still open), and every replica stops accepting
their keys and sessions at once (through the bus).

The audit log is hash-chained and never edited: events about them (where they acted, that target them or
their keys or invites, or labelled with their email) keep what they recorded, their email among it, until
the retention purge removes them; `audit_events_kept` counts them. The `user.deleted` / `user.anonymised`
event records what was removed and, when the data was exported first, the export's id and SHA-256.

Deleting a superadmin locks the active superadmins' rows before counting them (two deletions at once cannot
remove the last two).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from gatehouse.accounts.errors import SelfDelete
from gatehouse.accounts.invites.models import Invite
from gatehouse.accounts.users import service as users
from gatehouse.accounts.users.moderation import ensure_not_last_superadmin
from gatehouse.audit.models import AuditEvent
from gatehouse.audit.service import record
from gatehouse.auth.actor import Actor
from gatehouse.auth.models import ApiKey, User, UserSession
from gatehouse.auth.roles import Role, UserStatus
from gatehouse.core.bus import EventBus
from gatehouse.db.base import utcnow
from gatehouse.exports.entities import audit_of_user
from gatehouse.exports.events import UserAnonymisedEvent, UserDeletedEvent
from gatehouse.gateway.models import RequestLog
from gatehouse.gateway.requestlog import RequestLogWriter
from gatehouse.gateway.stored import service as stored
from gatehouse.limits.models import BudgetCounter, UsageCounter

Mode = Literal["delete", "anonymise"]


@dataclass(frozen=True)
class Erasure:
    """What a deletion request did, in numbers (also the audit event's details)."""

    user_id: int
    mode: Mode
    requests: int  # request-log rows deleted (0 when anonymised: kept)
    stored_responses: int  # stored responses deleted (their conversations: deleted either way)
    usage_days: int  # usage counters deleted (0 when anonymised: kept)
    keys: int  # keys deleted, or revoked when anonymised
    sessions: int
    invites: int  # invites addressed to their email, address removed
    audit_events_kept: int  # events about them (actor, target, label), kept as they are until the retention purge


def placeholder_email(user_id: int) -> str:
    """The address an anonymised account keeps (unique, and `.invalid` can never receive mail)."""
    return f"deleted-{user_id}@invalid"


async def _count(session: AsyncSession, query: Any) -> int:
    return int((await session.execute(query)).scalar_one())


def _audit_naming(user_id: int, email: str) -> ColumnElement[bool]:
    """Audit events that keep something of the user: where they acted, that target them, their keys or the
    invites to their email (what an export for them holds), or whose actor label is their email."""
    return or_(audit_of_user(user_id, email), func.lower(AuditEvent.actor_label) == email.lower())


def _rows(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


async def erase_user(
    session: AsyncSession,
    *,
    bus: EventBus,
    actor: Actor,
    actor_role: Role | None,
    user_id: int,
    mode: Mode = "delete",
    by_user_id: int | None = None,
    reason: str | None = None,
    export: dict[str, Any] | None = None,
    request_log: RequestLogWriter | None = None,
) -> Erasure:
    """Delete or anonymise a user, audited, in the caller's transaction (`actor_role` None: the CLI operator).

    Refused for oneself, for a superadmin unless by a superadmin, and for the last active superadmin.
    `export` (id, sha256, bytes) names the export made first, recorded in the audit event. `request_log`: this
    process's buffer of request-log rows, written first, so that their last requests are deleted too.
    """
    if request_log is not None:
        await request_log.flush()
    user = await users.get_or_raise(session, user_id=user_id)
    if by_user_id is not None and user.id == by_user_id:
        raise SelfDelete("You cannot delete your own account: ask another administrator.")
    users.ensure_may_manage(actor_role=actor_role, target_role=user.role, doing="delete")
    await ensure_not_last_superadmin(session, user, "delete")  # locks the superadmins' rows first
    email = user.email
    now = utcnow()
    kept = await _count(session, select(func.count()).select_from(AuditEvent).where(_audit_naming(user.id, email)))
    open_invites = and_(Invite.email == email, Invite.revoked_at.is_(None), Invite.uses < Invite.max_uses)
    await session.execute(update(Invite).where(open_invites).values(revoked_at=now))
    invites = _rows(
        await session.execute(update(Invite).where(Invite.email == email).values(email=placeholder_email(user.id)))
    )
    sessions = _rows(await session.execute(delete(UserSession).where(UserSession.user_id == user.id)))
    stored_responses = await stored.delete_of_user(session, user_id=user.id)
    if mode == "anonymise":
        keys = _rows(
            await session.execute(
                update(ApiKey)
                .where(ApiKey.user_id == user.id)
                .values(revoked_at=func.coalesce(ApiKey.revoked_at, now), name="deleted")
            )
        )
        user.email = placeholder_email(user.id)
        user.display_name = ""
        user.password_hash = None
        user.block_reason = None
        user.status = UserStatus.DISABLED.value
        requests = usage_days = 0
    else:
        requests = _rows(await session.execute(delete(RequestLog).where(RequestLog.user_id == user.id)))
        usage_days = _rows(await session.execute(delete(UsageCounter).where(UsageCounter.user_id == user.id)))
        key_ids = select(ApiKey.id).where(ApiKey.user_id == user.id).scalar_subquery()
        # Their budgets' counters (their month, their keys' days and months): no foreign key holds them.
        await session.execute(
            delete(BudgetCounter).where(
                ((BudgetCounter.scope == "u") & (BudgetCounter.subject_id == user.id))
                | ((BudgetCounter.scope == "k") & BudgetCounter.subject_id.in_(key_ids))
            )
        )
        keys = _rows(await session.execute(delete(ApiKey).where(ApiKey.user_id == user.id)))
        # Core, not session.delete: the ORM would load relationships (lazy="raise") to null them out.
        await session.execute(delete(User).where(User.id == user.id))
        session.expunge(user)
    await session.flush()
    users.announce_changed(session, bus, user_id)
    erasure = Erasure(
        user_id=user_id,
        mode=mode,
        requests=requests,
        stored_responses=stored_responses,
        usage_days=usage_days,
        keys=keys,
        sessions=sessions,
        invites=invites,
        audit_events_kept=kept,
    )
    counts = {k: v for k, v in asdict(erasure).items() if k != "mode"}
    event = UserDeletedEvent if mode == "delete" else UserAnonymisedEvent
    await record(session, event(**counts, reason=reason, export=export), actor=actor)
    return erasure
