"""Routes: POST /admin/export, a streamed ZIP of CSV or JSONL files (exports/), PII masked by default; and the
deletion request (exports/erasure_routes.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from gatehouse.auth.access import require
from gatehouse.auth.errors import UserNotFound
from gatehouse.auth.roles import Role
from gatehouse.deps import ActorDep, DatabaseDep, PrincipalDep, SessionDep
from gatehouse.errors import BadRequest, errors
from gatehouse.exports import service as export
from gatehouse.exports.entities import ENTITY_NAMES, EntityName
from gatehouse.exports.erasure_routes import router as erasure_router
from gatehouse.exports.errors import RawExportForbidden
from gatehouse.exports.writer import stream
from gatehouse.fields import MAX_DB_INT, Text
from gatehouse.limits.deps import Limit, limit

router = APIRouter(tags=["admin"])


class ExportCreate(BaseModel):
    """What to export: which entities, for which period and user, in which format, masked or raw."""

    model_config = ConfigDict(extra="forbid")

    entities: list[EntityName] = Field(
        min_length=1, max_length=len(ENTITY_NAMES) * 2, description=", ".join(ENTITY_NAMES)
    )
    since: AwareDatetime | None = Field(None, description="From this time on (requests, audit, invites; usage days).")
    until: AwareDatetime | None = Field(None, description="Before this time.")
    user: Annotated[int, Field(ge=1, le=MAX_DB_INT)] | Annotated[Text, Field(min_length=1, max_length=320)] | None = (
        Field(None, description="Only this user's rows: their email or id.")
    )
    format: Literal["csv", "jsonl"] = "csv"
    pii: Literal["masked", "raw"] = "masked"
    reason: Annotated[Text, Field(min_length=export.REASON_MIN, max_length=export.REASON_MAX)] | None = Field(
        None, description="Why (e.g. a ticket number): required with pii=raw, kept in the audit log."
    )


@router.post(
    "/admin/export",
    dependencies=[require(Role.ADMIN)],
    response_class=StreamingResponse,
    responses=errors(UserNotFound, RawExportForbidden, BadRequest)
    | {200: {"content": {export.MEDIA_TYPE: {}}, "description": "A ZIP: one file per entity + manifest.json"}},
)
async def create_export(
    body: ExportCreate,
    principal: PrincipalDep,
    actor: ActorDep,
    session: SessionDep,
    database: DatabaseDep,
    count_export: Annotated[Limit, limit("export")],
) -> StreamingResponse:
    """Export entities as a streamed ZIP with a manifest; pii=raw needs a superadmin and a reason; audited."""
    # The rate limit counts only a request found valid (`before_audit`): a refused one counts nothing.
    spec = await export.prepare(
        session,
        actor=actor,
        actor_role=principal.role,
        entities=body.entities,
        format=body.format,
        pii_mode=body.pii,
        since=body.since,
        until=body.until,
        user=body.user,
        reason=body.reason,
        before_audit=count_export,
    )
    # The session dependency commits `export.created` when this function returns, before the first byte.
    chunks = stream(
        read_sessionmaker=database.read_sessionmaker, sessionmaker=database.sessionmaker, actor=actor, spec=spec
    )
    return StreamingResponse(
        chunks,
        media_type=export.MEDIA_TYPE,
        headers={
            "content-disposition": f'attachment; filename="{spec.filename}"',
            "x-export-id": spec.export_id,
            "cache-control": "no-store",
        },
    )


router.include_router(erasure_router)
