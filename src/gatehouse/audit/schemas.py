"""Response models for the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, Field

from gatehouse.audit.models import AuditEvent


class AuditEventRead(BaseModel):
    id: int
    created_at: datetime
    actor_type: str
    actor_id: int | None
    actor_key_id: int | None
    actor_label: str | None
    client_ip: str | None
    action: str
    target_type: str | None
    target_id: str | None
    details: dict[str, Any]
    request_id: str | None
    hash: str

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEventRead:
        """From a stored row."""
        fields = {name: getattr(event, name) for name in cls.model_fields if name != "details"}
        return cls(**fields, details=orjson.loads(event.details))


class AuditPage(BaseModel):
    items: list[AuditEventRead]
    next_cursor: int | None = Field(description="Pass as `before` for the next (older) page; null on the last.")


class AuditVerification(BaseModel):
    ok: bool
    checked: int
    broken_row: int | None = None
    reason: str | None = None
