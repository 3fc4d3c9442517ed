"""Routes: POST /admin/reload (every replica re-reads its settings and GATEHOUSE_CONFIG; this replica's outcome)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel

from gatehouse.auth.access import require
from gatehouse.auth.roles import Role
from gatehouse.configuration.errors import ReloadFailed
from gatehouse.configuration.reload import Reloader
from gatehouse.core.components import provided
from gatehouse.deps import ActorDep

router = APIRouter(tags=["config"])


class ReloadRead(BaseModel):
    """One replica's outcome of a reload: setting names only, never values."""

    id: str  # the reload's id: every replica audits its own outcome under it (GET /admin/audit)
    replica: str
    ok: bool
    changed: list[str]  # applied
    restart_needed: list[str]  # changed, but only a restart applies them (left as they were)
    upstreams: list[str]  # added, removed or reconfigured
    error: str | None  # what to fix when ok is false (nothing was applied)


@router.post(
    "/admin/reload",
    dependencies=[require(Role.ADMIN)],
    response_model=ReloadRead,
    responses={422: {"description": "reload_failed: the new settings or file are invalid; nothing was applied"}},
)
async def reload_configuration(actor: ActorDep, reloader: Annotated[Reloader, provided(Reloader)]) -> ReloadRead:
    """Re-read the settings (NAME_FILE files, the .env file) and GATEHOUSE_CONFIG on every replica, validate, and
    apply what can change live; answers with this replica's outcome. Invalid settings: a 422 `reload_failed` naming
    what to fix and the reload's id, and nothing applied (so `curl -f` and scripts see the failure)."""
    result = await reloader.everywhere(actor=actor)
    if not result.ok:
        raise ReloadFailed(
            f"{result.error} (reload {result.id}: nothing was applied on this replica; its config.reload_failed "
            "audit event has the same id)"
        )
    return ReloadRead(**result.public())
