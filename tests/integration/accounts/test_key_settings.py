"""A key's settings: its group, acts_for_users and its own restrictions, set when it is created (POST /me/keys,
POST /admin/users/{id}/keys) and changed (PATCH /admin/keys/{id}, PATCH /me/keys/{id}), validated, audited,
signalled, and shown in every listing."""

from __future__ import annotations

from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from gatehouse.audit.models import AuditEvent
from gatehouse.auth import passwords
from gatehouse.core.bus import Signal
from tests.conftest import Harness
from tests.support.accounts import Member, create_member, error_of

SETTINGS = ("group_id", "acts_for_users", "allowed_models", "allowed_surfaces", "allowed_networks", "rate_per_minute")


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Still argon2id, at a cost that keeps bootstrap at a millisecond."""
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


async def group_with(harness: Harness, name: str, *members: Member) -> int:
    created = await harness.client.post("/admin/groups", json={"name": name})
    assert created.status_code == 201, created.text
    group_id: int = created.json()["id"]
    for member in members:
        assert (await harness.client.put(f"/admin/groups/{group_id}/members/{member.id}")).status_code == 200
    return group_id


async def key_events(harness: Harness, action: str) -> list[AuditEvent]:
    async with harness.runtime.db.sessionmaker() as session:
        query = select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
        return list((await session.execute(query)).scalars())


def settings_of(key: dict[str, Any]) -> dict[str, Any]:
    return {name: key[name] for name in SETTINGS}


async def test_an_admin_creates_a_restricted_project_key(harness: Harness) -> None:
    owner = await create_member(harness)
    group_id = await group_with(harness, "Search", owner)
    body = {
        "name": "indexer",
        "group_id": group_id,
        "acts_for_users": True,
        "allowed_models": [" bge-* ", "demo", "bge-*"],
        "allowed_surfaces": ["embeddings", "chat", "embeddings"],
        "allowed_networks": ["10.1.0.0/16", "192.168.1.7", "2001:DB8::/32"],
        "rate_per_minute": 120,
    }
    created = await harness.client.post(f"/admin/users/{owner.id}/keys", json=body)
    assert created.status_code == 201, created.text
    expected = {
        "group_id": group_id,
        "acts_for_users": True,
        "allowed_models": ["bge-*", "demo"],
        "allowed_surfaces": ["chat", "embeddings"],
        "allowed_networks": ["10.1.0.0/16", "192.168.1.7/32", "2001:db8::/32"],
        "rate_per_minute": 120,
    }
    assert settings_of(created.json()) == expected
    key_id = created.json()["id"]
    for listing in (
        (await harness.client.get("/admin/keys", params={"group_id": group_id})).json()["items"],
        (await harness.client.get("/me/keys", headers=harness.as_key(created.json()["key"]))).json(),
    ):
        (listed,) = [k for k in listing if k["id"] == key_id]
        assert settings_of(listed) == expected
    assert [
        k["id"] for k in (await harness.client.get("/admin/keys", params={"group_id": group_id})).json()["items"]
    ] == [key_id]
    plain = [k for k in (await harness.client.get("/admin/keys")).json()["items"] if k["id"] == owner.key_id]
    assert settings_of(plain[0]) == dict.fromkeys(SETTINGS) | {"acts_for_users": False}

    (event,) = [e for e in await key_events(harness, "key.created") if e.target_id == str(key_id)]
    assert '"settings":{' in event.details and '"rate_per_minute":120' in event.details
    assert created.json()["key"] not in event.details
    (unrestricted,) = [e for e in await key_events(harness, "key.created") if e.target_id == str(owner.key_id)]
    assert "settings" not in unrestricted.details


async def test_invalid_settings_name_the_field(harness: Harness) -> None:
    owner = await create_member(harness)
    path = f"/admin/users/{owner.id}/keys"
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"allowed_networks": ["10.0.0.0/33"]}, "allowed_networks", "not an IPv4 or IPv6"),
        ({"allowed_networks": ["10.0.0.5/8"]}, "allowed_networks", "did you mean 10.0.0.0/8"),
        ({"allowed_networks": ["example.com"]}, "allowed_networks", "not an IPv4 or IPv6"),
        ({"allowed_networks": []}, "allowed_networks", "at least 1"),
        ({"allowed_surfaces": ["chat", "telnet"]}, "allowed_surfaces.1", "'chat', 'responses'"),
        ({"allowed_models": ["  "]}, "allowed_models", "must not be empty"),
        ({"allowed_models": [f"m{n}" for n in range(101)]}, "allowed_models", "at most 100"),
        ({"allowed_models": ["a" * 201]}, "allowed_models", "at most 200"),
        ({"rate_per_minute": 0}, "rate_per_minute", "greater than or equal to 1"),
        ({"group_id": 0}, "group_id", "greater than or equal to 1"),
    ]
    for settings, param, says in cases:
        refused = await harness.client.post(path, json={"name": "bad", **settings})
        assert refused.status_code == 422, (settings, refused.text)
        assert error_of(refused)["param"] == param and says in error_of(refused)["message"], (settings, refused.text)
        patched = await harness.client.patch(f"/admin/keys/{owner.key_id}", json=settings)
        assert patched.status_code == 422 and error_of(patched)["param"] == param, (settings, patched.text)
    typo = await harness.client.patch(f"/admin/keys/{owner.key_id}", json={"allowed_model": ["x"]})
    assert typo.status_code == 422 and error_of(typo)["param"] == "allowed_model"
    null_flag = await harness.client.patch(f"/admin/keys/{owner.key_id}", json={"acts_for_users": None})
    assert null_flag.status_code == 422 and "acts_for_users cannot be null" in error_of(null_flag)["message"]
    assert await key_events(harness, "key.settings_changed") == []


async def test_a_key_is_bound_only_to_a_group_of_its_owner(harness: Harness) -> None:
    owner = await create_member(harness)
    stranger_group = await group_with(harness, "Elsewhere")
    own_group = await group_with(harness, "Home", owner)

    refused = await harness.client.post(f"/admin/users/{owner.id}/keys", json={"name": "k", "group_id": stranger_group})
    assert refused.status_code == 409 and error_of(refused)["code"] == "not_group_member"
    message = error_of(refused)["message"]
    assert f"user {owner.id}" in message and f"PUT /admin/groups/{stranger_group}/members/{owner.id}" in message
    missing = await harness.client.patch(f"/admin/keys/{owner.key_id}", json={"group_id": 999999})
    assert missing.status_code == 404 and error_of(missing)["code"] == "group_not_found"
    patched = await harness.client.patch(f"/admin/keys/{owner.key_id}", json={"group_id": stranger_group})
    assert patched.status_code == 409 and error_of(patched)["code"] == "not_group_member"
    own = await harness.client.post(
        "/me/keys", json={"name": "mine", "group_id": stranger_group}, headers=harness.as_key(owner.key)
    )
    assert own.status_code == 409 and error_of(own)["code"] == "not_group_member"

    bound = await harness.client.post(
        "/me/keys", json={"name": "mine", "group_id": own_group}, headers=harness.as_key(owner.key)
    )
    assert bound.status_code == 201 and bound.json()["group_id"] == own_group
    rebound = await harness.client.patch(f"/admin/keys/{owner.key_id}", json={"group_id": own_group})
    assert rebound.status_code == 200 and rebound.json()["group_id"] == own_group
    unbound = await harness.client.patch(f"/admin/keys/{owner.key_id}", json={"group_id": None})
    assert unbound.status_code == 200 and unbound.json()["group_id"] is None


async def test_admins_change_a_keys_settings_audited_and_signalled(harness: Harness) -> None:
    heard: list[tuple[str, dict[str, Any]]] = []
    harness.runtime.bus.subscribe(lambda kind, data: heard.append((kind, data)))
    owner = await create_member(harness)
    admin = await create_member(harness, "admin")
    superadmin = await create_member(harness, "superadmin")
    as_admin = harness.as_key(admin.key)

    changed = await harness.client.patch(
        f"/admin/keys/{owner.key_id}",
        json={"allowed_surfaces": ["embeddings"], "rate_per_minute": 30, "acts_for_users": True},
        headers=as_admin,
    )
    assert changed.status_code == 200, changed.text
    assert settings_of(changed.json()) == {
        "group_id": None,
        "acts_for_users": True,
        "allowed_models": None,
        "allowed_surfaces": ["embeddings"],
        "allowed_networks": None,
        "rate_per_minute": 30,
    }
    same = await harness.client.patch(f"/admin/keys/{owner.key_id}", json={"rate_per_minute": 30}, headers=as_admin)
    assert same.status_code == 200
    lifted = await harness.client.patch(
        f"/admin/keys/{owner.key_id}", json={"allowed_surfaces": None, "acts_for_users": False}, headers=as_admin
    )
    assert lifted.json()["allowed_surfaces"] is None and lifted.json()["acts_for_users"] is False
    assert [d for kind, d in heard if kind == Signal.KEY_CHANGED] == [{"key_id": owner.key_id}] * 2

    events = await key_events(harness, "key.settings_changed")
    assert [(e.target_id, e.actor_id) for e in events] == [(str(owner.key_id), admin.id)] * 2
    assert '"rate_per_minute":{"after":30,"before":null}' in events[0].details
    assert '"allowed_surfaces":{"after":null,"before":["embeddings"]}' in events[1].details

    theirs = await harness.client.patch(
        f"/admin/keys/{superadmin.key_id}", json={"rate_per_minute": 5}, headers=as_admin
    )
    assert theirs.status_code == 403 and error_of(theirs)["code"] == "role_not_allowed"
    missing = await harness.client.patch("/admin/keys/999999", json={"rate_per_minute": 5})
    assert missing.status_code == 404 and error_of(missing)["code"] == "key_not_found"
    monitor = await create_member(harness, "monitor")
    by_monitor = await harness.client.patch(
        f"/admin/keys/{owner.key_id}", json={"rate_per_minute": 5}, headers=harness.as_key(monitor.key)
    )
    assert by_monitor.status_code == 403 and error_of(by_monitor)["code"] == "forbidden"
    as_owner = await harness.client.patch(
        f"/admin/keys/{owner.key_id}", json={"rate_per_minute": 5}, headers=harness.as_key(owner.key)
    )
    assert as_owner.status_code == 403


async def test_users_restrict_their_own_keys_and_only_narrow_them(harness: Harness) -> None:
    user = await create_member(harness)
    as_user = harness.as_key(user.key)
    acting = await harness.client.post("/me/keys", json={"name": "front-end", "acts_for_users": True}, headers=as_user)
    assert acting.status_code == 403 and error_of(acting)["code"] == "key_setting_not_allowed"
    assert error_of(acting)["param"] == "acts_for_users" and "administrator" in error_of(acting)["message"]

    created = await harness.client.post(
        "/me/keys",
        json={
            "name": "laptop",
            "allowed_models": ["llama3*", "qwen?"],
            "allowed_surfaces": ["chat", "responses"],
            "allowed_networks": ["10.0.0.0/8"],
        },
        headers=as_user,
    )
    assert created.status_code == 201, created.text
    path = f"/me/keys/{created.json()['id']}"

    narrower = {
        "allowed_models": ["llama3-70b*", "qwen2", "llama3?"],
        "allowed_surfaces": ["chat"],
        "allowed_networks": ["10.2.0.0/16", "10.9.9.9"],
        "rate_per_minute": 20,
    }
    narrowed = await harness.client.patch(path, json=narrower, headers=as_user)
    assert narrowed.status_code == 200, narrowed.text
    assert narrowed.json()["allowed_networks"] == ["10.2.0.0/16", "10.9.9.9/32"]
    assert (await harness.client.patch(path, json={"rate_per_minute": 10}, headers=as_user)).status_code == 200

    wider: list[tuple[dict[str, Any], str]] = [
        ({"allowed_models": ["llama3*"]}, "allowed_models"),  # llama3* is wider than llama3-70b* and llama3?
        ({"allowed_models": ["qwen*"]}, "allowed_models"),
        ({"allowed_models": None}, "allowed_models"),
        ({"allowed_surfaces": ["chat", "embeddings"]}, "allowed_surfaces"),
        ({"allowed_networks": ["10.0.0.0/8"]}, "allowed_networks"),
        ({"allowed_networks": ["::1"]}, "allowed_networks"),
        ({"allowed_networks": None}, "allowed_networks"),
        ({"rate_per_minute": 11}, "rate_per_minute"),
        ({"rate_per_minute": None}, "rate_per_minute"),
        ({"acts_for_users": True}, "acts_for_users"),
    ]
    for body, param in wider:
        refused = await harness.client.patch(path, json=body, headers=as_user)
        assert refused.status_code == 403, (body, refused.text)
        assert error_of(refused)["code"] == "key_setting_not_allowed" and error_of(refused)["param"] == param, body
        assert "administrator" in error_of(refused)["message"], refused.text

    group_id = await group_with(harness, "Mine", user)
    regroup = await harness.client.patch(path, json={"group_id": group_id}, headers=as_user)
    assert regroup.status_code == 403 and error_of(regroup)["param"] == "group_id"
    assert "create a new key" in error_of(regroup)["message"]
    unrestricted = await harness.client.patch(
        f"/me/keys/{user.key_id}", json={"allowed_models": ["*"]}, headers=as_user
    )
    assert unrestricted.status_code == 200 and unrestricted.json()["allowed_models"] == ["*"]

    others = await create_member(harness)
    not_mine = await harness.client.patch(f"/me/keys/{others.key_id}", json={"rate_per_minute": 1}, headers=as_user)
    assert not_mine.status_code == 404 and error_of(not_mine)["code"] == "key_not_found"
    events = await key_events(harness, "key.settings_changed")
    assert [e.actor_id for e in events] == [user.id] * 3

    admin = await create_member(harness, "admin")
    as_admin = harness.as_key(admin.key)
    own_front_end = await harness.client.post(
        "/me/keys", json={"name": "webui", "acts_for_users": True}, headers=as_admin
    )
    assert own_front_end.status_code == 201 and own_front_end.json()["acts_for_users"] is True
    widened = await harness.client.patch(
        f"/me/keys/{own_front_end.json()['id']}",
        json={"acts_for_users": False, "rate_per_minute": None},
        headers=as_admin,
    )
    assert widened.status_code == 200 and widened.json()["acts_for_users"] is False
