"""What the retention purge removes of accounts: console sessions and invites past their expiry."""

from __future__ import annotations

from typing import Any

from gatehouse.accounts.invites.models import Invite
from gatehouse.auth.models import UserSession
from gatehouse.jobs.purge import PurgeContext, delete_in_batches


async def purge_expired(context: PurgeContext) -> dict[str, Any]:
    """Expired console sessions and invites."""
    now = context.now
    sessions = await delete_in_batches(context.sessionmaker, UserSession.id, UserSession.expires_at < now)
    invites = await delete_in_batches(
        context.sessionmaker, Invite.id, Invite.expires_at.is_not(None) & (Invite.expires_at < now)
    )
    return {"expired_sessions": sessions, "expired_invites": invites}
