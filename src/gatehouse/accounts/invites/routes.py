"""Routes: /admin/invites (create, list, revoke) and /auth/signup (redeem one, as SIGNUP_MODE allows)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, status

from gatehouse.accounts.errors import (
    EmailTaken,
    InvalidExpiry,
    InviteEmailMismatch,
    InviteExpired,
    InviteInvalid,
    InviteNotFound,
    InviteRequired,
    InviteRevoked,
    InviteUsedUp,
    RoleNotAllowed,
    SignupClosed,
    WeakPassword,
)
from gatehouse.accounts.invites import service as invites
from gatehouse.accounts.invites.models import Invite
from gatehouse.accounts.invites.schemas import InviteCreate, InviteCreated, InvitePage, InviteRead, SignupRequest
from gatehouse.accounts.invites.service import InviteStatus
from gatehouse.accounts.users.schemas import UserRead
from gatehouse.auth.access import public, require
from gatehouse.auth.actor import actor_for
from gatehouse.auth.roles import Role
from gatehouse.db.base import utcnow
from gatehouse.deps import ActorDep, PrincipalDep, SessionDep, SettingsDep
from gatehouse.errors import errors
from gatehouse.fields import MAX_DB_INT, IdPath
from gatehouse.limits.deps import rate_limited

router = APIRouter()
admin = APIRouter(prefix="/admin/invites", tags=["admin"])
ADMIN = [require(Role.ADMIN)]


def _read(invite: Invite) -> InviteRead:
    fields = {name: getattr(invite, name) for name in InviteRead.model_fields if name != "status"}
    return InviteRead.model_validate({**fields, "status": invites.status_of(invite, utcnow())})


@admin.post(
    "",
    responses=errors(InvalidExpiry, EmailTaken, RoleNotAllowed),
    response_model=InviteCreated,
    status_code=status.HTTP_201_CREATED,
    dependencies=[*ADMIN, rate_limited("invite_create")],
)
async def create_invite(
    body: InviteCreate, request: Request, principal: PrincipalDep, actor: ActorDep, session: SessionDep
) -> InviteCreated:
    """Create an invite (optionally bound to one email); the token and link are in this response only."""
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


@admin.get("", response_model=InvitePage, dependencies=ADMIN)
async def list_invites(
    session: SessionDep,
    status_filter: Annotated[InviteStatus | None, Query(alias="status")] = None,
    before: Annotated[int | None, Query(ge=1, le=MAX_DB_INT, description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=invites.MAX_PAGE)] = 50,
) -> InvitePage:
    """Invites, newest first, with their status (active, expired, used_up, revoked); never their tokens."""
    rows, next_cursor = await invites.list_invites(session, status=status_filter, before_id=before, limit=limit)
    return InvitePage(items=[_read(invite) for invite in rows], next_cursor=next_cursor)


@admin.delete("/{invite_id}", responses=errors(InviteNotFound), response_model=InviteRead, dependencies=ADMIN)
async def revoke_invite(invite_id: IdPath, actor: ActorDep, session: SessionDep) -> InviteRead:
    """Revoke an invite: nobody can sign up with it any more (accounts made with it stay)."""
    return _read(await invites.revoke(session, actor=actor, invite_id=invite_id))


@router.post(
    "/auth/signup",
    responses=errors(
        InviteInvalid,
        InviteRevoked,
        InviteUsedUp,
        InviteExpired,
        InviteEmailMismatch,
        InviteRequired,
        WeakPassword,
        SignupClosed,
        EmailTaken,
    ),
    response_model=UserRead,
    status_code=status.HTTP_201_CREATED,
    tags=["auth"],
    dependencies=[public(), rate_limited("ip_per_minute"), rate_limited("signup")],
)
async def signup(body: SignupRequest, request: Request, session: SessionDep, settings: SettingsDep) -> UserRead:
    """Create an account with an invite (or without one when SIGNUP_MODE=open); then log in with /auth/login."""
    user = await invites.sign_up(
        session,
        settings=settings,
        actor=actor_for(request, None),
        invite_token=body.invite,
        email=body.email,
        password=body.password,
        display_name=body.display_name,
    )
    return UserRead.model_validate(user)


router.include_router(admin)
