"""Routes: /auth/login and /auth/logout, the console session (an HttpOnly cookie, and a CSRF token for changes),
and /me/password (a user changes their own password)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Request, Response, status

from gatehouse.accounts.errors import InvalidCredentials, LoginLocked, WeakPassword, WrongPassword
from gatehouse.accounts.sessions import service as sessions
from gatehouse.accounts.sessions.schemas import LoginRequest, LoginResponse, PasswordChange, PasswordChanged
from gatehouse.accounts.users.schemas import UserRead
from gatehouse.auth.access import CSRF_COOKIE, SESSION_COOKIE, Authenticator, public, require
from gatehouse.auth.actor import actor_for
from gatehouse.auth.roles import Role
from gatehouse.auth.tokens import csrf_token
from gatehouse.core.components import provided
from gatehouse.deps import ActorDep, DatabaseDep, PrincipalDep, SessionDep, SettingsDep
from gatehouse.errors import errors
from gatehouse.limits.deps import rate_limited
from gatehouse.limits.ratelimit import RateLimiter

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post(
    "/login",
    responses=errors(InvalidCredentials, LoginLocked),
    response_model=LoginResponse,
    dependencies=[public(), rate_limited("ip_per_minute"), rate_limited("login")],
)
async def login(
    body: LoginRequest,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    database: DatabaseDep,
    limiter: Annotated[RateLimiter, provided(RateLimiter)],
    authenticator: Annotated[Authenticator, provided(Authenticator)],
) -> LoginResponse:
    """Start a console session: sets an HttpOnly session cookie and returns the CSRF token."""
    ttl = timedelta(hours=settings.session_ttl_hours)
    user, row, token = await sessions.log_in(
        session,
        sessionmaker=database.sessionmaker,
        limiter=limiter,
        actor=actor_for(request, None),
        email=body.email,
        password=body.password,
        ttl=ttl,
        user_agent=request.headers.get("user-agent"),
        backoff_max_seconds=settings.login_backoff_max_seconds,
    )
    csrf = csrf_token(authenticator.secret, token)
    secure = settings.is_prod
    max_age = int(ttl.total_seconds())
    response.set_cookie(SESSION_COOKIE, token, max_age=max_age, httponly=True, samesite="lax", secure=secure)
    response.set_cookie(CSRF_COOKIE, csrf, max_age=max_age, httponly=False, samesite="strict", secure=secure)
    return LoginResponse(user=UserRead.model_validate(user), csrf_token=csrf, expires_at=row.expires_at)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, dependencies=[require(Role.USER)])
async def logout(request: Request, session: SessionDep, actor: ActorDep) -> Response:
    """End the console session (a no-op for API-key callers)."""
    if token := request.cookies.get(SESSION_COOKIE):
        await sessions.log_out(session, token=token, actor=actor)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(SESSION_COOKIE)
    response.delete_cookie(CSRF_COOKIE)
    return response


me = APIRouter(tags=["me"])


@me.post(
    "/me/password",
    responses=errors(WrongPassword, WeakPassword, LoginLocked),
    response_model=PasswordChanged,
    dependencies=[require(Role.USER)],
)
async def change_password(
    body: PasswordChange,
    session: SessionDep,
    principal: PrincipalDep,
    actor: ActorDep,
    limiter: Annotated[RateLimiter, provided(RateLimiter)],
) -> PasswordChanged:
    """Change your own password (the current one is required); your other console sessions are signed out."""
    ended = await sessions.change_password(
        session,
        limiter=limiter,
        actor=actor,
        user_id=principal.user_id,
        current=body.current_password,
        new=body.new_password,
        keep_session_id=principal.session_id,
    )
    return PasswordChanged(sessions_ended=ended)
