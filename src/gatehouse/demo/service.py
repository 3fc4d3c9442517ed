"""`gatehouse demo seed` and `gatehouse demo reset`: the refusals (production, a database in use), the accounts,
the traffic, and the audit events, in that order."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.audit.service import record
from gatehouse.auth.models import User
from gatehouse.core.bus import EventBus, create_bus
from gatehouse.db.engine import create_engine, create_sessionmaker
from gatehouse.db.session import transaction
from gatehouse.demo import traffic
from gatehouse.demo.errors import DemoExists, DemoInProduction, NotFresh
from gatehouse.demo.events import DemoSeededEvent
from gatehouse.demo.plan import DOMAIN, PEOPLE
from gatehouse.demo.reset import Removed, demo_user_ids, remove_demo
from gatehouse.demo.seed import DEMO_ACTOR, SeededAccounts, seed_accounts
from gatehouse.runtime import announce, prepare
from gatehouse.settings import Settings


@dataclass
class DemoReport:
    """What a seed (or a reset) did: the accounts with their secrets (print once), the traffic's statuses."""

    accounts: SeededAccounts
    statuses: Counter[int] = field(default_factory=Counter)
    removed: Removed | None = None


def refuse_in_production(settings: Settings, *, force: bool) -> None:
    """Demo people with printed passwords have no place in production, unless the operator insists."""
    if settings.is_prod and not force:
        raise DemoInProduction(
            "ENVIRONMENT=prod: demo data (people with known passwords and keys) does not belong in production. Use "
            "a staging database, or pass --force if this really is what you want."
        )


async def _ensure_fresh(session: AsyncSession, *, force: bool) -> None:
    if await demo_user_ids(session):
        raise DemoExists(f"Demo data (@{DOMAIN}) is there already: `gatehouse demo reset` replaces it.")
    users = int((await session.execute(select(func.count()).select_from(User))).scalar_one())
    if users > 1 and not force:
        raise NotFresh(
            f"This database holds {users} users, not only the bootstrap administrator: demo data belongs in a fresh "
            "one. Point DATABASE_URL at a new database, or pass --force to add it here anyway (it stays "
            f"recognisable, @{DOMAIN}, and `gatehouse demo reset` removes exactly it)."
        )


async def seed(settings: Settings, *, force: bool = False) -> DemoReport:
    """Seed a fresh database (see the package docstring); refused in production and on a database in use unless
    `force`."""
    refuse_in_production(settings, force=force)
    announce(await prepare(settings))  # a new database: migrated, and its bootstrap administrator made
    return await _seed(settings, check_fresh=True, force=force)


async def reset(settings: Settings, *, force: bool = False) -> DemoReport:
    """Remove the demo's data, and only it, then seed it again; refused in production unless `force`."""
    refuse_in_production(settings, force=force)
    announce(await prepare(settings))
    engine = create_engine(settings)
    bus = create_bus(settings.redis_url, settings.redis_prefix)
    try:
        async with transaction(create_sessionmaker(engine)) as session:
            removed = await remove_demo(session, bus=bus)
    finally:
        await bus.close()
        await engine.dispose()
    report = await _seed(settings, check_fresh=False, force=force)
    report.removed = removed
    return report


async def _seed(settings: Settings, *, check_fresh: bool, force: bool) -> DemoReport:
    engine = create_engine(settings)
    bus: EventBus = create_bus(settings.redis_url, settings.redis_prefix)
    try:
        sessionmaker = create_sessionmaker(engine)
        async with transaction(sessionmaker) as session:
            if check_fresh:
                await _ensure_fresh(session, force=force)
            accounts = await seed_accounts(session, bus=bus, currency=settings.price_currency)
        keys = [person.key for person in accounts.people]
        statuses = await traffic.run_in_process(settings, traffic.plan(keys, accounts.project_key))
        async with transaction(sessionmaker) as session:
            event = DemoSeededEvent(
                users=len(PEOPLE),
                groups=accounts.groups,
                keys=accounts.keys,
                invites=len(accounts.invites),
                access_rules=accounts.access_rules,
                prices=accounts.prices,
                requests=sum(statuses.values()),
                forced=force,
            )
            await record(session, event, actor=DEMO_ACTOR)
    finally:
        await bus.close()
        await engine.dispose()
    return DemoReport(accounts=accounts, statuses=statuses)
