"""`gatehouse access`: rules for users and groups from the shell (allow, deny, list, remove, check), audited as the
CLI, as RUNBOOK "Model access" shows them (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from gatehouse.audit.models import AuditEvent
from gatehouse.auth.models import Group, GroupMember, User
from gatehouse.cli.common import db_session
from gatehouse.settings import get_settings
from tests.integration.cli.test_cli import environment, gatehouse

__all__ = ["environment"]


def _setup() -> tuple[int, int]:
    """A user in group `interns`: (user id, group id)."""

    async def go() -> tuple[int, int]:
        async with db_session(get_settings()) as session:
            user = User(email="alice@example.com")
            group = Group(name="interns")
            session.add_all([user, group])
            await session.flush()
            session.add(GroupMember(group_id=group.id, user_id=user.id))
            return user.id, group.id

    get_settings.cache_clear()
    return asyncio.run(go())


def _actions() -> list[tuple[str, str]]:
    async def go() -> list[tuple[str, str]]:
        async with db_session(get_settings()) as session:
            rows = await session.execute(
                select(AuditEvent.action, AuditEvent.actor_label)
                .where(AuditEvent.action.startswith("access_rule."))
                .order_by(AuditEvent.id)
            )
            return [(str(a), str(b)) for a, b in rows.all()]

    get_settings.cache_clear()
    return asyncio.run(go())


def test_rules_from_the_shell(environment: pytest.MonkeyPatch, database_url: str, tmp_path: Path) -> None:
    environment.setenv("DATABASE_URL", database_url)
    environment.setenv("REDIS_URL", "")
    assert gatehouse("db", "upgrade").exit_code == 0
    _setup()

    denied = gatehouse("access", "deny", "llama3:70b*", "--group", "interns")
    assert denied.exit_code == 0, denied.output
    assert "deny models matching 'llama3:70b*' for group interns" in denied.stdout
    allowed = gatehouse("access", "allow", "llama3:70b-chat", "--user", "alice@example.com")
    assert allowed.exit_code == 0, allowed.output
    upstream = gatehouse("access", "deny", "openai", "--upstream", "--group", "interns")
    assert upstream.exit_code == 0, upstream.output
    again = gatehouse("access", "deny", "llama3:70b*", "--group", "interns")
    assert again.exit_code == 0 and "exists already" in again.stdout

    listed = gatehouse("access", "list")
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert lines[0] == "default: allow"
    assert [line.split("\t")[1:] for line in lines[1:]] == [
        ["group interns", "deny", "model", "llama3:70b*"],
        ["user alice@example.com", "allow", "model", "llama3:70b-chat"],
        ["group interns", "deny", "upstream", "openai"],
    ]
    only_user = gatehouse("access", "list", "--user", "alice@example.com")
    assert len(only_user.stdout.splitlines()) == 2

    # Alice's own allow is her exception to the group's deny; another 70B model stays denied (exit code 1).
    mine = gatehouse("access", "check", "alice@example.com", "llama3:70b-chat")
    assert mine.exit_code == 0 and "allowed, decided by user rule" in mine.stdout, mine.output
    other = gatehouse("access", "check", "alice@example.com", "llama3:70b-instruct", "--upstream", "local")
    assert other.exit_code == 1 and "through local: denied, decided by group rule" in other.stdout, other.output
    cloud = gatehouse("access", "check", "alice@example.com", "llama3:8b", "--upstream", "openai")
    assert cloud.exit_code == 1 and "denied" in cloud.stdout
    small = gatehouse("access", "check", "alice@example.com", "llama3:8b", "--upstream", "local")
    assert small.exit_code == 0 and "decided by default" in small.stdout

    rule_id = lines[1].split("\t")[0]
    assert gatehouse("access", "remove", rule_id).exit_code == 0
    gone = gatehouse("access", "remove", rule_id)
    assert gone.exit_code == 1 and "No access rule" in gone.stderr
    both = gatehouse("access", "allow", "x", "--user", "alice@example.com", "--group", "interns")
    assert both.exit_code == 2 and "exactly one of" in both.stdout
    nobody = gatehouse("access", "allow", "x", "--group", "nobody")
    assert nobody.exit_code == 1 and "No group 'nobody'" in nobody.stderr

    assert _actions() == [("access_rule.added", "cli")] * 3 + [("access_rule.removed", "cli")]
