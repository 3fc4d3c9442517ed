"""The audit events of exports and deletion requests (docs/audit.md)."""

from __future__ import annotations

from typing import Any

from gatehouse.audit.events import Event


class ExportCreatedEvent(Event):
    """An export was asked for; recorded (and committed) before its first byte. Its target is the one user it
    covers, when it covers one."""

    action = "export.created"
    target_type = "user"
    target = "user_id"
    user_id: int | None
    export_id: str
    entities: list[str]
    format: str
    pii: str
    reason: str | None
    filters: dict[str, Any]


class ExportCompletedEvent(Event):
    """An export's last byte went out: its rows per entity, size and SHA-256 (an export cut short has none)."""

    action = "export.completed"
    target_type = "user"
    target = "user_id"
    user_id: int | None
    export_id: str
    rows: dict[str, int]
    bytes: int
    sha256: str | None


class _Erased(Event):
    target_type = "user"
    target = "user_id"
    user_id: int
    requests: int
    stored_responses: int
    usage_days: int
    keys: int
    sessions: int
    invites: int
    audit_events_kept: int
    reason: str | None
    export: dict[str, Any] | None


class UserDeletedEvent(_Erased):
    """A deletion request: the user and their keys, sessions, usage, request log and stored responses were deleted;
    `export` names the export made first, if any."""

    action = "user.deleted"


class UserAnonymisedEvent(_Erased):
    """A deletion request kept as numbers: the account became `deleted-<id>@invalid`, disabled, keys revoked; their
    stored responses were deleted."""

    action = "user.anonymised"
