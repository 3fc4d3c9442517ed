"""Who may use which model: the access rules in memory, and the decision for one caller, model and upstream.

A request for model M (the name the client asks for: an alias is such a name) served by upstream U is decided
in this order, the first that applies winning:

1. the key's own model list (`allowed_models`), when it has one: M must match one of its patterns;
2. the user's own rules that match (a `model` rule whose pattern matches M, or an `upstream` rule whose pattern
   matches U): refused if any of them denies, else allowed;
3. the rules of the caller's groups (the key's group when it is bound to one, else every group of the user):
   refused if any matching one denies, else allowed if one allows;
4. MODEL_ACCESS_DEFAULT.

So a user's own rules are the exceptions to their groups' (an `allow` for one person where their group denies),
and within one level an explicit deny wins. A model is listed to a caller (`/v1/models`, `/api/tags`) when at
least one of the upstreams serving it is allowed; a request is routed only to the allowed ones.

Patterns use `*` (any characters) and `?` (one), matched case-sensitively as model names are routed. Every
replica keeps all rules in memory (an organisation has hundreds, not millions), reloaded on the bus's
ACCESS_CHANGED signal and, whenever signals cannot reach it (Redis down, or no Redis and a change made by the CLI
in another process), every RELOAD_SECONDS: a change is
in force everywhere within a second.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import translate
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse.accounts.access.models import AccessRule
from gatehouse.auth.principal import Principal
from gatehouse.core.bus import Signal
from gatehouse.core.logging import get_logger
from gatehouse.core.tasks import every, logged, stop

log = get_logger("gatehouse.access")
RELOAD_SECONDS = 1.0  # without signals: how stale the rules may be at most


class Level(StrEnum):
    """What decided: the key's model list, the user's rules, a group's rules, or the default policy."""

    KEY = "key"
    USER = "user"
    GROUP = "group"
    DEFAULT = "default"


@dataclass(frozen=True, slots=True)
class Pattern:
    """A `*`/`?` pattern, compiled once; a plain name is compared as it is."""

    text: str
    regex: re.Pattern[str] | None

    @classmethod
    def of(cls, text: str) -> Pattern:
        wild = any(c in text for c in "*?[")
        return cls(text, re.compile(translate(text)) if wild else None)

    def matches(self, name: str) -> bool:
        return self.regex.match(name) is not None if self.regex is not None else name == self.text


@dataclass(frozen=True, slots=True)
class Rule:
    id: int
    allow: bool
    target: Literal["model", "upstream"]
    pattern: Pattern

    def matches(self, model: str, upstream: str) -> bool:
        return self.pattern.matches(model if self.target == "model" else upstream)


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a caller may use a model through an upstream, and what decided it (for the error and `check`)."""

    allowed: bool
    level: Level
    rule_id: int | None = None
    group_id: int | None = None


def matches_any(patterns: Iterable[str], name: str) -> bool:
    """Whether `name` matches one of the `*` patterns (a key's own model list)."""
    return any(Pattern.of(p).matches(name) for p in patterns)


class AccessPolicy:
    """The rules of every user and group, in memory (see the module docstring)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession] | None,
        *,
        default: Literal["allow", "deny"] = "allow",
    ) -> None:
        self.sessionmaker = sessionmaker
        self.default_allow = default == "allow"
        self._users: dict[int, tuple[Rule, ...]] = {}
        self._groups: dict[int, tuple[Rule, ...]] = {}
        self._key_patterns: dict[tuple[str, ...], tuple[Pattern, ...]] = {}
        # Whether bus signals reach this replica (Redis configured and up): else changes made elsewhere (another
        # replica while Redis is down, the CLI without Redis) are picked up by reading again every RELOAD_SECONDS.
        self.signals_reach_us: Callable[[], bool] = lambda: False
        self._task: asyncio.Task[None] | None = None
        self._reloading: asyncio.Lock = asyncio.Lock()
        self.loaded = 0  # reloads so far (tests wait on it)

    # --- loading -----------------------------------------------------------------------------------

    def load(self, rows: Iterable[Any]) -> None:
        """Replace the rules by these rows (AccessRule objects or rows with the same attributes)."""
        users: dict[int, list[Rule]] = {}
        groups: dict[int, list[Rule]] = {}
        for row in rows:
            rule = Rule(row.id, row.effect == "allow", row.target, Pattern.of(row.pattern))
            if row.user_id is not None:
                users.setdefault(row.user_id, []).append(rule)
            else:
                groups.setdefault(row.group_id, []).append(rule)
        self._users = {k: tuple(v) for k, v in users.items()}
        self._groups = {k: tuple(v) for k, v in groups.items()}
        self.loaded += 1

    async def reload(self) -> None:
        """Read every rule again (one query)."""
        if self.sessionmaker is None:
            return
        async with self._reloading:
            async with self.sessionmaker() as session:
                rows = (await session.execute(select(AccessRule).order_by(AccessRule.id))).scalars().all()
            self.load(rows)

    async def start(self) -> None:
        await self.reload()
        self._task = asyncio.create_task(
            every(RELOAD_SECONDS, self._reload_unless_signalled, log=log, event="access_rules_reload_failed"),
            name="gatehouse-access-reload",
        )

    async def close(self) -> None:
        await stop(self._task)
        self._task = None

    async def _reload_unless_signalled(self) -> None:
        # A failure (the database away too) leaves what is in memory standing; the next round retries.
        if not self.signals_reach_us():
            await self.reload()

    async def on_event(self, kind: str, data: dict[str, Any]) -> None:
        """Bus handler: a change somewhere (or signals that may have been missed)."""
        if kind in (Signal.ACCESS_CHANGED, Signal.RECONNECTED):
            await logged(self.reload, log=log, event="access_rules_reload_failed")

    # --- decisions ---------------------------------------------------------------------------------

    @property
    def unrestricted(self) -> bool:
        """No rule at all and the default allows: every caller without a key model list may use everything."""
        return self.default_allow and not self._users and not self._groups

    def _key_allows(self, principal: Principal, model: str) -> bool:
        patterns = principal.key_models
        if patterns is None:
            return True
        compiled = self._key_patterns.get(patterns)
        if compiled is None:
            if len(self._key_patterns) > 10_000:
                self._key_patterns.clear()
            compiled = self._key_patterns[patterns] = tuple(Pattern.of(p) for p in patterns)
        return any(p.matches(model) for p in compiled)

    def decide(self, principal: Principal, model: str, upstream: str) -> Decision:
        """May this caller use `model` served by `upstream`? (See the module docstring for the order.)"""
        if not self._key_allows(principal, model):
            return Decision(False, Level.KEY)
        own = self._users.get(principal.user_id)
        if own:
            matched = [rule for rule in own if rule.matches(model, upstream)]
            if matched:
                denied = next((rule for rule in matched if not rule.allow), None)
                return Decision(denied is None, Level.USER, (denied or matched[0]).id)
        allowed: Decision | None = None
        for group_id in principal.group_ids:
            for rule in self._groups.get(group_id, ()):
                if rule.matches(model, upstream):
                    if not rule.allow:
                        return Decision(False, Level.GROUP, rule.id, group_id)
                    allowed = allowed or Decision(True, Level.GROUP, rule.id, group_id)
        return allowed or Decision(self.default_allow, Level.DEFAULT)

    def allows(self, principal: Principal, model: str, upstream: str) -> bool:
        if self.unrestricted and principal.key_models is None:
            return True
        return self.decide(principal, model, upstream).allowed

    def may_list(self, principal: Principal, model: str, upstreams: Iterable[str]) -> bool:
        """Whether the caller sees `model` in the model lists: some upstream serving it is allowed."""
        return any(self.allows(principal, model, upstream) for upstream in upstreams)
