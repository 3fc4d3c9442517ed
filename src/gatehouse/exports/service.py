"""Exports: a ZIP of CSV (or JSONL) files, one per entity, plus a manifest, streamed with bounded memory.

This module decides what an export holds (its spec, checked and audited before the first byte); how it is
written is in exports/writer.py, what each entity holds in exports/entities.py, the bytes of the files in
exports/files.py. The ZIP is written for a non-seekable stream (data descriptors, ZIP64), so its size is limited
by nothing but the disk or the client at the other end.

PII is masked by default (exports/pii.py); `raw` is for a superadmin with a reason. Every export is audited
before its first byte (`export.created`) and once complete (`export.completed`, with its row counts and the
SHA-256 of the whole file). Secrets never leave: no password, key or token hash, no session; message contents
(stored responses' items) only in raw exports.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.accounts.users import service as users
from gatehouse.audit.service import record
from gatehouse.auth.actor import Actor
from gatehouse.auth.errors import UserNotFound
from gatehouse.auth.roles import Role
from gatehouse.db.base import utcnow
from gatehouse.errors import BadRequest, ValidationFailed
from gatehouse.exports.entities import ENTITIES, ENTITY_NAMES, PiiMode
from gatehouse.exports.errors import RawExportForbidden
from gatehouse.exports.events import ExportCompletedEvent, ExportCreatedEvent
from gatehouse.exports.files import Format, iso
from gatehouse.fields import MAX_DB_INT

REASON_MIN, REASON_MAX = 3, 500
MEDIA_TYPE = "application/zip"


# --- the request -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportSpec:
    """What one export holds, decided (and audited) before its first byte."""

    entities: tuple[str, ...]
    format: Format = "csv"
    pii: PiiMode = "masked"
    since: datetime | None = None
    until: datetime | None = None
    user_id: int | None = None
    user_email: str | None = None
    reason: str | None = None
    created_by: str | None = None
    export_id: str = field(default_factory=lambda: secrets.token_hex(8))
    created_at: datetime = field(default_factory=utcnow)

    @property
    def filename(self) -> str:
        return f"gatehouse-export-{self.created_at.strftime('%Y%m%dT%H%M%SZ')}.zip"

    def filters(self) -> dict[str, Any]:
        """The filters as recorded in the audit log (raw: the audit log is not an export)."""
        return {
            "since": iso(self.since),
            "until": iso(self.until),
            "user_id": self.user_id,
            "user": self.user_email,
        }


@dataclass
class ExportResult:
    """Filled in while the export streams: rows and file digests per entity, the whole ZIP's size and digest."""

    rows: dict[str, int] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    zip_bytes: int = 0
    zip_sha256: str | None = None  # set once the last byte is out

    @property
    def complete(self) -> bool:
        return self.zip_sha256 is not None


async def _find_user(session: AsyncSession, user: str | int) -> tuple[int, str]:
    text = str(user).strip()
    if text.isdigit():
        # An id beyond what a column holds names nobody (and would overflow the driver).
        found = await users.get(session, user_id=int(text)) if int(text) <= MAX_DB_INT else None
    else:
        found = await users.get_by_email(session, email=text)
    if found is None:
        raise UserNotFound(f"No user {text}: give an existing user's email or id.")
    return found.id, found.email


async def prepare(
    session: AsyncSession,
    *,
    actor: Actor,
    actor_role: Role | None,
    entities: Sequence[str],
    format: Format = "csv",
    pii_mode: PiiMode = "masked",
    since: datetime | None = None,
    until: datetime | None = None,
    user: str | int | None = None,
    reason: str | None = None,
    before_audit: Callable[[], Awaitable[None]] | None = None,
) -> ExportSpec:
    """Check an export request (raw: superadmin and a reason), resolve its user, and audit `export.created`.

    `actor_role` None is the operator at the shell (the CLI). `before_audit` (e.g. the rate limit) runs once
    the request is known to be valid, so a refused request counts nothing and writes nothing. The caller
    commits before streaming: a raw export is in the audit log before its first byte.
    """
    wanted = tuple(dict.fromkeys(entities))
    unknown = [e for e in wanted if e not in ENTITIES]
    if not wanted or unknown:
        raise ValidationFailed(
            f"entities must be one or more of {', '.join(ENTITY_NAMES)}"
            + (f" (unknown: {', '.join(unknown)})" if unknown else ""),
            param="entities",
        )
    if pii_mode == "raw":
        if actor_role is not None and actor_role is not Role.SUPERADMIN:
            raise RawExportForbidden(
                "Unmasked (pii=raw) exports are for superadmins only: ask one, or export with pii=masked."
            )
        if reason is None or not REASON_MIN <= len(reason.strip()) <= REASON_MAX:
            raise ValidationFailed(
                f"A raw export needs a reason ({REASON_MIN}-{REASON_MAX} characters), e.g. a ticket number: "
                "it is kept in the audit log.",
                param="reason",
            )
    since, until = to_utc(since, name="since"), to_utc(until, name="until")
    if since is not None and until is not None and since >= until:
        raise BadRequest("since must be before until.", param="since")
    user_id, user_email = await _find_user(session, user) if user is not None else (None, None)
    if before_audit is not None:
        await before_audit()
    spec = ExportSpec(
        entities=wanted,
        format=format,
        pii=pii_mode,
        since=since,
        until=until,
        user_id=user_id,
        user_email=user_email,
        reason=reason.strip() if reason else None,
        created_by=actor.label,
    )
    event = ExportCreatedEvent(
        user_id=user_id,
        export_id=spec.export_id,
        entities=list(spec.entities),
        format=spec.format,
        pii=spec.pii,
        reason=spec.reason,
        filters=spec.filters(),
    )
    await record(session, event, actor=actor)
    return spec


async def record_completed(session: AsyncSession, *, actor: Actor, spec: ExportSpec, result: ExportResult) -> None:
    """Audit `export.completed`: the row counts, and the SHA-256 of the file the recipient got."""
    event = ExportCompletedEvent(
        user_id=spec.user_id,
        export_id=spec.export_id,
        rows=result.rows,
        bytes=result.zip_bytes,
        sha256=result.zip_sha256,
    )
    await record(session, event, actor=actor)


def to_utc(value: datetime | None, *, name: str) -> datetime | None:
    """A bound of the time range in UTC; 422 on `name` when it has no zone or is out of range in UTC (e.g.
    0001-01-01T00:00:00+05:00 or 9999-12-31T23:00:00-05:00)."""
    return None if value is None else _in_utc(value, name=name, shown=name)


def _in_utc(value: datetime, *, name: str, shown: str) -> datetime:
    if value.tzinfo is None:
        raise ValidationFailed(f"{shown} needs a time zone (e.g. 2026-11-01T00:00:00Z).", param=name)
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise ValidationFailed(
            f"{shown} is out of range: in UTC it must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z.",
            param=name,
        ) from exc


def parse_day_or_time(text: str, *, name: str) -> datetime:
    """`2026-11-01` (midnight UTC) or an ISO-8601 time with a zone (the CLI's --since and --until), in UTC;
    422 on `name` when it is neither, or out of range in UTC."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(0), tzinfo=UTC)
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValidationFailed(
            f"--{name} must be a date (2026-11-01) or a time with a zone (2026-11-01T08:00:00Z).", param=name
        ) from exc
    return _in_utc(value if value.tzinfo is not None else value.replace(tzinfo=UTC), name=name, shown=f"--{name}")
