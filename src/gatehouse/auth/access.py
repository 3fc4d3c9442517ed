"""Authentication (API key or session cookie + CSRF) and the one access declaration per route."""

from __future__ import annotations

from ipaddress import ip_network
from typing import Any

import structlog
from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse.auth.cache import AuthCache
from gatehouse.auth.errors import (
    AccountBlocked,
    AccountDisabled,
    AccountPending,
    CsrfFailed,
    ExpiredApiKey,
    InvalidApiKey,
    InvalidToken,
    MissingApiKey,
    RoleTooLow,
    SessionExpired,
    TokenNotConfigured,
)
from gatehouse.auth.models import ApiKey, GroupMember, User, UserSession
from gatehouse.auth.principal import Principal
from gatehouse.auth.roles import Role, UserStatus
from gatehouse.auth.tokens import csrf_token, hash_token, same
from gatehouse.core.components import components_of
from gatehouse.db.base import utcnow
from gatehouse.settings import Settings

SESSION_COOKIE = "gatehouse_session"
CSRF_COOKIE = "gatehouse_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PRINCIPAL_SCOPE_KEY = "gatehouse.principal"
MAX_KEY_LENGTH = 256
INVALID_KEY = "Invalid API key: it does not exist or was revoked. Check the key, or create a new one."
NO_CREDENTIALS = (
    "Missing API key: send `Authorization: Bearer <your key>` or `x-api-key: <your key>` (create one in the "
    "console or with POST /me/keys)"
)


# What a Principal needs of the user, loaded with its key or session in one query.
_USER_COLUMNS = (User.id, User.email, User.role, User.status, User.blocked_at, User.blocked_until)


# A key's own settings, loaded with it.
_KEY_SETTINGS = (
    ApiKey.group_id,
    ApiKey.acts_for_users,
    ApiKey.allowed_models,
    ApiKey.allowed_surfaces,
    ApiKey.allowed_networks,
    ApiKey.rate_per_minute,
)


async def _groups_of(session: AsyncSession, user_id: int) -> tuple[int, ...]:
    """The groups a user belongs to, in id order."""
    query = select(GroupMember.group_id).where(GroupMember.user_id == user_id).order_by(GroupMember.group_id)
    return tuple((await session.execute(query)).scalars())


def _key_principal(key_row: Any, user: Any, groups: tuple[int, ...]) -> Principal:
    key_id, expires_at, group_id, acts_for, models, surfaces, networks, rate = key_row
    return _principal(
        user,
        key_id=key_id,
        key_expires_at=expires_at,
        group_ids=(group_id,) if group_id is not None else groups,
        key_group_id=group_id,
        key_models=tuple(models) if models is not None else None,
        key_surfaces=frozenset(surfaces) if surfaces is not None else None,
        key_networks=tuple(ip_network(n, strict=False) for n in networks) if networks is not None else None,
        key_rate=rate,
        acts_for_users=bool(acts_for),
    )


async def load_principal(session: AsyncSession, *, user_id: int, key_id: int | None = None) -> Principal | None:
    """The Principal a user (through one of their keys, when `key_id` is given) would be: None when no such user,
    or no such key of theirs."""
    user = (await session.execute(select(*_USER_COLUMNS).where(User.id == user_id))).first()
    if user is None:
        return None
    groups = await _groups_of(session, user_id)
    if key_id is None:
        return _principal(user, group_ids=groups)
    key_row = (
        await session.execute(
            select(ApiKey.id, ApiKey.expires_at, *_KEY_SETTINGS).where(ApiKey.id == key_id, ApiKey.user_id == user_id)
        )
    ).first()
    return _key_principal(key_row, user, groups) if key_row is not None else None


def _principal(user: Any, **credentials: Any) -> Principal:
    user_id, email, role, status, blocked_at, blocked_until = user
    return Principal(
        user_id=user_id,
        email=email,
        role=Role(role),
        status=UserStatus(status),
        blocked_at=blocked_at,
        blocked_until=blocked_until,
        **credentials,
    )


class Authenticator:
    """Turns a request's credentials into its Principal: an API key (from the cache when warm, else one database
    read shared by concurrent callers), or a console session cookie (with the CSRF token on unsafe methods)."""

    def __init__(
        self,
        *,
        settings: Settings,
        read_sessionmaker: async_sessionmaker[AsyncSession],
        cache: AuthCache,
        secret: str,
    ) -> None:
        self.settings = settings
        self.cache = cache
        self.secret = secret  # makes new CSRF tokens
        self.previous_secret = settings.jwt_secret_previous.get_secret_value()  # still verifies them (rotation)
        self.sessionmaker = read_sessionmaker  # reads only: on SQLite it never waits for a writer

    def apply_settings(self, settings: Settings) -> None:
        """A reload: the tokens (JOB_TOKEN, METRICS_TOKEN and their previous values) and JWT_SECRET(_PREVIOUS)
        checked from the next request on."""
        self.settings = settings
        self.secret = settings.effective_jwt_secret()
        self.previous_secret = settings.jwt_secret_previous.get_secret_value()

    async def for_key(self, raw_key: str) -> Principal:
        """The caller behind an API key: from the cache when warm, else one database read (shared by callers)."""
        # No key is empty or this long (BOOTSTRAP_ADMIN_API_KEY may be any string, so no shape check beyond that):
        # refused before hashing, caching or a database read.
        if not raw_key or len(raw_key) > MAX_KEY_LENGTH:
            raise InvalidApiKey(INVALID_KEY)
        key_hash = hash_token(raw_key)
        principal = await self.cache.lookup(key_hash, lambda: self._load_key(key_hash))
        if principal is None:
            raise InvalidApiKey(INVALID_KEY)
        if principal.key_expires_at is not None and principal.key_expires_at <= utcnow():
            raise ExpiredApiKey("This API key has expired: create a new one.")
        return principal

    async def _load_key(self, key_hash: str) -> Principal | None:
        async with self.sessionmaker() as session:
            row = (
                await session.execute(
                    select(ApiKey.id, ApiKey.expires_at, ApiKey.revoked_at, *_KEY_SETTINGS, *_USER_COLUMNS)
                    .join(User, User.id == ApiKey.user_id)
                    .where(ApiKey.key_hash == key_hash)
                )
            ).first()
            if row is None or row[2] is not None:
                return None
            key_id, expires_at, _revoked, group_id, *rest = row
            settings, user = rest[: len(_KEY_SETTINGS) - 1], rest[len(_KEY_SETTINGS) - 1 :]
            groups = () if group_id is not None else await _groups_of(session, user[0])
        return _key_principal((key_id, expires_at, group_id, *settings), user, groups)

    async def for_session(self, request: Request, token: str) -> Principal:
        """The caller behind a console session cookie; unsafe methods must carry the CSRF token."""
        async with self.sessionmaker() as session:
            row = (
                await session.execute(
                    select(UserSession.id, UserSession.expires_at, *_USER_COLUMNS)
                    .join(User, User.id == UserSession.user_id)
                    .where(UserSession.token_hash == hash_token(token))
                )
            ).first()
            groups = await _groups_of(session, row[2]) if row is not None else ()
        if row is None or row[1] <= utcnow():
            raise SessionExpired("Your session has ended: log in again.")
        if request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            if not sent or not self._csrf_ok(sent, token):
                raise CsrfFailed(
                    "Missing or wrong CSRF token: send the X-CSRF-Token header with the value "
                    "returned at login (also in the gatehouse_csrf cookie)."
                )
        session_id, _expires, *user = row
        return _principal(user, session_id=session_id, group_ids=groups)

    def _csrf_ok(self, sent: str, session_token: str) -> bool:
        """Made with JWT_SECRET, or with JWT_SECRET_PREVIOUS during a rotation window (both always compared)."""
        current = same(sent, csrf_token(self.secret, session_token))
        previous = bool(self.previous_secret) and same(sent, csrf_token(self.previous_secret, session_token))
        return current or previous

    async def resolve(self, request: Request) -> Principal:
        """Authenticate once per request (the result is kept in the request's own scope)."""
        # Not on request.state: that is the lifespan state dict, which a server may hand to every request
        # without copying it (asgi-lifespan does), and a principal kept there would leak to the next caller.
        cached: Principal | None = request.scope.get(PRINCIPAL_SCOPE_KEY)
        if cached is not None:
            return cached
        token = bearer_token(request) or api_key_header(request)
        if token is not None:
            principal = await self.for_key(token)
        elif cookie := request.cookies.get(SESSION_COOKIE):
            principal = await self.for_session(request, cookie)
        else:
            raise MissingApiKey(NO_CREDENTIALS)
        check_status(principal)
        request.scope[PRINCIPAL_SCOPE_KEY] = principal
        request.scope["state"]["user_id"] = principal.user_id
        structlog.contextvars.bind_contextvars(user_id=principal.user_id)
        return principal


def bearer_token(request: Request) -> str | None:
    """The token in `Authorization: Bearer ...`, if any."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidApiKey("Malformed Authorization header: use `Authorization: Bearer <your key>`.")
    return token.strip()


def api_key_header(request: Request) -> str | None:
    """The key in `x-api-key` (how Anthropic's clients send it), if any."""
    key = request.headers.get("x-api-key")
    return key.strip() or None if key is not None else None


def check_status(principal: Principal) -> None:
    """Refuse callers whose account may not act."""
    if principal.status is UserStatus.DISABLED:
        raise AccountDisabled("This account is disabled: ask an administrator.")
    if principal.status is UserStatus.PENDING:
        raise AccountPending("This account is pending approval: ask an administrator.")
    if principal.blocked_now(utcnow()):
        # The operator's reason is an internal note: the caller learns only that, and until when.
        until = principal.blocked_until
        when = f" until {until.strftime('%Y-%m-%d %H:%M UTC')}" if until else ""
        raise AccountBlocked(f"This account is blocked{when}: ask an administrator.")


async def resolve_principal(request: Request) -> Principal:
    """The request's caller (authenticated once per request)."""
    return await components_of(request).get(Authenticator).resolve(request)


class Access:
    """A route's access declaration: the least role it needs, or public (None).

    `bearer_setting` names a SecretStr setting (e.g. "metrics_token"): when that setting is non-empty, a
    request bearing exactly that token is let in too, with no principal (a Prometheus scraper has no user
    account). Anything else goes through the role check as usual, so the route stays one declaration.
    """

    def __init__(
        self, role: Role | None, *, bearer_setting: str | None = None, token_header: tuple[str, str] | None = None
    ) -> None:
        self.role = role
        self.bearer_setting = bearer_setting
        self.token_header = token_header

    async def __call__(self, request: Request) -> Principal | None:
        if self.role is None:
            return None
        authenticator = components_of(request).get(Authenticator)
        if self.token_header is not None:
            header, setting = self.token_header
            sent_token = request.headers.get(header)
            if sent_token is not None:
                # A caller that sends the header means to use it: a wrong or unset token is refused outright,
                # never silently tried as something else.
                accepted = accepted_tokens(authenticator.settings, setting)
                if not accepted:
                    raise TokenNotConfigured(
                        f"{header} was sent, but {setting.upper()} is not set on this server: set it, or "
                        "use an admin's key instead."
                    )
                if not matches_any(sent_token, accepted):
                    raise InvalidToken(f"Wrong {header}: it must equal {setting.upper()}.")
                return None
        if self.bearer_setting is not None:
            accepted = accepted_tokens(authenticator.settings, self.bearer_setting)
            sent = bearer_token(request)
            if accepted and sent is not None and matches_any(sent, accepted):
                return None
        principal = await authenticator.resolve(request)
        if not principal.role.at_least(self.role):
            raise RoleTooLow(f"This needs the {self.role.value} role or higher; you are {principal.role.value}.")
        return principal

    def __repr__(self) -> str:
        return f"Access({self.role.value if self.role else 'public'})"


def accepted_tokens(settings: Settings, setting: str) -> list[str]:
    """A token setting's value and, during a rotation window, its `<setting>_previous` value (the empty ones left
    out: an unset token accepts nothing)."""
    values = [getattr(settings, setting).get_secret_value()]
    previous = getattr(settings, f"{setting}_previous", None)
    if previous is not None:
        values.append(previous.get_secret_value())
    return [value for value in values if value]


def matches_any(sent: str, accepted: list[str]) -> bool:
    """Whether `sent` equals one of them, comparing with every one in constant time (no early exit that would tell
    which matched, or how far)."""
    found = False
    for value in accepted:
        found |= same(sent, value)
    return found


def require(role: Role, *, bearer_setting: str | None = None, token_header: tuple[str, str] | None = None) -> Any:
    """`dependencies=[require(Role.ADMIN)]`: the route's one access declaration.

    `bearer_setting` (see Access) also lets in `Authorization: Bearer <that setting>`; `token_header`, a
    (header, setting) pair such as ("x-job-token", "job_token"), lets in a request whose header equals the
    setting (compared in constant time) and refuses one whose header does not.
    """
    return Depends(Access(role, bearer_setting=bearer_setting, token_header=token_header))


def public() -> Any:
    """`dependencies=[public()]`: the route needs no credentials (declared, so the matrix test sees it)."""
    return Depends(Access(None))
