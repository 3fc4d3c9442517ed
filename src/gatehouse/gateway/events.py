"""The audit events of the gateway (docs/audit.md)."""

from __future__ import annotations

from typing import Any

from gatehouse.audit.events import Event


class StreamTerminatedEvent(Event):
    """An operator ended an in-flight request on whichever replica held it; on the live feed too."""

    action = feed_kind = "stream.terminated"
    target_type = "stream"
    target = "stream_id"
    stream_id: str
    reason: str
    user_id: int
    model: str
    replica: str

    def feed_data(self, actor: Any) -> dict[str, Any]:
        return {"id": self.stream_id, "reason": self.reason, "by": actor.label, "replica": self.replica}
