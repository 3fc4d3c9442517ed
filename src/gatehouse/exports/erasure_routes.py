"""Route: DELETE /admin/users/{id}, a deletion request (exports/erasure.py). Export first with POST /admin/export."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from gatehouse.accounts.errors import LastSuperadmin, RoleNotAllowed, SelfDelete
from gatehouse.auth.access import require
from gatehouse.auth.errors import UserNotFound
from gatehouse.auth.roles import Role
from gatehouse.core.components import provided
from gatehouse.deps import ActorDep, BusDep, PrincipalDep, SessionDep
from gatehouse.errors import errors
from gatehouse.exports import erasure
from gatehouse.fields import IdPath, Text
from gatehouse.gateway.requestlog import RequestLogWriter

router = APIRouter(tags=["admin"])


class ErasureRead(BaseModel):
    """What a deletion request removed or anonymised."""

    user_id: int
    mode: Literal["delete", "anonymise"]
    requests: int
    stored_responses: int = Field(description="Stored responses (Responses API) deleted, in either mode.")
    usage_days: int
    keys: int
    sessions: int
    invites: int
    audit_events_kept: int = Field(
        description="Audit events about them (where they acted, that target them, their keys or invites, or "
        "labelled with their email), kept as recorded until the retention purge."
    )


@router.delete(
    "/admin/users/{user_id}",
    responses=errors(UserNotFound, SelfDelete, LastSuperadmin, RoleNotAllowed),
    response_model=ErasureRead,
    dependencies=[require(Role.ADMIN)],
)
async def delete_user(
    user_id: IdPath,
    principal: PrincipalDep,
    actor: ActorDep,
    session: SessionDep,
    bus: BusDep,
    request_log: Annotated[RequestLogWriter, provided(RequestLogWriter)],
    mode: Annotated[
        Literal["delete", "anonymise"],
        Query(description="delete: the user and their data; anonymise: keep usage and requests, without PII."),
    ] = "delete",
    reason: Annotated[
        Text | None, Query(max_length=500, description="Why (e.g. a ticket number), for the audit log.")
    ] = None,
) -> ErasureRead:
    """Delete a user (keys, sessions, usage, request log, stored responses) or anonymise them (stored responses
    deleted too); audited; their keys stop at once."""
    done = await erasure.erase_user(
        session,
        bus=bus,
        actor=actor,
        actor_role=principal.role,
        user_id=user_id,
        mode=mode,
        by_user_id=principal.user_id,
        reason=reason,
        request_log=request_log,
    )
    return ErasureRead.model_validate(done, from_attributes=True)
