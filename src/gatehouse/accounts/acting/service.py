"""The person a front-end's key acts for: found by email (cached per key and email, so a warm person costs no
database read), created on first sight when their email domain allows it, and checked as their own key would be.

A request served for a person is theirs: their access rules and groups, their quotas, spend limits and rate limits,
their request-log rows; the key's own restrictions (models, surfaces, networks, rate, budgets) stay on top. The
cache is emptied by the bus as the key cache is: USER_CHANGED for the person (disabled, blocked, a group joined),
KEY_CHANGED for the key.

What the front-end learns of a person is what that person's own key would tell them: that their account is
disabled, pending or blocked (never the block's reason), or that there is none. The front-end's key can tell that
much anyway, since a request for an active person succeeds; an administrator granted it that trust. A key that does
not act for users is refused before anything is looked up, with the same answer whatever it named.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from pydantic import validate_email
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse.accounts.acting.errors import ActingNotAllowed, ActingUserMissing, ActingUserUnknown
from gatehouse.accounts.acting.events import ActingRefusedEvent, UserCreatedOnFirstSightEvent
from gatehouse.accounts.acting.naming import EMAIL, Naming, email_of
from gatehouse.accounts.errors import EmailTaken
from gatehouse.accounts.users import service as users
from gatehouse.audit.service import record
from gatehouse.auth.access import load_principal
from gatehouse.auth.actor import Actor
from gatehouse.auth.cache import AuthCache
from gatehouse.auth.errors import AccountBlocked, AccountDisabled, AccountPending
from gatehouse.auth.models import User
from gatehouse.auth.principal import Principal
from gatehouse.auth.roles import Role, UserStatus
from gatehouse.auth.tokens import hash_token
from gatehouse.core.feed import EventFeed
from gatehouse.core.logging import get_logger
from gatehouse.db.base import utcnow
from gatehouse.db.session import transaction
from gatehouse.settings import Settings

log = get_logger("gatehouse.acting")
UNKNOWN_SECONDS = 5.0  # an unknown person is remembered this long: an account created meanwhile works after it
REFUSAL_AUDIT_SECONDS = 60.0  # a key naming people without acting for users is audited this often at most
REFUSAL_MEMORY = 10_000  # keys remembered for that; forgotten all at once beyond


class Acting:
    """Serves a front-end's requests as the people they name (see the module docstring)."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        read_sessionmaker: async_sessionmaker[AsyncSession],
        feed: EventFeed | None = None,
    ) -> None:
        self.naming = Naming.from_settings(settings)
        self.owner_when_unnamed = settings.acts_for_users_unnamed == "owner"
        domains = settings.acts_for_users_create_domains
        self.create_domains = frozenset(domains.split(",")) if domains else frozenset()
        self.default_quotas = (settings.default_messages_per_day, settings.default_tokens_per_day)
        self.sessionmaker = sessionmaker
        self.read_sessionmaker = read_sessionmaker  # reads only: on SQLite it never waits for a writer
        self.feed = feed
        self.cache = AuthCache(ttl_seconds=settings.auth_cache_seconds, negative_ttl_seconds=UNKNOWN_SECONDS)
        self._refusals: dict[tuple[int | None, int], tuple[float, int]] = {}

    def on_event(self, kind: str, data: dict[str, Any]) -> None:
        """Bus handler: forget people and keys as the key cache does."""
        self.cache.on_event(kind, data)

    def on_redis(self, up: bool) -> None:
        """While Redis is unreachable, cached people live seconds only (as cached keys do)."""
        self.cache.on_redis(up)

    # --- serving a request ---------------------------------------------------------------------------

    async def principal_for(
        self,
        key: Principal,
        headers: Mapping[str, str],
        body: Mapping[str, Any] | None,
        surface: str | None,
        *,
        actor: Callable[[], Actor],
    ) -> Principal:
        """Whom a request of this front-end's `key` is served as: the person it names. A request naming nobody is
        refused (400), or served as the key's owner when ACTS_FOR_USERS_UNNAMED=owner; `body` None (model lists,
        stored responses: only a header can name someone there) is served as the key's owner too."""
        named = self.naming.named(headers, body, surface)
        if named is not None:
            return await self.person(key, email_of(named), actor=actor)
        if body is None or self.owner_when_unnamed:
            return key
        ways = self.naming.ways(surface)
        if not ways:
            raise ActingUserMissing(
                "This API key acts for the users of a front-end, but this request has no way to name the person it is "
                f"for: an administrator adds `header` to ACTS_FOR_USERS_SOURCES, then send their email in "
                f"{self.naming.refused[0]}."
            )
        raise ActingUserMissing(
            f"This API key acts for the users of a front-end: name the person this request is for, by their email, in "
            f"{ways}."
        )

    async def person(self, key: Principal, email: str, *, actor: Callable[[], Actor]) -> Principal:
        """The principal of `email`'s person through the front-end's `key`: from the cache when warm, else one read
        (shared by concurrent requests), or their account created on first sight; 403 when unknown or not active."""
        found = await self.cache.lookup(f"{key.key_id}:{email}", lambda: self._load(key, email, actor))
        if found is None:
            raise ActingUserUnknown(self._unknown(email))
        _check_active(found)
        return _acting(found, key)

    def _unknown(self, email: str) -> str:
        message = f"No Gatehouse account has the email {email}: ask an administrator to create one"
        if self.create_domains:
            return message + " (accounts are created on first use only in ACTS_FOR_USERS_CREATE_DOMAINS' domains)."
        return message + "."

    def creatable(self, email: str) -> bool:
        """Whether an unknown person with this email is created on first sight."""
        return email.rpartition("@")[2] in self.create_domains

    async def _load(self, key: Principal, email: str, actor: Callable[[], Actor]) -> Principal | None:
        """The person (None: unknown), their account created first when their domain allows it."""
        async with self.read_sessionmaker() as session:
            user_id = (await session.execute(select(User.id).where(User.email == email))).scalar_one_or_none()
            found = await load_principal(session, user_id=user_id) if user_id is not None else None
        if found is None and self.creatable(email):
            created = await self._create(key, email, actor())
            if created is not None:
                async with self.read_sessionmaker() as session:
                    found = await load_principal(session, user_id=created)
        # Cached under the front-end's key too (the cache forgets a key's people with it); the rest of the key's
        # settings are taken from the request's own key principal, never from here.
        return _with_key(found, key) if found is not None else None

    async def _create(self, key: Principal, email: str, actor: Actor) -> int | None:
        """Create the person's account (its id; None when no account can have this address), audited as the
        front-end's key's doing. Another request (another replica, another key) creating it first is no error: the
        account exists either way, and that one's id is returned."""
        try:
            _, valid = validate_email(email)  # as POST /admin/users validates it
        except ValueError:
            return None
        if users.normalise_email(valid) != email:
            return None  # an address spelt another way than its account would be: it stays unknown
        messages, tokens = self.default_quotas
        async with transaction(self.sessionmaker) as session:
            try:
                user = await users.new_user(session, email=email, messages_per_day=messages, tokens_per_day=tokens)
            except EmailTaken:
                existing = await users.get_by_email(session, email=email)
                return existing.id if existing is not None else None
            await session.flush()
            event = UserCreatedOnFirstSightEvent(
                user_id=user.id,
                email=user.email,
                role=user.role,
                key_id=key.key_id,
                messages_per_day=user.messages_per_day,
                tokens_per_day=user.tokens_per_day,
            )
            await record(session, event, actor=actor, feed=self.feed)
        log.info("user_created_on_first_sight", user_id=user.id, key_id=key.key_id)
        return user.id

    # --- keys that do not act for users ------------------------------------------------------------------

    async def refuse(self, principal: Principal, header: str, value: str, *, actor: Actor) -> NoReturn:
        """Refuse a request of a key that does not act for users but names a person (403 acting_not_allowed),
        audited as a security event at most once a minute per key on this replica."""
        subject = (principal.key_id, principal.user_id)
        now = time.monotonic()
        last, count = self._refusals.get(subject, (None, 0))
        if last is not None and now - last < REFUSAL_AUDIT_SECONDS:
            self._refusals[subject] = (last, count + 1)
        else:
            if len(self._refusals) >= REFUSAL_MEMORY:
                self._refusals.clear()
            self._refusals[subject] = (now, 0)
            await self._audit_refusal(principal, header, value, refused=count + 1, actor=actor)
        raise ActingNotAllowed(
            f"This API key does not act for users, so it may not name one in {header}: send the request without that "
            "header to use your own account, or ask an administrator to mark the key acts_for_users (a front-end's "
            "key)."
        )

    async def _audit_refusal(
        self, principal: Principal, header: str, value: str, *, refused: int, actor: Actor
    ) -> None:
        named = value.strip().lower()
        async with transaction(self.sessionmaker) as session:
            named_user_id = None
            if len(named) <= 320 and EMAIL.fullmatch(named):
                query = select(User.id).where(User.email == named)
                named_user_id = (await session.execute(query)).scalar_one_or_none()
            event = ActingRefusedEvent(
                key_id=principal.key_id,
                header=header,
                named_user_id=named_user_id,
                named_hash=hash_token(named)[:16],
                refused=refused,
            )
            await record(session, event, actor=actor, feed=self.feed)
        log.warning("acting_refused", key_id=principal.key_id, user_id=principal.user_id, header=header)


def _with_key(person: Principal, key: Principal) -> Principal:
    return Principal(
        user_id=person.user_id,
        email=person.email,
        role=person.role,
        status=person.status,
        key_id=key.key_id,
        blocked_at=person.blocked_at,
        blocked_until=person.blocked_until,
        group_ids=person.group_ids,
    )


def _acting(person: Principal, key: Principal) -> Principal:
    """The request's principal: the person (their account, state and groups) through the front-end's key (its
    restrictions). Never more than a user: the gateway grants roles nothing, and a front-end naming an administrator
    must not gain what a role may grant one day. A group the key is bound to is not the person's: not used."""
    return Principal(
        user_id=person.user_id,
        email=person.email,
        role=Role.USER,
        status=person.status,
        key_id=key.key_id,
        key_expires_at=key.key_expires_at,
        blocked_at=person.blocked_at,
        blocked_until=person.blocked_until,
        group_ids=person.group_ids,
        key_models=key.key_models,
        key_surfaces=key.key_surfaces,
        key_networks=key.key_networks,
        key_rate=key.key_rate,
    )


def _check_active(person: Principal) -> None:
    """The usual refusals of an account that may not act, naming the person (never a block's reason)."""
    whose = f"The Gatehouse account of {person.email}"
    if person.status is UserStatus.DISABLED:
        raise AccountDisabled(f"{whose} is disabled: ask an administrator.")
    if person.status is UserStatus.PENDING:
        raise AccountPending(f"{whose} is pending approval: ask an administrator.")
    if person.blocked_at is not None and person.blocked_now(utcnow()):
        until = person.blocked_until
        when = f" until {until.strftime('%Y-%m-%d %H:%M UTC')}" if until else ""
        raise AccountBlocked(f"{whose} is blocked{when}: ask an administrator.")
