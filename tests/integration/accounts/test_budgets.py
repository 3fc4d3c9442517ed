"""Budgets through the API: limits of users, groups and keys (set, validated, audited), the state of each budget
(/me/budgets, /admin/.../budgets), spend limits refusing in money with the reset time, and counters removed with
their subject (SQLite and PostgreSQL)."""

from __future__ import annotations

import json

from sqlalchemy import func, select

from gatehouse.audit.models import AuditEvent
from gatehouse.limits.models import BudgetCounter
from tests.conftest import Harness
from tests.support.accounts import create_member, error_of

CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8}


async def _counters(harness: Harness, scope: str, subject_id: int) -> int:
    async with harness.runtime.db.sessionmaker() as session:
        query = (
            select(func.count())
            .select_from(BudgetCounter)
            .where(BudgetCounter.scope == scope, BudgetCounter.subject_id == subject_id)
        )
        return int((await session.execute(query)).scalar_one())


async def test_limits_are_set_validated_read_and_audited(harness: Harness) -> None:
    member = await create_member(harness)
    monitor = await create_member(harness, "monitor")
    url = f"/admin/users/{member.id}/limits"
    changed = await harness.client.patch(url, json={"spend_per_month": "12.5", "messages_per_month": 100})
    assert changed.status_code == 200, changed.text
    limits = changed.json()
    assert (limits["spend_per_month"], limits["messages_per_month"], limits["spend_per_day"]) == (12.5, 100, None)
    assert limits["currency"] == "USD"
    lifted = await harness.client.patch(url, json={"messages_per_month": None})
    assert lifted.json()["messages_per_month"] is None and lifted.json()["spend_per_month"] == 12.5

    for body, field in (
        ({"spend_per_day": -1}, "spend_per_day"),
        ({"spend_per_day": "0.0000000001"}, "spend_per_day"),
        ({"tokens_per_month": -5}, "tokens_per_month"),
        ({"spend_per_week": 3}, "spend_per_week"),
    ):
        refused = await harness.client.patch(url, json=body)
        assert refused.status_code == 422 and field in refused.text, (body, refused.text)

    as_monitor = harness.as_key(monitor.key)
    assert (await harness.client.get(url, headers=as_monitor)).status_code == 200
    assert (await harness.client.patch(url, headers=as_monitor, json={"spend_per_day": 1})).status_code == 403
    assert (await harness.client.get("/admin/groups/999999/limits")).status_code == 404
    assert (await harness.client.get("/admin/keys/999999/limits")).status_code == 404

    async with harness.runtime.db.sessionmaker() as session:
        rows = (
            (await session.execute(select(AuditEvent).where(AuditEvent.action == "budget.limits_changed")))
            .scalars()
            .all()
        )
    assert [r.target_id for r in rows] == [f"user:{member.id}"] * 2
    first = json.loads(rows[0].details)["changes"]
    assert first == {
        "spend_per_month": {"before": None, "after": "12.5"},
        "messages_per_month": {"before": None, "after": 100},
    }


async def test_a_daily_spend_limit_refuses_in_money_and_budgets_show_it(harness: Harness) -> None:
    member = await create_member(harness)
    price = {"input": 1000, "output": 1000}  # per million tokens: a token costs 0.001
    assert (await harness.client.put("/admin/prices/demo", json=price)).status_code in (200, 201)
    assert (
        await harness.client.patch(f"/admin/users/{member.id}/limits", json={"spend_per_day": "0.1"})
    ).status_code == 200
    headers = harness.as_key(member.key)

    statuses = []
    for _ in range(10):
        response = await harness.client.post("/v1/chat/completions", json=CHAT, headers=headers)
        statuses.append(response.status_code)
        if response.status_code != 200:
            break
    assert statuses[0] == 200 and statuses[-1] == 429, statuses
    error = error_of(response)
    assert error["code"] == "quota_exceeded" and error["param"] == "spend_per_day"
    assert "Your day's spend limit is reached" in error["message"] and "0.1 USD" in error["message"]
    assert "resets at" in error["message"] and int(response.headers["retry-after"]) > 0

    budgets = (await harness.client.get("/me/budgets", headers=headers)).json()
    (day,) = [b for b in budgets if b["scope"] == "user" and b["period"] == "day"]
    assert day["counted"] is True and day["spend"]["limit"] == 0.1
    assert 0 < day["spend"]["used"] <= 0.1 and day["spend"]["held"] == 0
    assert day["messages"]["used"] == statuses.count(200)
    assert day["resets_at"] > day["start"]
    assert budgets == (await harness.client.get(f"/admin/users/{member.id}/budgets")).json()


async def test_group_and_key_budgets_count_and_go_with_their_subject(harness: Harness) -> None:
    member = await create_member(harness)
    group = (await harness.client.post("/admin/groups", json={"name": "research"})).json()
    assert (await harness.client.put(f"/admin/groups/{group['id']}/members/{member.id}")).status_code == 200
    assert (
        await harness.client.patch(f"/admin/groups/{group['id']}/limits", json={"tokens_per_month": 100_000})
    ).status_code == 200
    assert (
        await harness.client.patch(f"/admin/keys/{member.key_id}/limits", json={"messages_per_day": 50})
    ).status_code == 200
    headers = harness.as_key(member.key)
    for _ in range(3):
        assert (await harness.client.post("/v1/chat/completions", json=CHAT, headers=headers)).status_code == 200

    budgets = {(b["scope"], b["period"]): b for b in (await harness.client.get("/me/budgets", headers=headers)).json()}
    assert set(budgets) == {("user", "day"), ("key", "day"), ("group", "month")}
    group_month, key_day, user_day = budgets[("group", "month")], budgets[("key", "day")], budgets[("user", "day")]
    assert group_month["name"] == "research" and group_month["counted"] is True
    assert group_month["tokens"]["used"] == user_day["tokens"]["used"] > 0  # the same requests, the same amounts
    assert group_month["tokens"]["limit"] == 100_000 and group_month["tokens"]["percent"] is not None
    assert key_day["messages"] == {"used": 3, "held": 0, "limit": 50, "percent": 6.0}
    assert await _counters(harness, "g", group["id"]) == 1 and await _counters(harness, "k", member.key_id) == 1

    # A group and a user deleted take their budgets' counters with them.
    assert (await harness.client.delete(f"/admin/groups/{group['id']}/members/{member.id}")).status_code == 200
    assert (await harness.client.delete(f"/admin/groups/{group['id']}")).status_code in (200, 204)
    assert await _counters(harness, "g", group["id"]) == 0
    assert (await harness.client.delete(f"/admin/users/{member.id}")).status_code in (200, 204)
    assert await _counters(harness, "k", member.key_id) == 0
