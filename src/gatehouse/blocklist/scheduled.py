"""What the retention purge removes of the blocklist: entries past their expiry (they no longer block)."""

from __future__ import annotations

from typing import Any

from gatehouse.blocklist.models import BlockedNetwork
from gatehouse.jobs.purge import PurgeContext, delete_in_batches


async def purge_expired_blocks(context: PurgeContext) -> dict[str, Any]:
    """Blocklist entries past their expiry."""
    expired = (BlockedNetwork.expires_at.is_not(None)) & (BlockedNetwork.expires_at <= context.now)
    return {"expired_blocks": await delete_in_batches(context.sessionmaker, BlockedNetwork.id, expired)}
