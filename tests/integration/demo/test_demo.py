"""`gatehouse demo seed` and `gatehouse demo reset`: a fresh database gets people of every role, groups with
members, limits and rules, invites, keys and real traffic (usage, request log, spend) with an intact audit chain;
a reset removes exactly the demo's data and seeds again; refusals for a database in use, demo data already there,
and production (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import func, select

from gatehouse.accounts.access.models import AccessRule
from gatehouse.accounts.invites.models import Invite
from gatehouse.audit.models import AuditEvent
from gatehouse.audit.service import verify_chain
from gatehouse.auth import passwords
from gatehouse.auth.models import ApiKey, Group, GroupMember, User
from gatehouse.cli.common import db_session
from gatehouse.gateway.models import RequestLog
from gatehouse.limits.models import ModelPrice, UsageCounter
from gatehouse.settings import get_settings
from tests.conftest import running_app
from tests.integration.cli.test_cli import gatehouse
from tests.support.accounts import create_member
from tests.support.server import ADMIN_EMAIL, ADMIN_KEY, ADMIN_PASSWORD, JWT_SECRET


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture
def shell(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str) -> Iterator[pytest.MonkeyPatch]:
    """The commands' environment: this test's database, no Redis, no .env, the log level kept quiet."""
    monkeypatch.chdir(tmp_path)
    for name, value in {
        "DATABASE_URL": database_url,
        "DATA_DIR": str(tmp_path / "data"),
        "REDIS_URL": "",
        "JWT_SECRET": JWT_SECRET,
        # The bootstrap administrator the demo's first start makes: the one the test's in-process app signs in as.
        "BOOTSTRAP_ADMIN_EMAIL": ADMIN_EMAIL,
        "BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "BOOTSTRAP_ADMIN_API_KEY": ADMIN_KEY,
        "GATEHOUSE_CONFIG": "",
        "PURGE_SCHEDULE": "",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def query(statement: Any) -> list[Any]:
    async def go() -> list[Any]:
        async with db_session(get_settings()) as session:
            return list((await session.execute(statement)).all())

    get_settings.cache_clear()
    return asyncio.run(go())


def chain_ok() -> bool:
    async def go() -> bool:
        async with db_session(get_settings()) as session:
            return (await verify_chain(session)).ok

    get_settings.cache_clear()
    return asyncio.run(go())


DEMO_USERS = select(User.id, User.email, User.role).where(User.email.like("%@demo.example")).order_by(User.id)


def test_seed_a_fresh_database_then_reset_it(shell: pytest.MonkeyPatch) -> None:
    seeded = gatehouse("demo", "seed")
    assert seeded.exit_code == 0, seeded.output
    out = seeded.stdout
    assert "alice@demo.example" in out and "traffic: " in out
    printed_keys = set(re.findall(r"gh_[A-Za-z0-9_-]{20,}", out.replace("│\n│", "").replace(" ", "")))
    assert printed_keys, out

    people = query(DEMO_USERS)
    assert {role for _, _, role in people} == {"superadmin", "admin", "monitor", "user"}
    assert len(people) == 6
    ids = [user_id for user_id, _, _ in people]
    groups = query(select(Group.name, func.count(GroupMember.user_id)).join(GroupMember).group_by(Group.name))
    assert sorted(groups) == [("demo-research", 3), ("demo-support", 2)]
    assert query(select(func.count()).select_from(ApiKey).where(ApiKey.user_id.in_(ids)))[0][0] == 7
    assert query(select(func.count()).select_from(ApiKey).where(ApiKey.group_id.is_not(None)))[0][0] == 1
    assert query(select(func.count()).select_from(Invite).where(Invite.uses == 0))[0][0] == 2
    assert query(select(func.count()).select_from(AccessRule))[0][0] == 2
    assert {model for (model,) in query(select(ModelPrice.model).where(ModelPrice.source == "demo"))} == {
        "demo",
        "demo-embed",
    }

    requests = query(select(RequestLog.user_id, RequestLog.surface, RequestLog.status_code, RequestLog.cost_nanos))
    assert len(requests) >= 40
    assert len({user for user, _, _, _ in requests}) == 6
    assert {"chat", "responses", "messages", "ollama_chat", "generate", "embeddings"} <= {s for _, s, _, _ in requests}
    assert sum(cost or 0 for _, _, status, cost in requests if status == 200) > 0  # spend, from the demo's price
    usage = query(select(func.sum(UsageCounter.tokens)).where(UsageCounter.user_id.in_(ids)))[0][0]
    assert usage and usage > 0
    assert query(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "demo.seeded"))[0][0] == 1
    assert chain_ok()

    again = gatehouse("demo", "seed")
    assert again.exit_code == 1 and "gatehouse demo reset" in again.stderr

    # Someone real arrives, with a group, a rule, a price and traffic of their own: the reset leaves all of it.
    async def real_life() -> int:
        async with running_app(get_settings()) as harness:
            member = await create_member(harness)
            group = (await harness.client.post("/admin/groups", json={"name": "demo-fans"})).json()
            assert (await harness.client.put(f"/admin/groups/{group['id']}/members/{member.id}")).status_code == 200
            rule = {"group_id": group["id"], "effect": "allow", "pattern": "demo"}
            assert (await harness.client.post("/admin/access/rules", json=rule)).status_code == 201
            price = {"input": 1, "output": 2}
            assert (await harness.client.put("/admin/prices/other-model", json=price)).status_code in (200, 201)
            chat = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
            sent = await harness.client.post("/v1/chat/completions", json=chat, headers=harness.as_key(member.key))
            assert sent.status_code == 200, sent.text
            return member.id

    get_settings.cache_clear()
    real_id = asyncio.run(real_life())
    real_rows = query(select(func.count()).select_from(RequestLog).where(RequestLog.user_id == real_id))[0][0]
    assert real_rows == 1

    reset = gatehouse("demo", "reset")
    assert reset.exit_code == 0, reset.output
    assert "removed: 6 people, 2 groups, 2 invites, 2 access rules, 2 price versions" in reset.stdout

    after = query(DEMO_USERS)
    assert len(after) == 6 and not {user_id for user_id, _, _ in after} & set(ids)  # new people, the old ones gone
    assert query(select(func.count()).select_from(RequestLog).where(RequestLog.user_id.in_(ids)))[0][0] == 0
    assert query(select(func.count()).select_from(UsageCounter).where(UsageCounter.user_id.in_(ids)))[0][0] == 0
    assert query(select(func.count()).select_from(ApiKey).where(ApiKey.user_id.in_(ids)))[0][0] == 0
    # The real person's data, group, rule and price stay.
    assert query(select(func.count()).select_from(RequestLog).where(RequestLog.user_id == real_id))[0][0] == 1
    assert query(select(User.email).where(User.id == real_id))
    assert sorted(name for (name,) in query(select(Group.name))) == ["demo-fans", "demo-research", "demo-support"]
    assert query(select(func.count()).select_from(AccessRule))[0][0] == 3
    assert query(select(func.count()).select_from(ModelPrice).where(ModelPrice.model == "other-model"))[0][0] == 1
    actions = [
        a
        for (a,) in query(
            select(AuditEvent.action).where(AuditEvent.action.startswith("demo.")).order_by(AuditEvent.id)
        )
    ]
    assert actions == ["demo.seeded", "demo.reset", "demo.seeded"]
    deleted = query(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "user.deleted"))[0][0]
    assert deleted == 6
    assert chain_ok()


def test_refusals(shell: pytest.MonkeyPatch) -> None:
    assert gatehouse("db", "upgrade").exit_code == 0
    assert gatehouse("users", "create", "--email", "someone@example.com").exit_code == 0
    used = gatehouse("demo", "seed")
    assert used.exit_code == 1 and "holds 2 users" in used.stderr and "--force" in used.stderr
    assert query(DEMO_USERS) == []

    shell.setenv("ENVIRONMENT", "prod")
    for command in ("seed", "reset"):
        refused = gatehouse("demo", command)
        assert refused.exit_code == 1 and "ENVIRONMENT=prod" in refused.stderr, refused.output
    assert query(DEMO_USERS) == []
