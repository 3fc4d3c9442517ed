"""Request and response models of the blocklist."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from gatehouse.blocklist.models import BlockedNetwork
from gatehouse.fields import Text


class BlockCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    network: Text = Field(
        min_length=1,
        max_length=64,
        description="An IPv4 or IPv6 address (blocked as a /32 or /128) or a CIDR network, e.g. 203.0.113.0/24.",
    )
    reason: Text = Field(min_length=1, max_length=500, description="Why (operators see it; the client never does).")
    expires_at: datetime | None = Field(default=None, description="When the block ends (with a time zone).")
    minutes: int | None = Field(default=None, description="Or: the block ends this many minutes from now.")
    force: bool = Field(default=False, description="Block even a network that contains your own address.")


class BlockRead(BaseModel):
    id: int
    network: str
    reason: str
    created_at: datetime
    created_by: int | None
    created_by_label: str | None
    expires_at: datetime | None
    expired: bool = Field(description="Past its expiry: it no longer blocks, and the retention purge removes it.")

    @classmethod
    def of(cls, row: BlockedNetwork, *, now: datetime) -> BlockRead:
        """The entry as the API shows it, expired or not at `now`."""
        return cls(
            id=row.id,
            network=row.network,
            reason=row.reason,
            created_at=row.created_at,
            created_by=row.created_by,
            created_by_label=row.created_by_label,
            expires_at=row.expires_at,
            expired=row.expires_at is not None and row.expires_at <= now,
        )
