"""`gatehouse budgets`: set and lift a user's, group's or key's limits from the shell, audited as the CLI, and show
their budgets, as RUNBOOK "Budgets" shows (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from gatehouse.audit.models import AuditEvent
from gatehouse.auth.models import Group, User
from gatehouse.cli.common import db_session
from gatehouse.settings import get_settings
from tests.integration.cli.test_cli import environment, gatehouse

__all__ = ["environment"]


def _setup() -> None:
    async def go() -> None:
        async with db_session(get_settings()) as session:
            session.add_all([User(email="alice@example.com"), Group(name="research")])

    get_settings.cache_clear()
    asyncio.run(go())


def _audited() -> list[str]:
    async def go() -> list[str]:
        async with db_session(get_settings()) as session:
            rows = await session.execute(
                select(AuditEvent.target_id).where(AuditEvent.action == "budget.limits_changed").order_by(AuditEvent.id)
            )
            return [str(t) for t in rows.scalars()]

    get_settings.cache_clear()
    return asyncio.run(go())


def test_budgets_from_the_shell(environment: pytest.MonkeyPatch, database_url: str, tmp_path: Path) -> None:
    environment.setenv("DATABASE_URL", database_url)
    environment.setenv("REDIS_URL", "")
    assert gatehouse("db", "upgrade").exit_code == 0
    _setup()

    research = gatehouse(
        "budgets", "set", "--group", "research", "--spend-per-month", "200", "--tokens-per-day", "5000"
    )
    assert research.exit_code == 0, research.output
    assert "spend_per_month\t200 USD" in research.stdout and "tokens_per_day\t5000" in research.stdout
    alice = gatehouse("budgets", "set", "--user", "alice@example.com", "--messages-per-month", "300")
    assert alice.exit_code == 0, alice.output
    lifted = gatehouse("budgets", "set", "--group", "research", "--clear", "tokens_per_day")
    assert lifted.exit_code == 0 and "tokens_per_day\tnone" in lifted.stdout

    shown = gatehouse("budgets", "show", "--group", "research")
    assert shown.exit_code == 0, shown.output
    assert (
        "group research: month from" in shown.stdout
        and "spend\t0 USD used, 0 USD held, of 200 USD (0.0%)" in shown.stdout
    )
    mine = gatehouse("budgets", "show", "--user", "alice@example.com")
    assert "user alice@example.com: day from" in mine.stdout and "user alice@example.com: month from" in mine.stdout

    bad = gatehouse("budgets", "set", "--group", "research", "--spend-per-day", "-3")
    assert bad.exit_code == 2 and "--spend-per-day" in bad.stdout
    both = gatehouse("budgets", "set", "--group", "research", "--user", "alice@example.com", "--clear", "spend_per_day")
    assert both.exit_code == 2 and "exactly one of" in both.stdout
    unknown = gatehouse("budgets", "set", "--group", "research", "--clear", "spend_per_week")
    assert unknown.exit_code == 2 and "not a limit" in unknown.stdout
    nobody = gatehouse("budgets", "show", "--group", "nobody")
    assert nobody.exit_code == 1 and "No group 'nobody'" in nobody.stderr

    assert len(_audited()) == 3
