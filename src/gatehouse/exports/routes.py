"""Route: POST /admin/export, a streamed ZIP of CSV or JSONL files (ops/export.py), PII masked by default."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from gatehouse.auth.access import require
from gatehouse.auth.roles import Role
from gatehouse.deps import ActorDep, PrincipalDep, RuntimeDep, SessionDep
from gatehouse.exports import service as export
from gatehouse.fields import MAX_DB_INT, Text

router = APIRouter(tags=["admin"])


class ExportCreate(BaseModel):
    """What to export: which entities, for which period and user, in which format, masked or raw."""

    model_config = ConfigDict(extra="forbid")

    entities: list[export.EntityName] = Field(
        min_length=1, max_length=len(export.ENTITY_NAMES) * 2, description=", ".join(export.ENTITY_NAMES)
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
    responses={200: {"content": {export.MEDIA_TYPE: {}}, "description": "A ZIP: one file per entity + manifest.json"}},
)
async def create_export(
    body: ExportCreate, principal: PrincipalDep, actor: ActorDep, session: SessionDep, runtime: RuntimeDep
) -> StreamingResponse:
    """Export entities as a streamed ZIP with a manifest; pii=raw needs a superadmin and a reason; audited."""

    async def count_against_limit() -> None:
        await runtime.rate_limiter.hit("export", f"u{principal.user_id}")

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
        before_audit=count_against_limit,
    )
    # The session dependency commits `export.created` when this function returns, before the first byte.
    chunks = export.stream(
        read_sessionmaker=runtime.db.read_sessionmaker, sessionmaker=runtime.db.sessionmaker, actor=actor, spec=spec
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
