"""Routes: /admin/invites (create, list, revoke) and /auth/signup (redeem one, as SIGNUP_MODE allows)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, status

from gatehouse.accounts import invites
from gatehouse.accounts.invite_models import Invite
from gatehouse.accounts.invite_schemas import InviteCreate, InviteCreated, InvitePage, InviteRead, SignupRequest
from gatehouse.accounts.invites import InviteStatus
from gatehouse.accounts.schemas import UserRead
from gatehouse.auth.access import public, require
from gatehouse.auth.actor import actor_for, client_ip
from gatehouse.auth.roles import Role
from gatehouse.db.base import utcnow
from gatehouse.deps import ActorDep, PrincipalDep, RuntimeDep, SessionDep
from gatehouse.fields import MAX_DB_INT, IdPath

router = APIRouter()


def _read(invite: Invite) -> InviteRead:
    fields = {name: getattr(invite, name) for name in InviteRead.model_fields if name != "status"}
    return InviteRead.model_validate({**fields, "status": invites.status_of(invite, utcnow())})


@router.post(
    "/admin/invites",
    response_model=InviteCreated,
    status_code=status.HTTP_201_CREATED,
    tags=["admin"],
    dependencies=[require(Role.ADMIN)],
)
async def create_invite(
    body: InviteCreate,
    request: Request,
    principal: PrincipalDep,
    actor: ActorDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> InviteCreated:
    """Create an invite (optionally bound to one email); the token and link are in this response only."""
    await runtime.rate_limiter.hit("invite_create", f"u{principal.user_id}")
    invite, token = await invites.create(
        session,
        actor=actor,
        actor_role=principal.role,
        email=body.email,
        role=body.role,
        max_uses=body.max_uses,
        expires_in_hours=body.expires_in_hours,
        expires_at=body.expires_at,
    )
    link = f"{str(request.base_url).rstrip('/')}/signup?invite={token}"
    return InviteCreated(**_read(invite).model_dump(), token=token, link=link)


@router.get("/admin/invites", response_model=InvitePage, tags=["admin"], dependencies=[require(Role.ADMIN)])
async def list_invites(
    session: SessionDep,
    status_filter: Annotated[InviteStatus | None, Query(alias="status")] = None,
    before: Annotated[int | None, Query(ge=1, le=MAX_DB_INT, description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=invites.MAX_PAGE)] = 50,
) -> InvitePage:
    """Invites, newest first, with their status (active, expired, used_up, revoked); never their tokens."""
    rows, next_cursor = await invites.list_invites(session, status=status_filter, before_id=before, limit=limit)
    return InvitePage(items=[_read(invite) for invite in rows], next_cursor=next_cursor)


@router.delete(
    "/admin/invites/{invite_id}", response_model=InviteRead, tags=["admin"], dependencies=[require(Role.ADMIN)]
)
async def revoke_invite(invite_id: IdPath, actor: ActorDep, session: SessionDep) -> InviteRead:
    """Revoke an invite: nobody can sign up with it any more (accounts made with it stay)."""
    return _read(await invites.revoke(session, actor=actor, invite_id=invite_id))


@router.post(
    "/auth/signup",
    response_model=UserRead,
    status_code=status.HTTP_201_CREATED,
    tags=["auth"],
    dependencies=[public()],
)
async def signup(body: SignupRequest, request: Request, session: SessionDep, runtime: RuntimeDep) -> UserRead:
    """Create an account with an invite (or without one when SIGNUP_MODE=open); then log in with /auth/login."""
    ip = client_ip(request) or "unknown"
    await runtime.rate_limiter.hit("ip_per_minute", f"ip{ip}")
    await runtime.rate_limiter.hit("signup", f"ip{ip}")
    user = await invites.sign_up(
        session,
        settings=runtime.settings,
        actor=actor_for(request, None),
        invite_token=body.invite,
        email=body.email,
        password=body.password,
        display_name=body.display_name,
    )
    return UserRead.model_validate(user)
