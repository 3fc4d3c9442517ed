"""Routes: /admin/keys (every user's API keys: list with filters, revoke)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from gatehouse.accounts import service
from gatehouse.accounts.schemas import KeyRead
from gatehouse.auth.access import require
from gatehouse.auth.roles import Role
from gatehouse.deps import ActorDep, PrincipalDep, RuntimeDep, SessionDep
from gatehouse.fields import MAX_DB_INT, IdPath

router = APIRouter()
MAX_PAGE = 500


class KeyPage(BaseModel):
    items: list[KeyRead] = Field(description="Keys, newest first (never the keys themselves: only prefixes).")
    next_cursor: int | None = Field(description="Pass as `before` for the next page; null on the last page.")


@router.get("/admin/keys", response_model=KeyPage, tags=["admin"], dependencies=[require(Role.ADMIN)])
async def list_keys(
    session: SessionDep,
    user_id: Annotated[int | None, Query(ge=1, le=MAX_DB_INT, description="Only this user's keys.")] = None,
    state: Annotated[service.KeyState | None, Query(description="active, revoked or expired.")] = None,
    before: Annotated[int | None, Query(ge=1, le=MAX_DB_INT, description="The previous page's next_cursor.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> KeyPage:
    """Every user's API keys, newest first, filtered by user and state, a page at a time."""
    keys = await service.list_keys(session, user_id=user_id, state=state, before_id=before, limit=limit + 1)
    page = keys[:limit]
    return KeyPage(
        items=[KeyRead.model_validate(k) for k in page],
        next_cursor=page[-1].id if len(keys) > limit else None,
    )


@router.delete("/admin/keys/{key_id}", response_model=KeyRead, tags=["admin"], dependencies=[require(Role.ADMIN)])
async def revoke_key(
    key_id: IdPath, principal: PrincipalDep, actor: ActorDep, session: SessionDep, runtime: RuntimeDep
) -> KeyRead:
    """Revoke any user's key (a superadmin's only as a superadmin); every replica refuses it at once."""
    key = await service.revoke_key_as_admin(
        session, bus=runtime.bus, actor=actor, actor_role=principal.role, key_id=key_id
    )
    return KeyRead.model_validate(key)
