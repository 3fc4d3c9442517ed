"""The operator and user surface of quotas and rate limits, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from gatehouse.limits import quotas
from gatehouse.limits.ratelimit import RULES
from tests.conftest import Harness, make_settings, running_app
from tests.support.server import ADMIN_PASSWORD

CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hello"}]}


async def _user(harness: Harness, **quota: int | None) -> tuple[int, str]:
    user = (
        await harness.client.post(
            "/admin/users",
            json={"email": f"u{len(quota)}-{os.urandom(3).hex()}@example.com", "password": "password-123"},
        )
    ).json()
    if quota:
        assert (await harness.client.patch(f"/admin/users/{user['id']}", json=quota)).status_code == 200
    key = (await harness.client.post(f"/admin/users/{user['id']}/keys", json={"name": "k"})).json()["key"]
    return user["id"], key


async def test_rate_limits_read_change_reset_and_persist(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, rate_limit_per_minute=60)
    async with running_app(settings) as harness:
        rules = {r["name"]: r for r in (await harness.client.get("/admin/rate-limits")).json()}
        assert set(rules) == set(RULES)
        assert rules["user_per_minute"]["limit"] == 60 and not rules["user_per_minute"]["overridden"]
        changed = await harness.client.put("/admin/rate-limits", json={"limits": {"chat": 5, "login": None}})
        assert changed.status_code == 200
        after = {r["name"]: r for r in changed.json()}
        assert (after["chat"]["limit"], after["chat"]["overridden"]) == (5, True)
        assert (after["login"]["limit"], after["login"]["overridden"]) == (None, True)
    async with running_app(settings) as harness:  # a restart keeps the overrides
        rules = {r["name"]: r for r in (await harness.client.get("/admin/rate-limits")).json()}
        assert rules["chat"]["limit"] == 5
        reset = await harness.client.put("/admin/rate-limits", json={"reset": ["chat"]})
        assert {r["name"]: r for r in reset.json()}["chat"]["overridden"] is False


@pytest.mark.parametrize(
    ("body", "param"),
    [({"limits": {"nonsense": 3}}, "limits"), ({"limits": {"chat": -1}}, "limits.chat"), ({"reset": ["x"]}, "limits")],
)
async def test_bad_rate_limit_changes_name_the_field(harness: Harness, body: dict[str, object], param: str) -> None:
    response = await harness.client.put("/admin/rate-limits", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


async def test_user_quotas_patch_and_defaults(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, default_messages_per_day=50, default_tokens_per_day=None)
    async with running_app(settings) as harness:
        created = (await harness.client.post("/admin/users", json={"email": "quota@example.com"})).json()
        assert (created["messages_per_day"], created["tokens_per_day"]) == (50, None)
        patched = await harness.client.patch(f"/admin/users/{created['id']}", json={"tokens_per_day": 1000})
        assert (patched.json()["messages_per_day"], patched.json()["tokens_per_day"]) == (50, 1000)
        unlimited = await harness.client.patch(f"/admin/users/{created['id']}", json={"messages_per_day": None})
        assert unlimited.json()["messages_per_day"] is None
        negative = await harness.client.patch(f"/admin/users/{created['id']}", json={"tokens_per_day": -5})
        assert negative.status_code == 422 and negative.json()["error"]["param"] == "tokens_per_day"


async def test_me_usage_and_admin_usage(harness: Harness) -> None:
    user_id, key = await _user(harness, messages_per_day=10, tokens_per_day=10_000)
    headers = harness.as_key(key)
    assert (await harness.client.post("/v1/chat/completions", json=CHAT, headers=headers)).status_code == 200
    mine = (await harness.client.get("/me/usage", headers=headers)).json()
    assert mine["messages"] == 1 and mine["messages_per_day"] == 10 and mine["messages_percent"] == 10.0
    assert 0 < mine["tokens"] < 200 and mine["reserved_tokens"] == 0
    assert mine["resets_at"].startswith(str(quotas.quota_day("UTC").toordinal() and ""))
    today = quotas.quota_day("UTC").isoformat()
    rows = (await harness.client.get("/admin/usage", params={"from": today, "to": today, "user_id": user_id})).json()
    assert [(r["user_id"], r["messages"]) for r in rows] == [(user_id, 1)]
    assert (
        await harness.client.get("/admin/usage", params={"from": "2020-01-02", "to": "2020-01-01"})
    ).status_code == 400
    assert (await harness.client.get("/admin/usage", params={"from": "2020-01-01"})).json() == []


async def test_fresh_user_usage_is_zero(harness: Harness) -> None:
    _, key = await _user(harness)
    mine = (await harness.client.get("/me/usage", headers=harness.as_key(key))).json()
    assert (mine["messages"], mine["tokens"], mine["messages_per_day"]) == (0, 0, None)


async def test_login_is_rate_limited_per_ip(harness: Harness) -> None:
    await harness.client.put("/admin/rate-limits", json={"limits": {"ip_per_minute": 3}})
    statuses = []
    for _ in range(4):
        response = await harness.client.post(
            "/auth/login", json={"email": "admin@example.com", "password": ADMIN_PASSWORD}, headers={}
        )
        statuses.append(response.status_code)
    assert statuses == [200, 200, 200, 429]
    assert response.json()["error"]["code"] == "rate_limited"
    assert "retry-after" in response.headers


async def test_key_creation_is_rate_limited(harness: Harness) -> None:
    await harness.client.put("/admin/rate-limits", json={"limits": {"key_create": 2}})
    statuses = [(await harness.client.post("/me/keys", json={"name": f"k{i}"})).status_code for i in range(3)]
    assert statuses == [201, 201, 429]


async def _cli(database_url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a thread: the server in this process keeps running meanwhile (a blocked loop would keep any of
    its write transactions open, and the CLI would find the database locked)."""
    env = {**os.environ, "DATABASE_URL": database_url, "COLUMNS": "200"}
    command = [sys.executable, "-m", "gatehouse", *args]
    return await asyncio.to_thread(
        subprocess.run, command, env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


async def test_usage_cli_show_and_reset(harness: Harness, tmp_path: Path) -> None:
    user_id, key = await _user(harness, tokens_per_day=10_000)
    email = (await harness.client.get(f"/admin/users/{user_id}")).json()["email"]
    assert (
        await harness.client.post("/v1/chat/completions", json=CHAT, headers=harness.as_key(key))
    ).status_code == 200
    url = harness.settings.database_url
    today = quotas.quota_day("UTC").isoformat()
    shown = await _cli(url, tmp_path, "usage", "show", "--user", email, "--date", today)
    assert shown.returncode == 0, shown.stderr
    assert email in shown.stdout and "10000" in shown.stdout
    bad = await _cli(url, tmp_path, "usage", "show", "--date", "21-11-2026")
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr + bad.stdout
    reset = await _cli(url, tmp_path, "usage", "reset", "--date", today, "--user", email, "--yes")
    assert reset.returncode == 0, reset.stderr
    assert "reset 1 counter" in reset.stdout
    mine = (await harness.client.get("/me/usage", headers=harness.as_key(key))).json()
    assert (mine["messages"], mine["tokens"]) == (0, 0)
    unknown = await _cli(url, tmp_path, "usage", "reset", "--date", today, "--user", "nobody@example.com", "--yes")
    assert unknown.returncode == 1 and "nobody@example.com" in unknown.stderr + unknown.stdout


def test_prompt_bound_is_never_below_the_bytes() -> None:
    text = "naïve café ☕ " * 10
    bound = quotas.prompt_bound([{"role": "user", "content": text}], image_allowance=100)
    assert bound >= len(text.encode())
    with_image = quotas.prompt_bound(
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": "u"}}],
            }
        ],
        image_allowance=100,
    )
    assert with_image >= 101
    assert quotas.embedding_bound(["ab", "cd"]) >= 4
    assert quotas.resets_at("Europe/Berlin", date(2026, 11, 21)).isoformat() == "2026-11-21T23:00:00+00:00"


async def test_refusals_are_counted_in_prometheus(harness: Harness) -> None:
    from prometheus_client import REGISTRY

    def sample(name: str, labels: dict[str, str]) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    quota_before = sample("quota_blocks_total", {"kind": "messages"})
    limit_before = sample("rate_limit_hits_total", {"action": "key_create"})
    _, key = await _user(harness, messages_per_day=0)
    assert (
        await harness.client.post("/v1/chat/completions", json=CHAT, headers=harness.as_key(key))
    ).status_code == 429
    await harness.client.put("/admin/rate-limits", json={"limits": {"key_create": 0}})
    assert (await harness.client.post("/me/keys", json={"name": "x"})).status_code == 429
    assert sample("quota_blocks_total", {"kind": "messages"}) == quota_before + 1
    assert sample("rate_limit_hits_total", {"action": "key_create"}) == limit_before + 1


async def test_me_usage_history_has_every_day_with_today_counted(harness: Harness) -> None:
    _, key = await _user(harness, messages_per_day=10)
    headers = harness.as_key(key)
    for _ in range(2):
        assert (await harness.client.post("/v1/chat/completions", json=CHAT, headers=headers)).status_code == 200
    history = (await harness.client.get("/me/usage/history", headers=headers)).json()
    today = quotas.quota_day("UTC")
    assert history["end"] == today.isoformat() and len(history["days"]) == 30
    assert [d["day"] for d in history["days"]][-1] == today.isoformat()
    *before, last = history["days"]
    assert last["messages"] == 2 and last["tokens"] > 0
    assert all(d["messages"] == d["tokens"] == d["spend_nanos"] == 0 for d in before)
    week = (await harness.client.get("/me/usage/history", params={"days": 7}, headers=headers)).json()
    assert len(week["days"]) == 7 and week["days"][-1]["messages"] == 2
    # Only the caller's own: a fresh user sees zeros.
    _, other = await _user(harness)
    theirs = (await harness.client.get("/me/usage/history", headers=harness.as_key(other))).json()
    assert all(d["messages"] == 0 for d in theirs["days"])
    too_many = await harness.client.get("/me/usage/history", params={"days": 367}, headers=headers)
    assert too_many.status_code in (400, 422) and too_many.json()["error"]["param"] == "days"
