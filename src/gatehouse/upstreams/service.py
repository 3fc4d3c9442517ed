"""UpstreamChanges as managed resources: provisioning (validated), changes, overrides.

Every change is audited, runs as a transaction of its own and is in force on this replica when it returns (the
others reload when the bus tells them). Overrides also go on the live feed. UpstreamChanges seeded from
GATEHOUSE_CONFIG or the env shortcuts (upstreams/seeding.py) belong to that file: the API refuses to edit or
delete them (change the file, then `gatehouse reload`), but overrides apply to every upstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse.audit.service import record
from gatehouse.auth.actor import Actor
from gatehouse.core.bus import EventBus, Signal
from gatehouse.core.feed import EventFeed
from gatehouse.db.base import utcnow
from gatehouse.db.session import signal_after_commit, transaction
from gatehouse.settings import Settings
from gatehouse.upstreams.config import UpstreamConfig, UpstreamKind
from gatehouse.upstreams.errors import (
    InvalidUpstream,
    UpstreamCheckFailed,
    UpstreamManagedByConfig,
    UpstreamNameTaken,
    UpstreamNotFound,
)
from gatehouse.upstreams.events import (
    UpstreamCreatedEvent,
    UpstreamDeletedEvent,
    UpstreamOverrideClearedEvent,
    UpstreamOverrideSetEvent,
    UpstreamUpdatedEvent,
)
from gatehouse.upstreams.health import OverrideState
from gatehouse.upstreams.models import UpstreamRow
from gatehouse.upstreams.providers import UpstreamTimedOut, UpstreamUnreachable, create_provider
from gatehouse.upstreams.registry import UpstreamRegistry
from gatehouse.upstreams.upstream import config_from_row

# Fields an API caller may set (besides skip_check); the rest is bookkeeping.
EDITABLE = (
    "name",
    "kind",
    "base_url",
    "api_key",
    "api_key_env",
    "models",
    "discover",
    "headers",
    "connect_timeout",
    "read_timeout",
    "max_connections",
)
PROVISIONED_KINDS = (UpstreamKind.OLLAMA.value, UpstreamKind.OPENAI.value, UpstreamKind.ANTHROPIC.value)
CONNECTION_FIELDS = ("kind", "base_url", "api_key", "api_key_env", "headers")  # a change is checked again


def stored_fields(config: UpstreamConfig, *, with_key: bool) -> dict[str, Any]:
    """An upstream's configuration as its row stores it (the key only for API-provisioned ones)."""
    return {
        "kind": config.kind.value,
        "base_url": config.base_url,
        "api_key": config.api_key if with_key else "",
        "api_key_env": config.api_key_env,
        "models": list(config.models),
        "discover": config.discover,
        "headers": dict(config.headers),
        "connect_timeout": config.connect_timeout,
        "read_timeout": config.read_timeout,
        "max_connections": config.max_connections,
    }


def audit_view(config: UpstreamConfig) -> dict[str, Any]:
    """What the audit log keeps of an upstream's settings: never its key or header values."""
    return {
        "kind": config.kind.value,
        "base_url": config.base_url,
        "api_key_set": bool(config.api_key),
        "api_key_env": config.api_key_env or None,
        "models": list(config.models),
        "discover": config.discover,
        "headers": sorted(config.headers),
        "connect_timeout": config.connect_timeout,
        "read_timeout": config.read_timeout,
        "max_connections": config.max_connections,
    }


# --- reading ----------------------------------------------------------------------------------------


async def list_rows(session: AsyncSession) -> Sequence[UpstreamRow]:
    """Every stored upstream, oldest first."""
    return (await session.execute(select(UpstreamRow).order_by(UpstreamRow.id))).scalars().all()


async def get_row(session: AsyncSession, upstream_id: int) -> UpstreamRow:
    """A stored upstream, or 404."""
    row = await session.get(UpstreamRow, upstream_id)
    if row is None:
        raise UpstreamNotFound(
            f"No upstream with id {upstream_id}: list them with GET /admin/upstreams.", param="upstream_id"
        )
    return row


# --- validation -----------------------------------------------------------------------------------


def validated(values: dict[str, Any]) -> UpstreamConfig:
    """An upstream configuration, or a 400 naming the field and what to do."""
    kind = values.get("kind")
    if kind not in PROVISIONED_KINDS:
        raise InvalidUpstream(
            f"Unknown upstream kind {kind!r}: use `ollama` (Ollama's API), `openai` (any OpenAI-compatible "
            "server: vLLM, llama.cpp, LM Studio, OpenRouter, OpenAI) or `anthropic` (Anthropic's Messages API).",
            param="kind",
        )
    try:
        config = UpstreamConfig.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or "base_url"
        message = str(error["msg"]).removeprefix("Value error, ")
        if field == "name":
            message = "`name` must be 1-100 letters, digits, dots, dashes or underscores"
        raise InvalidUpstream(f"Invalid upstream: {field}: {message}.", param=field) from exc
    if problem := config.credential_problem():
        raise InvalidUpstream(f"Invalid upstream: {problem}.", param="api_key")
    return config


async def check_answers(config: UpstreamConfig, settings: Settings) -> list[str]:
    """List the upstream's models once, or a 400 saying why it did not answer."""
    provider = create_provider(
        config, connect_timeout=settings.upstream_connect_timeout, read_timeout=settings.upstream_read_timeout
    )
    await provider.start()
    try:
        return await provider.list_models(within=settings.upstream_probe_timeout)
    except (UpstreamUnreachable, UpstreamTimedOut) as exc:
        raise UpstreamCheckFailed(
            f"The upstream at {config.base_url} did not answer as a {config.kind.value} server: {exc}. Fix the URL "
            "or the key, or pass `skip_check: true` to save it anyway (it stays `down` until it answers).",
            param="base_url",
        ) from exc
    finally:
        await provider.close()


async def _unique_name(session: AsyncSession, name: str, *, except_id: int | None = None) -> None:
    existing = (await session.execute(select(UpstreamRow.id).where(UpstreamRow.name == name))).scalar()
    if existing is not None and existing != except_id:
        raise UpstreamNameTaken(
            f"An upstream named {name!r} already exists (id {existing}): choose another name, or change that one.",
            param="name",
        )


def _api_owned(row: UpstreamRow) -> None:
    if row.source == "config":
        raise UpstreamManagedByConfig(
            f"Upstream {row.name!r} comes from GATEHOUSE_CONFIG or the OLLAMA_/OPENAI_BASE_URL settings: change it "
            "there and run `gatehouse reload` (or POST /admin/reload). Overrides (PUT /admin/upstreams/{id}/override) "
            "work on it."
        )


def _connection_changed(before: UpstreamConfig, after: UpstreamConfig) -> bool:
    return any(getattr(after, f) != getattr(before, f) for f in CONNECTION_FIELDS)


def _same_connection(config: UpstreamConfig, checked: UpstreamConfig | None) -> bool:
    return checked is not None and not _connection_changed(checked, config)


def _announce(session: AsyncSession, bus: EventBus, upstream_id: int) -> None:
    signal_after_commit(session, bus, Signal.UPSTREAMS_CHANGED, {"id": upstream_id})


# --- changes, each its own transaction, in force here when it returns -----------------------------------


class UpstreamChanges:
    """The changes operators make to upstreams; each applies on this replica before it returns."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        registry: UpstreamRegistry,
        bus: EventBus,
        feed: EventFeed | None,
        settings: Settings,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.registry = registry
        self.bus = bus
        self.feed = feed
        self.settings = settings

    async def create(self, *, actor: Actor, values: dict[str, Any], skip_check: bool) -> UpstreamRow:
        """Provision an upstream: validated, unique, answering (unless `skip_check`)."""
        config = validated(values)
        async with self.sessionmaker() as session:
            await _unique_name(session, config.name)
        if not skip_check:  # outside the transaction: no lock is held while the URL is tried
            await check_answers(config, self.settings)
        async with transaction(self.sessionmaker) as session:
            row = UpstreamRow(name=config.name, source="api", **stored_fields(config, with_key=True))
            session.add(row)
            try:
                await session.flush()
            except IntegrityError as exc:  # a concurrent create of the same name
                raise UpstreamNameTaken(f"An upstream named {config.name!r} already exists.") from exc
            event = UpstreamCreatedEvent(
                upstream_id=row.id, name=config.name, settings=audit_view(config), checked=not skip_check
            )
            await record(session, event, actor=actor)
            _announce(session, self.bus, row.id)
        await self.registry.reload()
        return row

    async def update(self, upstream_id: int, *, actor: Actor, changes: dict[str, Any], skip_check: bool) -> UpstreamRow:
        """Change an API-provisioned upstream (a changed connection is checked again unless `skip_check`).

        The check runs outside the writing transaction (no lock is held while a URL is tried); the transaction
        then applies the change to the row as it is by then, and checks again only if someone changed the
        connection in between.
        """
        async with self.sessionmaker() as session:
            before, config = await self._changed(session, upstream_id, changes)
        checked = None
        if not skip_check and config is not None and _connection_changed(before, config):
            await check_answers(config, self.settings)
            checked = config
        async with transaction(self.sessionmaker) as session:
            before, config = await self._changed(session, upstream_id, changes)
            row = await get_row(session, upstream_id)
            if config is None:
                return row
            if not skip_check and _connection_changed(before, config) and not _same_connection(config, checked):
                await check_answers(config, self.settings)  # changed meanwhile: rare, and then checked again
            row.name = config.name
            for name, value in stored_fields(config, with_key=True).items():
                setattr(row, name, value)
            row.updated_at = utcnow()
            old, new = audit_view(before), audit_view(config)
            diff = {k: {"before": old[k], "after": new[k]} for k in new if old[k] != new[k]}
            if before.name != config.name:
                diff["name"] = {"before": before.name, "after": config.name}
            await session.flush()
            await record(session, UpstreamUpdatedEvent(upstream_id=row.id, changes=diff), actor=actor)
            _announce(session, self.bus, row.id)
        await self.registry.reload()
        return row

    @staticmethod
    async def _changed(
        session: AsyncSession, upstream_id: int, changes: dict[str, Any]
    ) -> tuple[UpstreamConfig, UpstreamConfig | None]:
        """The upstream's configuration now, and with `changes` (None: they change nothing)."""
        row = await get_row(session, upstream_id)
        _api_owned(row)
        before = config_from_row(row)
        config = validated({**before.model_dump(), **changes})
        if config == before:
            return before, None
        if config.name != row.name:
            await _unique_name(session, config.name, except_id=row.id)
        return before, config

    async def delete(self, upstream_id: int, *, actor: Actor) -> None:
        """Remove an API-provisioned upstream; requests already on it finish."""
        async with transaction(self.sessionmaker) as session:
            row = await get_row(session, upstream_id)
            _api_owned(row)
            event = UpstreamDeletedEvent(upstream_id=row.id, name=row.name, settings=audit_view(config_from_row(row)))
            await record(session, event, actor=actor)
            await session.delete(row)
            _announce(session, self.bus, row.id)
        await self.registry.reload()

    async def set_override(self, upstream_id: int, *, actor: Actor, state: OverrideState, reason: str) -> UpstreamRow:
        """Force a state: `down` stops new requests at once, `drain` lets requests on it finish, `up` ignores
        probes."""
        async with transaction(self.sessionmaker) as session:
            row = await get_row(session, upstream_id)
            before = row.override_state
            row.override_state, row.override_reason = state.value, reason
            row.override_by, row.override_at = actor.label or actor.type, utcnow()
            await session.flush()
            event = UpstreamOverrideSetEvent(
                upstream_id=row.id, name=row.name, state=state.value, before=before, reason=reason
            )
            # The bus first (this replica reloads), then the feed: a console that reacts to the event reads the
            # new state (after-commit callbacks run in the order they were registered).
            _announce(session, self.bus, row.id)
            await record(session, event, actor=actor, feed=self.feed)
        await self.registry.reload()
        return row

    async def clear_override(self, upstream_id: int, *, actor: Actor) -> UpstreamRow:
        """Return the upstream to its probed state (nothing to do, and nothing audited, without an override)."""
        async with transaction(self.sessionmaker) as session:
            row = await get_row(session, upstream_id)
            before, reason = row.override_state, row.override_reason
            if before is None:
                return row
            row.override_state = row.override_reason = row.override_by = None
            row.override_at = None
            await session.flush()
            event = UpstreamOverrideClearedEvent(upstream_id=row.id, name=row.name, before=before, reason_was=reason)
            _announce(session, self.bus, row.id)  # before the feed event, as in set_override
            await record(session, event, actor=actor, feed=self.feed)
        await self.registry.reload()
        return row
