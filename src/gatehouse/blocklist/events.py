"""The audit events of the blocklist (docs/audit.md); each is mirrored on the live feed as `blocklist.changed`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gatehouse.audit.events import Event
from gatehouse.auth.actor import Actor


class BlocklistEvent(Event):
    """What every blocklist event records: the entry, its network, why, and until when."""

    target_type = "blocked_network"
    target = "block_id"
    feed_kind = "blocklist.changed"
    block_id: int
    network: str
    reason: str
    expires_at: datetime | None

    def feed_data(self, actor: Actor) -> dict[str, Any]:
        """As every event shows it, and whether the entry was added or removed (both share one feed kind)."""
        return {**super().feed_data(actor), "change": self.action.rsplit(".", 1)[1]}


class BlocklistAddedEvent(BlocklistEvent):
    """A network was blocked (refused on every route but the health probes, on every replica)."""

    action = "blocklist.added"


class BlocklistRemovedEvent(BlocklistEvent):
    """A network was taken off the blocklist."""

    action = "blocklist.removed"
