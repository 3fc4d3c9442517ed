"""Upstreams seeded from GATEHOUSE_CONFIG and the env shortcuts: stored at every start, each change audited."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse.audit.service import record
from gatehouse.auth.actor import Actor
from gatehouse.core.logging import get_logger
from gatehouse.db.base import utcnow
from gatehouse.upstreams.config import GatewayConfig, UpstreamKind
from gatehouse.upstreams.events import UpstreamReseededEvent, UpstreamSeededEvent, UpstreamUnseededEvent
from gatehouse.upstreams.models import UpstreamRow
from gatehouse.upstreams.service import audit_view, stored_fields

log = get_logger("gatehouse.upstreams")
CONFIG_ACTOR = Actor.system("GATEHOUSE_CONFIG")


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
            fields = stored_fields(upstream, with_key=False)
            row = rows.get(name)
            event: type[UpstreamSeededEvent | UpstreamReseededEvent]
            if row is None:
                row = UpstreamRow(name=name, source="config", **fields)
                session.add(row)
                await session.flush()
                event = UpstreamSeededEvent
            elif row.source != "config" or any(getattr(row, k) != v for k, v in fields.items()):
                if row.source != "config":
                    log.warning("upstream_taken_over_by_config", upstream=name)
                row.source = "config"
                for key, value in fields.items():
                    setattr(row, key, value)
                row.updated_at = utcnow()
                event = UpstreamReseededEvent
            else:
                continue
            await record(
                session, event(upstream_id=row.id, name=name, settings=audit_view(upstream)), actor=CONFIG_ACTOR
            )
        for name, row in rows.items():
            if row.source == "config" and name not in wanted:
                gone = UpstreamUnseededEvent(
                    upstream_id=row.id, name=name, reason="no longer in GATEHOUSE_CONFIG or the env"
                )
                await record(session, gone, actor=CONFIG_ACTOR)
                await session.delete(row)
