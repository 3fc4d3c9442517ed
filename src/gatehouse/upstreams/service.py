"""Upstreams as managed resources: provisioning (validated), changes, overrides, and seeding from the file.

Every change is audited and announced on the bus, so that each replica reloads its routing table.
Upstreams seeded from GATEHOUSE_CONFIG or the env shortcuts belong to that file: the API refuses to edit or
delete them (change the file and restart), but overrides apply to every upstream.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse.audit.service import record
from gatehouse.auth.actor import Actor
from gatehouse.core.bus import EventBus
from gatehouse.core.logging import get_logger
from gatehouse.db.base import utcnow
from gatehouse.db.session import after_commit
from gatehouse.errors import BadRequest, Conflict, NotFound
from gatehouse.settings import Settings
from gatehouse.upstreams.config import GatewayConfig, UpstreamConfig, UpstreamKind
from gatehouse.upstreams.health import OverrideState
from gatehouse.upstreams.models import UpstreamRow
from gatehouse.upstreams.providers import UpstreamTimedOut, UpstreamUnreachable, create_provider
from gatehouse.upstreams.registry import UPSTREAMS_CHANGED, config_from_row

log = get_logger("gatehouse.upstreams")
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
PROVISIONED_KINDS = (UpstreamKind.OLLAMA.value, UpstreamKind.OPENAI.value)
CONFIG_ACTOR = Actor.system("GATEHOUSE_CONFIG")


def _stored_fields(config: UpstreamConfig, *, with_key: bool) -> dict[str, Any]:
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


# --- validation -----------------------------------------------------------------------------------


def validated(values: dict[str, Any]) -> UpstreamConfig:
    """An upstream configuration, or a 400 naming the field and what to do."""
    kind = values.get("kind")
    if kind not in PROVISIONED_KINDS:
        raise BadRequest(
            f"Unknown upstream kind {kind!r}: use `ollama` (Ollama's API) or `openai` (any OpenAI-compatible "
            "server: vLLM, llama.cpp, LM Studio, OpenRouter, OpenAI).",
            code="invalid_upstream",
            param="kind",
        )
    try:
        return UpstreamConfig.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or "base_url"
        message = str(error["msg"]).removeprefix("Value error, ")
        if field == "name":
            message = "`name` must be 1-100 letters, digits, dots, dashes or underscores"
        raise BadRequest(f"Invalid upstream: {field}: {message}.", code="invalid_upstream", param=field) from exc


async def check_answers(config: UpstreamConfig, settings: Settings) -> list[str]:
    """List the upstream's models once, or a 400 saying why it did not answer."""
    provider = create_provider(
        config, connect_timeout=settings.upstream_connect_timeout, read_timeout=settings.upstream_read_timeout
    )
    await provider.start()
    try:
        return await provider.list_models(within=settings.upstream_probe_timeout)
    except (UpstreamUnreachable, UpstreamTimedOut) as exc:
        raise BadRequest(
            f"The upstream at {config.base_url} did not answer as a {config.kind.value} server: {exc}. Fix the URL "
            "or the key, or pass `skip_check: true` to save it anyway (it stays `down` until it answers).",
            code="upstream_check_failed",
            param="base_url",
        ) from exc
    finally:
        await provider.close()


async def _unique_name(session: AsyncSession, name: str, *, except_id: int | None = None) -> None:
    existing = (await session.execute(select(UpstreamRow.id).where(UpstreamRow.name == name))).scalar()
    if existing is not None and existing != except_id:
        raise BadRequest(
            f"An upstream named {name!r} already exists (id {existing}): choose another name, or change that one.",
            code="upstream_name_taken",
            param="name",
        )


async def get_row(session: AsyncSession, upstream_id: int) -> UpstreamRow:
    row = await session.get(UpstreamRow, upstream_id)
    if row is None:
        raise NotFound(f"No upstream with id {upstream_id}: list them with GET /admin/upstreams.", param="upstream_id")
    return row


def _announce(session: AsyncSession, bus: EventBus, upstream_id: int) -> None:
    after_commit(session, lambda: bus.publish(UPSTREAMS_CHANGED, {"id": upstream_id}))


def _api_owned(row: UpstreamRow) -> None:
    if row.source == "config":
        raise Conflict(
            f"Upstream {row.name!r} comes from GATEHOUSE_CONFIG or the OLLAMA_/OPENAI_BASE_URL settings: change it "
            "there and restart. Overrides (PUT /admin/upstreams/{id}/override) work on it.",
            code="upstream_managed_by_config",
        )


# --- provisioning ---------------------------------------------------------------------------------


async def create(
    session: AsyncSession, *, values: dict[str, Any], skip_check: bool, settings: Settings, bus: EventBus, actor: Actor
) -> UpstreamRow:
    config = validated(values)
    await _unique_name(session, config.name)
    if not skip_check:
        await check_answers(config, settings)
    row = UpstreamRow(name=config.name, source="api", **_stored_fields(config, with_key=True))
    session.add(row)
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent create of the same name
        raise BadRequest(f"An upstream named {config.name!r} already exists.", code="upstream_name_taken") from exc
    await record(
        session,
        actor=actor,
        action="upstream.created",
        target_type="upstream",
        target_id=row.id,
        details={"name": config.name, **audit_view(config), "checked": not skip_check},
    )
    _announce(session, bus, row.id)
    return row


async def update(
    session: AsyncSession,
    row: UpstreamRow,
    *,
    changes: dict[str, Any],
    skip_check: bool,
    settings: Settings,
    bus: EventBus,
    actor: Actor,
) -> UpstreamRow:
    _api_owned(row)
    before = config_from_row(row)
    config = validated({**before.model_dump(), **changes})
    if config == before:
        return row
    if config.name != row.name:
        await _unique_name(session, config.name, except_id=row.id)
    connection = ("kind", "base_url", "api_key", "api_key_env", "headers")
    if not skip_check and any(getattr(config, f) != getattr(before, f) for f in connection):
        await check_answers(config, settings)
    row.name = config.name
    for name, value in _stored_fields(config, with_key=True).items():
        setattr(row, name, value)
    row.updated_at = utcnow()
    old, new = audit_view(before), audit_view(config)
    diff = {k: {"before": old[k], "after": new[k]} for k in new if old[k] != new[k]}
    if before.name != config.name:
        diff["name"] = {"before": before.name, "after": config.name}
    await session.flush()
    await record(
        session, actor=actor, action="upstream.updated", target_type="upstream", target_id=row.id, details=diff
    )
    _announce(session, bus, row.id)
    return row


async def delete(session: AsyncSession, row: UpstreamRow, *, bus: EventBus, actor: Actor) -> None:
    _api_owned(row)
    await record(
        session,
        actor=actor,
        action="upstream.deleted",
        target_type="upstream",
        target_id=row.id,
        details={"name": row.name, **audit_view(config_from_row(row))},
    )
    await session.delete(row)
    _announce(session, bus, row.id)


# --- overrides ------------------------------------------------------------------------------------


async def set_override(
    session: AsyncSession, row: UpstreamRow, *, state: OverrideState, reason: str, bus: EventBus, actor: Actor
) -> UpstreamRow:
    before = row.override_state
    row.override_state, row.override_reason = state.value, reason
    row.override_by, row.override_at = actor.label or actor.type, utcnow()
    await session.flush()
    await record(
        session,
        actor=actor,
        action="upstream.override_set",
        target_type="upstream",
        target_id=row.id,
        details={"name": row.name, "state": state.value, "before": before, "reason": reason},
    )
    _announce(session, bus, row.id)
    return row


async def clear_override(session: AsyncSession, row: UpstreamRow, *, bus: EventBus, actor: Actor) -> UpstreamRow:
    before, reason = row.override_state, row.override_reason
    if before is None:
        return row
    row.override_state = row.override_reason = row.override_by = None
    row.override_at = None
    await session.flush()
    await record(
        session,
        actor=actor,
        action="upstream.override_cleared",
        target_type="upstream",
        target_id=row.id,
        details={"name": row.name, "before": before, "reason_was": reason},
    )
    _announce(session, bus, row.id)
    return row


# --- seeding from the file --------------------------------------------------------------------------


async def sync_from_config(sessionmaker: async_sessionmaker[AsyncSession], config: GatewayConfig) -> None:
    """Store the file's (and env shortcuts') upstreams; drop stored ones the file no longer has. Idempotent."""
    for attempt in range(3):
        try:
            await _sync(sessionmaker, config)
            return
        except IntegrityError:  # another replica seeded the same name at the same moment: look again
            if attempt == 2:
                raise


async def _sync(sessionmaker: async_sessionmaker[AsyncSession], config: GatewayConfig) -> None:
    wanted = {u.name: u for u in config.upstreams if u.kind is not UpstreamKind.DEMO}
    async with sessionmaker() as session, session.begin():
        rows = {r.name: r for r in (await session.execute(select(UpstreamRow))).scalars()}
        for name, upstream in wanted.items():
            fields = _stored_fields(upstream, with_key=False)
            row = rows.get(name)
            if row is None:
                row = UpstreamRow(name=name, source="config", **fields)
                session.add(row)
                await session.flush()
                action = "upstream.seeded"
            elif row.source != "config" or any(getattr(row, k) != v for k, v in fields.items()):
                if row.source != "config":
                    log.warning("upstream_taken_over_by_config", upstream=name)
                row.source = "config"
                for key, value in fields.items():
                    setattr(row, key, value)
                row.updated_at = utcnow()
                action = "upstream.reseeded"
            else:
                continue
            await record(
                session,
                actor=CONFIG_ACTOR,
                action=action,
                target_type="upstream",
                target_id=row.id,
                details={"name": name, **audit_view(upstream)},
            )
        for name, row in rows.items():
            if row.source == "config" and name not in wanted:
                await record(
                    session,
                    actor=CONFIG_ACTOR,
                    action="upstream.unseeded",
                    target_type="upstream",
                    target_id=row.id,
                    details={"name": name, "reason": "no longer in GATEHOUSE_CONFIG or the env"},
                )
                await session.delete(row)
