"""User administration: list with usage, role and status changes, the last superadmin, blocks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.conftest import Harness

CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}


async def _user(harness: Harness, email: str, role: str = "user") -> tuple[int, str]:
    user = (await harness.client.post("/admin/users", json={"email": email, "role": role})).json()
    key = (await harness.client.post(f"/admin/users/{user['id']}/keys", json={"name": "k"})).json()["key"]
    return user["id"], key


def _error(response: Any) -> dict[str, Any]:
    return dict(response.json()["error"])


async def test_list_search_filter_paginate_with_usage(harness: Harness) -> None:
    uid, key = await _user(harness, "alice@example.com")
    await _user(harness, "bob@example.com", role="monitor")
    await harness.client.patch(f"/admin/users/{uid}", json={"messages_per_day": 4})
    assert (
        await harness.client.post("/v1/chat/completions", json=CHAT, headers=harness.as_key(key))
    ).status_code == 200
    found = (await harness.client.get("/admin/users", params={"q": "ALI"})).json()["items"]
    assert [u["email"] for u in found] == ["alice@example.com"]
    assert found[0]["messages_today"] == 1 and found[0]["messages_percent"] == 25.0 and found[0]["tokens_today"] > 0
    monitors = (await harness.client.get("/admin/users", params={"role": "monitor"})).json()["items"]
    assert [u["email"] for u in monitors] == ["bob@example.com"]
    pages, cursor = [], None
    while True:
        page = (
            await harness.client.get("/admin/users", params={"limit": 1, **({"before": cursor} if cursor else {})})
        ).json()
        pages += [u["id"] for u in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == sorted(pages, reverse=True) and len(pages) == 3


async def test_roles_superadmins_and_self(harness: Harness) -> None:
    admin_id, admin_key = await _user(harness, "second-admin@example.com", role="admin")
    target, _ = await _user(harness, "target@example.com")
    as_admin = harness.as_key(admin_key)
    made_super = await harness.client.patch(f"/admin/users/{target}", json={"role": "superadmin"}, headers=as_admin)
    assert made_super.status_code == 403 and _error(made_super)["code"] == "role_not_allowed"
    assert (
        await harness.client.patch(f"/admin/users/{target}", json={"role": "monitor"}, headers=as_admin)
    ).status_code == 200
    me = (await harness.client.get("/me")).json()
    last = await harness.client.patch(f"/admin/users/{me['id']}", json={"role": "admin"})
    assert last.status_code == 403 and _error(last)["code"] in {"self_role_change", "last_superadmin"}
    other_super, _ = await _user(harness, "super2@example.com", role="superadmin")
    assert (await harness.client.patch(f"/admin/users/{other_super}", json={"status": "disabled"})).status_code == 200
    # Now the bootstrap admin is the last active superadmin: the other superadmin cannot demote or disable them.
    assert (await harness.client.patch(f"/admin/users/{other_super}", json={"status": "active"})).status_code == 200
    assert (await harness.client.patch(f"/admin/users/{me['id']}", json={"status": "disabled"})).status_code == 403
    assert (await harness.client.post(f"/admin/users/{admin_id}/disable", headers=as_admin)).status_code == 403


async def test_last_active_superadmin_cannot_be_disabled_demoted_or_blocked(harness: Harness) -> None:
    other, other_key = await _user(harness, "only-other@example.com", role="superadmin")
    me = (await harness.client.get("/me")).json()
    as_other = harness.as_key(other_key)
    # Two superadmins: one may disable the other; then the remaining one is protected from the other's key.
    assert (await harness.client.post(f"/admin/users/{other}/disable")).status_code == 200
    assert (await harness.client.post(f"/admin/users/{other}/enable")).status_code == 200
    await harness.client.post(f"/admin/users/{other}/block", json={"reason": "test"})
    for response in (
        await harness.client.patch(f"/admin/users/{me['id']}", json={"role": "admin"}, headers=as_other),
        await harness.client.post(f"/admin/users/{me['id']}/disable", headers=as_other),
        await harness.client.post(f"/admin/users/{me['id']}/block", json={"reason": "x"}, headers=as_other),
    ):
        assert response.status_code == 403


async def test_block_refuses_at_once_and_a_timed_block_ends_by_itself(harness: Harness) -> None:
    uid, key = await _user(harness, "blocked@example.com")
    headers = harness.as_key(key)
    assert (await harness.client.post("/v1/chat/completions", json=CHAT, headers=headers)).status_code == 200
    until = (datetime.now(UTC) + timedelta(seconds=1.5)).isoformat()
    blocked = await harness.client.post(f"/admin/users/{uid}/block", json={"reason": "abusive prompts", "until": until})
    assert blocked.status_code == 200 and blocked.json()["blocked"] is True
    refused = await harness.client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert refused.status_code == 403 and _error(refused)["code"] == "account_blocked"
    assert "abusive" not in refused.text, "the internal note never reaches the user"
    ollama = await harness.client.post("/api/chat", json=CHAT, headers=headers)
    assert ollama.status_code == 403 and isinstance(ollama.json()["error"], str)
    await asyncio.sleep(1.6)
    assert (await harness.client.post("/v1/chat/completions", json=CHAT, headers=headers)).status_code == 200


async def test_monitors_block_users_but_not_admins(harness: Harness) -> None:
    _, monitor_key = await _user(harness, "mon@example.com", role="monitor")
    uid, key = await _user(harness, "victim@example.com")
    admin_id, _ = await _user(harness, "adm@example.com", role="admin")
    as_monitor = harness.as_key(monitor_key)
    # A monitor finds whom to block (list and read), but changes nothing else about a user.
    found = await harness.client.get("/admin/users", params={"q": "victim@"}, headers=as_monitor)
    assert found.status_code == 200 and [u["id"] for u in found.json()["items"]] == [uid]
    assert (await harness.client.get(f"/admin/users/{uid}", headers=as_monitor)).json()["email"] == "victim@example.com"
    assert (
        await harness.client.patch(f"/admin/users/{uid}", json={"role": "admin"}, headers=as_monitor)
    ).status_code == 403
    assert (
        await harness.client.post(f"/admin/users/{uid}/block", json={"reason": "r"}, headers=as_monitor)
    ).status_code == 200
    assert (await harness.client.post(f"/admin/users/{uid}/unblock", headers=as_monitor)).status_code == 200
    assert (await harness.client.post("/v1/models", headers=harness.as_key(key))).status_code in (200, 405)
    denied = await harness.client.post(f"/admin/users/{admin_id}/block", json={"reason": "r"}, headers=as_monitor)
    assert denied.status_code == 403
    past = await harness.client.post(f"/admin/users/{uid}/block", json={"reason": "r", "until": "2020-01-01T00:00:00Z"})
    assert past.status_code == 400 and _error(past)["param"] == "until"
