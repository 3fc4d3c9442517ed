"""Live reload: re-read the settings (the process's environment, which cannot change, plus NAME_FILE files and the
.env file) and GATEHOUSE_CONFIG, validate everything first, then apply what can change while serving.

A bad value or file applies nothing: the error names the setting (or the file and field) and the old settings
stay. What can change live is LIVE_SETTINGS; any other setting that changed is reported as needing a restart and
kept at its old value, so no component sees a value the process does not actually use (a new DATABASE_URL with
the old engine). Each component takes the new Settings through one hook, `apply_settings(settings)`, which the
composition root hands to the Reloader; the upstreams also take the new file (new pools where a key or URL
changed, requests in flight finishing on the old ones).

Every replica reloads its own files: POST /admin/reload and `gatehouse reload` publish Signal.CONFIG_RELOAD, and
each replica audits its outcome under the reload's id (config.reloaded / config.reload_failed), which is how
`gatehouse reload` learns who answered.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import SecretStr, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse.audit.service import record
from gatehouse.auth.actor import Actor
from gatehouse.configuration.events import ConfigReloadedEvent, ConfigReloadFailedEvent
from gatehouse.core.bus import EventBus, Signal
from gatehouse.core.feed import EventFeed
from gatehouse.core.logging import get_logger
from gatehouse.db.session import transaction
from gatehouse.limits.prices.config import apply_config
from gatehouse.settings import Settings
from gatehouse.upstreams.config import ConfigError, GatewayConfig, load_config
from gatehouse.upstreams.registry import UpstreamRegistry
from gatehouse.upstreams.seeding import sync_from_config

log = get_logger("gatehouse.reload")
SettingsHook = Callable[[Settings], Awaitable[None] | None]
T = TypeVar("T")
KEPT_RESULTS = 50  # this replica's latest outcomes, by reload id

# What a reload applies (lower-case field names); every other changed setting needs a restart. Each one is read
# live by the component whose hook takes the new Settings (runtime.py wires them), or by the routes through the
# provided Settings.
LIVE_SETTINGS = frozenset(
    {
        # upstreams: the env shortcuts and the file (the registry builds new pools for what changed)
        "ollama_base_url",
        "ollama_api_key",
        "openai_base_url",
        "openai_api_key",
        "anthropic_base_url",
        "anthropic_api_key",
        "gatehouse_config",
        "demo_upstream",
        "upstream_probe_timeout",
        # secrets and their rotation windows (auth/access.py reads them per request)
        "jwt_secret",
        "jwt_secret_previous",
        "job_token",
        "job_token_previous",
        "metrics_token",
        "metrics_token_previous",
        # jobs read the runner's settings at each run (backups, the purge's retention)
        "backup_key",
        "backup_keep",
        "audit_retention_days",
        "request_log_retention_days",
        "responses_retention_days",
        # budget alert webhooks (alerts/watcher.py builds a new Webhook)
        "alert_webhook_url",
        "alert_webhook_secret",
        "alert_webhook_timeout_seconds",
        "alert_webhook_max_attempts",
        "alert_webhook_backoff_seconds",
        "alert_webhook_max_seconds",
        # log levels (monitoring/loglevel.py; an override set with PUT /admin/log-level stays on top until it ends)
        "log_level",
        "log_sql",
        "slow_sql_ms",
        # rate-limit defaults (limits/ratelimit.py reads its settings per request) and plain values routes read
        "rate_limit_per_minute",
        "rate_limit_ip_per_minute",
        "stream_ping_seconds",
        "session_ttl_hours",
        "login_backoff_max_seconds",
        "signup_mode",
        "default_messages_per_day",
        "default_tokens_per_day",
    }
)


class ReloadRefused(Exception):
    """The new settings or file are invalid: nothing was applied; the message names what to fix."""


@dataclass(frozen=True)
class ReloadResult:
    """One replica's outcome of one reload."""

    id: str
    replica: str
    ok: bool
    changed: list[str] = field(default_factory=list)  # applied (setting names, upper case)
    restart_needed: list[str] = field(default_factory=list)  # changed, not applied
    upstreams: list[str] = field(default_factory=list)  # upstreams added, removed or changed
    error: str | None = None

    def public(self) -> dict[str, Any]:
        """As the API and the CLI show it (names only, never values)."""
        return {
            "id": self.id,
            "replica": self.replica,
            "ok": self.ok,
            "changed": self.changed,
            "restart_needed": self.restart_needed,
            "upstreams": self.upstreams,
            "error": self.error,
        }


def new_reload_id() -> str:
    """A reload's id, shared by every replica's audit event of it."""
    return uuid.uuid4().hex[:16]


def describe_invalid(exc: ValidationError) -> str:
    """A settings ValidationError as `NAME: problem` items (pydantic's messages hold no input values)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in err['loc']).upper() or 'settings'}: {err['msg']}" for err in exc.errors()
    )


def _value(settings: Settings, name: str) -> Any:
    value = getattr(settings, name)
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def changed_settings(old: Settings, new: Settings) -> list[str]:
    """The names (lower case) of the settings whose values differ."""
    return [name for name in type(old).model_fields if _value(old, name) != _value(new, name)]


def changed_upstreams(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """The upstreams added, removed, or configured differently (a key, a URL, the models...)."""
    before = {u.name: u for u in old.upstreams}
    after = {u.name: u for u in new.upstreams}
    return sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))


def read_settings(reread: Callable[[], Settings]) -> tuple[Settings, GatewayConfig]:
    """The settings and GATEHOUSE_CONFIG as they are now, validated; ReloadRefused names what is wrong."""
    try:
        settings = reread()
    except ValidationError as exc:
        raise ReloadRefused(f"invalid setting: {describe_invalid(exc)}") from exc
    problems = settings.problems()
    if problems:
        raise ReloadRefused("unsafe settings: " + "; ".join(problems))
    try:
        config = load_config(settings)
    except ConfigError as exc:
        raise ReloadRefused(str(exc)) from exc
    return settings, config


class Reloader:
    """Re-reads and applies this replica's configuration, one reload at a time, and audits each outcome."""

    def __init__(
        self,
        settings: Settings,
        *,
        replica: str,
        sessionmaker: async_sessionmaker[AsyncSession],
        upstreams: UpstreamRegistry,
        bus: EventBus,
        feed: EventFeed | None,
        hooks: Sequence[SettingsHook],
        reread: Callable[[], Settings] = Settings,
    ) -> None:
        self.settings = settings
        self.replica = replica
        self._sessionmaker = sessionmaker
        self._upstreams = upstreams
        self._bus = bus
        self._feed = feed
        # Where a reload reads the settings from: the environment, NAME_FILE files and .env (tests point it at theirs).
        self.reread = reread
        self._hooks = list(hooks)
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.results: OrderedDict[str, ReloadResult] = OrderedDict()

    async def everywhere(self, *, actor: Actor) -> ReloadResult:
        """Reload every replica (each re-reads its own files); this replica's outcome."""
        reload_id = new_reload_id()
        # Published first, so the others reload while this one does; this one skips its own echo.
        await self._bus.publish(Signal.CONFIG_RELOAD, signal_data(reload_id, origin=self.replica, actor=actor))
        return await self.reload(reload_id=reload_id, actor=actor)

    async def on_event(self, kind: str, data: dict[str, Any]) -> None:
        """Bus handler: a reload asked through another replica (or the CLI) runs here too, in the background (the
        bus's listener does not wait for it)."""
        if kind == Signal.RECONNECTED:
            self._background(self._catch_up())
            return
        if kind != Signal.CONFIG_RELOAD or data.get("origin") == self.replica:
            return
        actor = actor_of(data.get("actor"))
        self.start(reload_id=str(data.get("id") or new_reload_id()), actor=actor)

    def start(self, *, reload_id: str | None = None, actor: Actor) -> asyncio.Task[ReloadResult]:
        """Reload in the background (a signal handler, the bus)."""
        return self._background(self.reload(reload_id=reload_id, actor=actor))

    def _background(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.create_task(work, name="gatehouse-reload")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _catch_up(self) -> None:
        """After a Redis outage: a reload published meanwhile was not heard here. Reload when this replica's files
        now say something else than what it applied (else nothing, and nothing audited)."""
        try:
            new, config = read_settings(self.reread)
        except ReloadRefused:
            return  # an invalid file is reported when a reload is asked for, not on every reconnection
        live = [name for name in changed_settings(self.settings, new) if name in LIVE_SETTINGS]
        if live or changed_upstreams(self._upstreams.file_config, config):
            await self.reload(actor=Actor.system("bus.reconnected"))

    async def close(self) -> None:
        """Let a reload under way finish (it is short: files, a few rows, new pools)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def reload(self, *, reload_id: str | None = None, actor: Actor) -> ReloadResult:
        """Re-read, validate, apply, audit; the outcome (a failure applies nothing)."""
        reload_id = reload_id or new_reload_id()
        async with self._lock:
            try:
                new, config = read_settings(self.reread)
            except ReloadRefused as exc:
                result = ReloadResult(id=reload_id, replica=self.replica, ok=False, error=str(exc))
            else:
                result = await self._apply(reload_id, new, config)
            await self._audit(result, actor)
            self.results[reload_id] = result
            while len(self.results) > KEPT_RESULTS:
                self.results.popitem(last=False)
        if result.ok:
            log.info(
                "config_reloaded",
                reload_id=reload_id,
                changed=result.changed,
                restart_needed=result.restart_needed,
                upstreams=result.upstreams,
            )
        else:
            log.error("config_reload_failed", reload_id=reload_id, error=result.error)
        return result

    async def _apply(self, reload_id: str, new: Settings, config: GatewayConfig) -> ReloadResult:
        old = self.settings
        changed = changed_settings(old, new)
        restart = [name for name in changed if name not in LIVE_SETTINGS]
        # What needs a restart keeps its old value: components must not see a value the process does not use.
        applied = new.model_copy(update={name: getattr(old, name) for name in restart})
        upstreams = changed_upstreams(self._upstreams.file_config, config)
        failures: list[str] = []
        try:
            await sync_from_config(self._sessionmaker, config)  # the stored upstreams follow the file
            await self._upstreams.apply_settings(applied, config)
        except Exception as exc:
            log.exception("config_reload_step_failed", step="upstreams")
            failures.append(f"upstreams: {type(exc).__name__}")
        try:
            await apply_config(self._sessionmaker, config.prices, currency=applied.price_currency, bus=self._bus)
        except Exception as exc:
            log.exception("config_reload_step_failed", step="prices")
            failures.append(f"prices: {type(exc).__name__}")
        for hook in self._hooks:
            try:
                outcome = hook(applied)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception as exc:
                name = getattr(hook, "__qualname__", repr(hook))
                log.exception("config_reload_step_failed", step=name)
                failures.append(f"{name}: {type(exc).__name__}")
        self.settings = applied
        return ReloadResult(
            id=reload_id,
            replica=self.replica,
            ok=not failures,
            changed=sorted(name.upper() for name in changed if name in LIVE_SETTINGS),
            restart_needed=sorted(name.upper() for name in restart),
            upstreams=upstreams,
            error=("applied, except: " + "; ".join(failures) + " (see the log)") if failures else None,
        )

    async def _audit(self, result: ReloadResult, actor: Actor) -> None:
        event: ConfigReloadedEvent | ConfigReloadFailedEvent
        if result.ok:
            event = ConfigReloadedEvent(
                replica=result.replica,
                reload_id=result.id,
                changed=result.changed,
                restart_needed=result.restart_needed,
                upstreams=result.upstreams,
            )
        else:
            event = ConfigReloadFailedEvent(replica=result.replica, reload_id=result.id, error=result.error or "")
        try:
            async with transaction(self._sessionmaker) as session:
                await record(session, event, actor=actor, feed=self._feed)
        except Exception:
            log.exception("config_reload_audit_failed", reload_id=result.id)


def signal_data(reload_id: str, *, origin: str, actor: Actor) -> dict[str, Any]:
    """What Signal.CONFIG_RELOAD carries: the reload's id, who published it, and who asked (for the audit)."""
    return {
        "id": reload_id,
        "origin": origin,
        "actor": {"type": actor.type, "user_id": actor.user_id, "key_id": actor.key_id, "label": actor.label},
    }


def actor_of(data: Any) -> Actor:
    """Who asked for a reload heard on the bus."""
    if not isinstance(data, dict):
        return Actor.system("reload")
    return Actor(
        type=str(data.get("type") or "system"),
        user_id=data.get("user_id") if isinstance(data.get("user_id"), int) else None,
        key_id=data.get("key_id") if isinstance(data.get("key_id"), int) else None,
        label=str(data["label"]) if data.get("label") is not None else None,
    )
