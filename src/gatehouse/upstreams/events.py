"""The audit events of upstreams (docs/audit.md). Settings are recorded without keys or header values."""

from __future__ import annotations

from typing import Any

from gatehouse.audit.events import Event

Settings = dict[str, Any]  # upstreams/service.py audit_view: kind, base_url, api_key_set, models...


class _UpstreamEvent(Event):
    target_type = "upstream"
    target = "upstream_id"
    upstream_id: int


class UpstreamCreatedEvent(_UpstreamEvent):
    """An upstream was provisioned through the API (`checked`: its URL answered first)."""

    action = "upstream.created"
    name: str
    settings: Settings
    checked: bool

    def details(self) -> dict[str, Any]:
        return {"name": self.name, **self.settings, "checked": self.checked}


class UpstreamUpdatedEvent(_UpstreamEvent):
    """An API-provisioned upstream changed: each changed setting before and after."""

    action = "upstream.updated"
    changes: dict[str, dict[str, Any]]

    def details(self) -> dict[str, Any]:
        return dict(self.changes)


class UpstreamDeletedEvent(_UpstreamEvent):
    """An API-provisioned upstream was removed (requests already on it finished)."""

    action = "upstream.deleted"
    name: str
    settings: Settings

    def details(self) -> dict[str, Any]:
        return {"name": self.name, **self.settings}


class UpstreamOverrideSetEvent(_UpstreamEvent):
    """An operator forced an upstream's state (down, drain or up); on the live feed as `upstream.override`."""

    action = "upstream.override_set"
    feed_kind = "upstream.override"
    name: str
    state: str
    before: str | None
    reason: str

    def feed_data(self, actor: Any) -> dict[str, Any]:
        return {
            "upstream": self.name,
            "id": self.upstream_id,
            "state": self.state,
            "reason": self.reason,
            "by": actor.label,
        }


class UpstreamOverrideClearedEvent(_UpstreamEvent):
    """An override was lifted: the upstream follows its probes again."""

    action = feed_kind = "upstream.override_cleared"
    name: str
    before: str
    reason_was: str | None

    def feed_data(self, actor: Any) -> dict[str, Any]:
        return {"upstream": self.name, "id": self.upstream_id, "was": self.before, "by": actor.label}


class _Seeding(_UpstreamEvent):
    name: str
    settings: Settings

    def details(self) -> dict[str, Any]:
        return {"name": self.name, **self.settings}


class UpstreamSeededEvent(_Seeding):
    """An upstream of GATEHOUSE_CONFIG or the env shortcuts was stored at start."""

    action = "upstream.seeded"


class UpstreamReseededEvent(_Seeding):
    """A stored upstream was changed to what GATEHOUSE_CONFIG or the env now say."""

    action = "upstream.reseeded"


class UpstreamUnseededEvent(_UpstreamEvent):
    """A stored upstream was removed because GATEHOUSE_CONFIG and the env no longer have it."""

    action = "upstream.unseeded"
    name: str
    reason: str
