"""Routes: /admin/audit (filtered, paginated) and /admin/audit/verify."""

from __future__ import annotations

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from gatehouse.audit import service
from gatehouse.audit.schemas import AuditEventRead, AuditPage, AuditVerification
from gatehouse.auth.access import require
from gatehouse.auth.roles import Role
from gatehouse.deps import SessionDep
from gatehouse.fields import MAX_DB_INT

router = APIRouter(tags=["audit"])


@router.get("/admin/audit", response_model=AuditPage, dependencies=[require(Role.ADMIN)])
async def list_audit(
    session: SessionDep,
    action: str | None = Query(None, max_length=64, description='An action, or a prefix ending in "." (e.g. "key.").'),
    actor_id: int | None = Query(None, ge=1, le=MAX_DB_INT, description="The acting user's id."),
    target_type: str | None = Query(None, max_length=32),
    target_id: str | None = Query(None, max_length=64),
    since: AwareDatetime | None = Query(None, description="From this time (inclusive), ISO 8601 with a timezone."),
    until: AwareDatetime | None = Query(None, description="Before this time (exclusive)."),
    before: int | None = Query(None, ge=1, description="Cursor: the `next_cursor` of the previous page."),
    limit: int = Query(100, ge=1, le=1000),
) -> AuditPage:
    """Audit events, newest first, filtered by action, actor, target and time."""
    where = service.AuditFilter(
        action=action, actor_id=actor_id, target_type=target_type, target_id=target_id, since=since, until=until
    )
    rows = await service.list_events(session, where=where, before_id=before, limit=limit + 1)
    page = rows[:limit]
    return AuditPage(items=[AuditEventRead.of(e) for e in page], next_cursor=page[-1].id if len(rows) > limit else None)


@router.get("/admin/audit/verify", response_model=AuditVerification, dependencies=[require(Role.ADMIN)])
async def verify_audit(session: SessionDep) -> AuditVerification:
    """Check the hash chain; names the first row where an edit, deletion or insertion broke it."""
    result = await service.verify_chain(session)
    broken = result.broken
    return AuditVerification(
        ok=result.ok,
        checked=result.checked,
        broken_row=broken.row_id if broken else None,
        reason=broken.reason if broken else None,
    )
