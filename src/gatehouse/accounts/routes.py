"""Routes: /auth (login, logout), /me (profile, keys), /admin/users (create, read, keys for a user)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request, Response, status

from gatehouse.accounts import service
from gatehouse.accounts.schemas import (
    KeyCreate,
    KeyCreated,
    KeyRead,
    LoginRequest,
    LoginResponse,
    UserRead,
)
from gatehouse.auth.access import CSRF_COOKIE, SESSION_COOKIE, public, require
from gatehouse.auth.actor import actor_for
from gatehouse.auth.roles import Role
from gatehouse.auth.tokens import csrf_token
from gatehouse.deps import ActorDep, PrincipalDep, RuntimeDep, SessionDep
from gatehouse.fields import IdPath

router = APIRouter()


def _client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


@router.post("/auth/login", response_model=LoginResponse, tags=["auth"], dependencies=[public()])
async def login(
    body: LoginRequest, request: Request, response: Response, session: SessionDep, runtime: RuntimeDep
) -> LoginResponse:
    """Start a console session: sets an HttpOnly session cookie and returns the CSRF token."""
    ip = _client_ip(request) or "unknown"
    await runtime.rate_limiter.hit("ip_per_minute", f"ip{ip}")
    await runtime.rate_limiter.hit("login", f"ip{ip}")
    ttl = timedelta(hours=runtime.settings.session_ttl_hours)
    user, row, token = await service.log_in(
        session,
        sessionmaker=runtime.db.sessionmaker,
        limiter=runtime.rate_limiter,
        actor=actor_for(request, None),
        email=body.email,
        password=body.password,
        ttl=ttl,
        user_agent=request.headers.get("user-agent"),
        backoff_max_seconds=runtime.settings.login_backoff_max_seconds,
    )
    csrf = csrf_token(runtime.auth.secret, token)
    secure = runtime.settings.is_prod
    max_age = int(ttl.total_seconds())
    response.set_cookie(SESSION_COOKIE, token, max_age=max_age, httponly=True, samesite="lax", secure=secure)
    response.set_cookie(CSRF_COOKIE, csrf, max_age=max_age, httponly=False, samesite="strict", secure=secure)
    return LoginResponse(user=UserRead.model_validate(user), csrf_token=csrf, expires_at=row.expires_at)


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT, tags=["auth"], dependencies=[require(Role.USER)])
async def logout(request: Request, session: SessionDep, actor: ActorDep) -> Response:
    """End the console session (a no-op for API-key callers)."""
    if token := request.cookies.get(SESSION_COOKIE):
        await service.delete_session(session, token=token, actor=actor)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(SESSION_COOKIE)
    response.delete_cookie(CSRF_COOKIE)
    return response


@router.get("/me", response_model=UserRead, tags=["me"], dependencies=[require(Role.USER)])
async def me(principal: PrincipalDep, session: SessionDep) -> UserRead:
    """The caller's own account."""
    return UserRead.model_validate(await service.get_user_or_raise(session, user_id=principal.user_id))


@router.get("/me/keys", response_model=list[KeyRead], tags=["me"], dependencies=[require(Role.USER)])
async def list_my_keys(principal: PrincipalDep, session: SessionDep) -> list[KeyRead]:
    """The caller's API keys (never the keys themselves: only their prefixes)."""
    keys = await service.list_api_keys(session, user_id=principal.user_id)
    return [KeyRead.model_validate(k) for k in keys]


@router.post(
    "/me/keys",
    response_model=KeyCreated,
    status_code=status.HTTP_201_CREATED,
    tags=["me"],
    dependencies=[require(Role.USER)],
)
async def create_my_key(
    body: KeyCreate, principal: PrincipalDep, actor: ActorDep, session: SessionDep, runtime: RuntimeDep
) -> KeyCreated:
    """Create an API key for the caller; the key is in this response only."""
    await runtime.rate_limiter.hit("key_create", f"u{principal.user_id}")
    key, raw = await service.create_api_key(
        session, actor=actor, user_id=principal.user_id, name=body.name, expires_at=body.expires_at
    )
    return KeyCreated.model_validate({**KeyRead.model_validate(key).model_dump(), "key": raw})


@router.delete("/me/keys/{key_id}", response_model=KeyRead, tags=["me"], dependencies=[require(Role.USER)])
async def revoke_my_key(
    key_id: IdPath, principal: PrincipalDep, actor: ActorDep, session: SessionDep, runtime: RuntimeDep
) -> KeyRead:
    """Revoke one of the caller's keys; it stops working on every replica at once."""
    key = await service.get_api_key_or_raise(session, key_id=key_id, user_id=principal.user_id)
    await service.revoke_api_key(session, bus=runtime.bus, actor=actor, key=key)
    return KeyRead.model_validate(key)


@router.post(
    "/admin/users/{user_id}/keys",
    response_model=KeyCreated,
    status_code=status.HTTP_201_CREATED,
    tags=["admin"],
    dependencies=[require(Role.ADMIN)],
)
async def create_user_key(
    user_id: IdPath,
    body: KeyCreate,
    principal: PrincipalDep,
    actor: ActorDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> KeyCreated:
    """Create an API key for another user (e.g. a service account); the key is in this response only."""
    await runtime.rate_limiter.hit("key_create", f"u{principal.user_id}")
    key, raw = await service.create_api_key_for_user(
        session,
        actor=actor,
        actor_role=principal.role,
        user_id=user_id,
        name=body.name,
        expires_at=body.expires_at,
    )
    return KeyCreated.model_validate({**KeyRead.model_validate(key).model_dump(), "key": raw})
