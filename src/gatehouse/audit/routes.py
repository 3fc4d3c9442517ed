"""Routes: /admin/audit (filtered, paginated) and /admin/audit/verify."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from gatehouse.audit import service
from gatehouse.audit.schemas import AuditEventRead, AuditPage, AuditVerification
from gatehouse.auth.access import require
from gatehouse.auth.roles import Role
from gatehouse.deps import SessionDep
from gatehouse.fields import MAX_DB_INT, IsoMoment

router = APIRouter(prefix="/admin/audit", tags=["audit"])
ACTION_HELP = 'An action, or a prefix ending in "." (e.g. "key."); rows stored under an older name match too.'


@router.get("", response_model=AuditPage, dependencies=[require(Role.ADMIN)])
async def list_audit(
    session: SessionDep,
    action: Annotated[str | None, Query(max_length=64, description=ACTION_HELP)] = None,
    actor_id: Annotated[int | None, Query(ge=1, le=MAX_DB_INT, description="The acting user's id.")] = None,
    target_type: Annotated[str | None, Query(max_length=32)] = None,
    target_id: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[
        IsoMoment | None, Query(description="From this time (inclusive), ISO 8601 with a timezone.")
    ] = None,
    until: Annotated[IsoMoment | None, Query(description="Before this time (exclusive).")] = None,
    before: Annotated[
        int | None, Query(ge=1, le=MAX_DB_INT, description="Cursor: the `next_cursor` of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:
    """Audit events, newest first, filtered by action, actor, target and time."""
    where = service.AuditFilter(
        action=action, actor_id=actor_id, target_type=target_type, target_id=target_id, since=since, until=until
    )
    rows = await service.list_events(session, where=where, before_id=before, limit=limit + 1)
    page = rows[:limit]
    return AuditPage(items=[AuditEventRead.of(e) for e in page], next_cursor=page[-1].id if len(rows) > limit else None)


@router.get("/verify", response_model=AuditVerification, dependencies=[require(Role.ADMIN)])
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
