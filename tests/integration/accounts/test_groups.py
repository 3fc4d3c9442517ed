"""Groups: /admin/groups (create, list, read, rename, delete; members), /admin/users/{id}/groups and /me's groups,
their audit events and bus signals, and who may do what."""

from __future__ import annotations

from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from gatehouse.accounts.access.models import AccessRule
from gatehouse.audit.models import AuditEvent
from gatehouse.auth import passwords
from gatehouse.auth.models import GroupMember
from gatehouse.core.bus import Signal
from tests.conftest import Harness
from tests.support.accounts import create_member, create_user, error_of


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Still argon2id, at a cost that keeps bootstrap at a millisecond."""
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


async def new_group(harness: Harness, name: str, description: str = "") -> dict[str, Any]:
    response = await harness.client.post("/admin/groups", json={"name": name, "description": description})
    assert response.status_code == 201, response.text
    group: dict[str, Any] = response.json()
    return group


async def audit_rows(harness: Harness, prefix: str = "group.") -> list[AuditEvent]:
    async with harness.runtime.db.sessionmaker() as session:
        query = select(AuditEvent).where(AuditEvent.action.startswith(prefix)).order_by(AuditEvent.id)
        return list((await session.execute(query)).scalars())


def signals(harness: Harness) -> list[tuple[str, dict[str, Any]]]:
    """Every bus signal this replica hears from now on."""
    heard: list[tuple[str, dict[str, Any]]] = []
    harness.runtime.bus.subscribe(lambda kind, data: heard.append((kind, data)))
    return heard


async def test_create_list_read_rename_and_describe(harness: Harness) -> None:
    research = await new_group(harness, "  Research  ", "the 70B people")
    assert research["name"] == "Research" and research["description"] == "the 70B people"
    interns = await new_group(harness, "Interns")

    taken = await harness.client.post("/admin/groups", json={"name": "research"})
    assert taken.status_code == 409 and error_of(taken)["code"] == "group_exists"
    assert "Research" in error_of(taken)["message"]
    for bad, says in (("", "empty"), ("   ", "empty"), ("x" * 101, "at most 100"), ("a\tb", "control")):
        refused = await harness.client.post("/admin/groups", json={"name": bad})
        assert refused.status_code == 422, refused.text
        assert error_of(refused)["param"] == "name" and says in error_of(refused)["message"]
    assert (await harness.client.post("/admin/groups", json={"name": "x" * 100})).status_code == 201

    listed = (await harness.client.get("/admin/groups")).json()
    assert [g["name"] for g in listed] == ["Interns", "Research", "x" * 100]
    assert all(g["members"] == 0 and g["keys"] == 0 for g in listed)
    found = (await harness.client.get("/admin/groups", params={"q": "sEaRc"})).json()
    assert [g["id"] for g in found] == [research["id"]]

    renamed = await harness.client.patch(f"/admin/groups/{research['id']}", json={"name": "Research lab"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Research lab"
    clash = await harness.client.patch(f"/admin/groups/{interns['id']}", json={"name": "RESEARCH LAB"})
    assert clash.status_code == 409 and error_of(clash)["code"] == "group_exists"
    recased = await harness.client.patch(f"/admin/groups/{research['id']}", json={"name": "Research Lab"})
    assert recased.status_code == 200  # its own name in another case is still its own
    described = await harness.client.patch(f"/admin/groups/{interns['id']}", json={"description": "summer 2026"})
    assert described.json()["description"] == "summer 2026" and described.json()["name"] == "Interns"
    nulled = await harness.client.patch(f"/admin/groups/{interns['id']}", json={"name": None})
    assert nulled.status_code == 422 and "name cannot be null" in error_of(nulled)["message"]
    unchanged = await harness.client.patch(f"/admin/groups/{interns['id']}", json={"name": "Interns"})
    assert unchanged.status_code == 200

    for method, path in (
        ("GET", "/admin/groups/999999"),
        ("PATCH", "/admin/groups/999999"),
        ("DELETE", "/admin/groups/999999"),
        ("PUT", "/admin/groups/999999/members/1"),
        ("DELETE", "/admin/groups/999999/members/1"),
    ):
        missing = await harness.client.request(method, path, json={} if method == "PATCH" else None)
        assert missing.status_code == 404 and error_of(missing)["code"] == "group_not_found", (method, path)

    rows = await audit_rows(harness)
    actions = [(r.action, r.target_id) for r in rows]
    assert actions == [
        ("group.created", str(research["id"])),
        ("group.created", str(interns["id"])),
        ("group.created", str(listed[2]["id"])),
        ("group.renamed", str(research["id"])),
        ("group.renamed", str(research["id"])),
        ("group.updated", str(interns["id"])),
    ]
    assert rows[3].details == '{"after":"Research lab","before":"Research"}'
    assert all(r.actor_type == "key" and r.target_type == "group" for r in rows)


async def test_members_are_added_idempotently_and_removed(harness: Harness) -> None:
    heard = signals(harness)
    group = await new_group(harness, "Platform")
    alice = await create_user(harness)
    bob = await create_user(harness, "monitor")
    path = f"/admin/groups/{group['id']}/members"

    first = await harness.client.put(f"{path}/{alice['id']}")
    assert first.status_code == 200 and first.json()["added"] is True
    again = await harness.client.put(f"{path}/{alice['id']}")
    assert again.status_code == 200 and again.json()["added"] is False
    assert again.json()["added_at"] == first.json()["added_at"]
    assert (await harness.client.put(f"{path}/{bob['id']}")).json()["added"] is True
    nobody = await harness.client.put(f"{path}/999999")
    assert nobody.status_code == 404 and error_of(nobody)["code"] == "user_not_found"

    detail = (await harness.client.get(f"/admin/groups/{group['id']}")).json()
    assert [(m["user_id"], m["email"], m["role"]) for m in detail["members"]] == sorted(
        [(alice["id"], alice["email"], "user"), (bob["id"], bob["email"], "monitor")], key=lambda m: m[1]
    )
    assert detail["keys"] == []
    assert (await harness.client.get("/admin/groups")).json()[0]["members"] == 2
    theirs = (await harness.client.get(f"/admin/users/{alice['id']}/groups")).json()
    assert [(g["id"], g["name"]) for g in theirs] == [(group["id"], "Platform")]
    missing = await harness.client.get("/admin/users/999999/groups")
    assert missing.status_code == 404 and error_of(missing)["code"] == "user_not_found"

    removed = await harness.client.delete(f"{path}/{alice['id']}")
    assert removed.status_code == 200 and removed.json()["user_id"] == alice["id"]
    not_member = await harness.client.delete(f"{path}/{alice['id']}")
    assert not_member.status_code == 404 and error_of(not_member)["code"] == "membership_not_found"
    assert (await harness.client.get(f"/admin/users/{alice['id']}/groups")).json() == []

    rows = await audit_rows(harness, "group.member")
    assert [(r.action, r.target_id) for r in rows] == [
        ("group.member_added", str(group["id"])),
        ("group.member_added", str(group["id"])),
        ("group.member_removed", str(group["id"])),
    ]
    assert f'"user_id":{alice["id"]}' in rows[0].details and '"group":"Platform"' in rows[0].details
    user_changes = [d["user_id"] for kind, d in heard if kind == Signal.USER_CHANGED]
    assert user_changes == [alice["id"], bob["id"], alice["id"]]  # once per change: not for the repeated add


async def test_me_lists_the_callers_groups(harness: Harness) -> None:
    member = await create_member(harness)
    assert (await harness.client.get("/me", headers=harness.as_key(member.key))).json()["groups"] == []
    b = await new_group(harness, "b-team")
    a = await new_group(harness, "a-team")
    for group in (b, a):
        assert (await harness.client.put(f"/admin/groups/{group['id']}/members/{member.id}")).status_code == 200
    me = (await harness.client.get("/me", headers=harness.as_key(member.key))).json()
    assert [(g["id"], g["name"]) for g in me["groups"]] == [(a["id"], "a-team"), (b["id"], "b-team")]


async def test_a_group_with_keys_bound_is_not_deleted(harness: Harness) -> None:
    heard = signals(harness)
    group = await new_group(harness, "Search")
    owner = await create_member(harness)
    other = await create_member(harness)
    for member in (owner, other):
        await harness.client.put(f"/admin/groups/{group['id']}/members/{member.id}")
    project = await harness.client.post(
        f"/admin/users/{owner.id}/keys", json={"name": "search-indexer", "group_id": group["id"]}
    )
    assert project.status_code == 201, project.text
    project_key = project.json()
    assert project_key["group_id"] == group["id"]
    async with harness.runtime.db.sessionmaker() as session, session.begin():
        session.add(AccessRule(group_id=group["id"], effect="allow", target="model", pattern="demo*"))

    in_use = await harness.client.delete(f"/admin/groups/{group['id']}")
    assert in_use.status_code == 409 and error_of(in_use)["code"] == "group_in_use"
    message = error_of(in_use)["message"]
    assert "1 key(s)" in message and str(project_key["id"]) in message and "search-indexer" in message
    assert "revoke" in message and "PATCH /admin/keys/" in message
    leaving = await harness.client.delete(f"/admin/groups/{group['id']}/members/{owner.id}")
    assert leaving.status_code == 409 and error_of(leaving)["code"] == "group_in_use"
    assert "search-indexer" in error_of(leaving)["message"]
    summary = (await harness.client.get("/admin/groups")).json()[0]
    assert (summary["members"], summary["keys"]) == (2, 1)
    detail = (await harness.client.get(f"/admin/groups/{group['id']}")).json()
    assert [(k["id"], k["email"]) for k in detail["keys"]] == [(project_key["id"], owner.email)]

    assert (await harness.client.delete(f"/admin/keys/{project_key['id']}")).status_code == 200  # revoked
    assert (await harness.client.get("/admin/groups")).json()[0]["keys"] == 0
    heard.clear()
    deleted = await harness.client.delete(f"/admin/groups/{group['id']}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {
        "id": group["id"],
        "name": "Search",
        "former_members": sorted([owner.id, other.id]),
        "unbound_revoked_keys": [project_key["id"]],
    }
    assert (await harness.client.get(f"/admin/groups/{group['id']}")).status_code == 404
    async with harness.runtime.db.sessionmaker() as session:
        assert (await session.execute(select(GroupMember))).scalars().all() == []
        assert (await session.execute(select(AccessRule))).scalars().all() == []
    revoked = (await harness.client.get("/admin/keys", params={"user_id": owner.id})).json()["items"]
    assert {k["group_id"] for k in revoked} == {None}
    assert sorted(d["user_id"] for kind, d in heard if kind == Signal.USER_CHANGED) == sorted([owner.id, other.id])
    assert [kind for kind, _ in heard if kind == Signal.ACCESS_CHANGED] == [Signal.ACCESS_CHANGED]
    (event,) = [r for r in await audit_rows(harness) if r.action == "group.deleted"]
    assert event.target_id == str(group["id"]) and '"name":"Search"' in event.details
    assert f'"unbound_revoked_keys":[{project_key["id"]}]' in event.details
    assert project_key["key"] not in event.details


async def test_monitors_read_groups_and_users_do_not(harness: Harness) -> None:
    group = await new_group(harness, "Ops")
    monitor = await create_member(harness, "monitor")
    user = await create_member(harness)
    admin = await create_member(harness, "admin")
    as_monitor, as_user, as_admin = (harness.as_key(m.key) for m in (monitor, user, admin))
    assert (await harness.client.get("/admin/groups", headers=as_monitor)).status_code == 200
    assert (await harness.client.get(f"/admin/groups/{group['id']}", headers=as_monitor)).status_code == 200
    assert (await harness.client.get(f"/admin/users/{user.id}/groups", headers=as_monitor)).status_code == 200
    changes = (
        ("POST", "/admin/groups", {"name": "Mine"}),
        ("PATCH", f"/admin/groups/{group['id']}", {"name": "Theirs"}),
        ("DELETE", f"/admin/groups/{group['id']}", None),
        ("PUT", f"/admin/groups/{group['id']}/members/{user.id}", None),
        ("DELETE", f"/admin/groups/{group['id']}/members/{user.id}", None),
    )
    for method, path, body in changes:
        refused = await harness.client.request(method, path, json=body, headers=as_monitor)
        assert refused.status_code == 403 and error_of(refused)["code"] == "forbidden", (method, path)
    assert (await harness.client.get("/admin/groups", headers=as_user)).status_code == 403
    added = await harness.client.put(f"/admin/groups/{group['id']}/members/{user.id}", headers=as_admin)
    assert added.status_code == 200
    assert [r.actor_id for r in await audit_rows(harness, "group.member")] == [admin.id]


async def test_the_runbook_groups_section_through_the_api(harness: Harness) -> None:
    """RUNBOOK "Groups", its API calls in order: create a group, add a member, bind a project key, restrict it,
    and delete the group once no key is bound to it."""
    created = await harness.client.post("/admin/groups", json={"name": "research", "description": "The 70B people"})
    assert created.status_code == 201, created.text
    group_id = created.json()["id"]
    alice = await create_member(harness)
    assert (await harness.client.put(f"/admin/groups/{group_id}/members/{alice.id}")).status_code == 200
    assert [g["name"] for g in (await harness.client.get("/admin/groups", params={"q": "res"})).json()] == ["research"]
    assert (await harness.client.get(f"/admin/users/{alice.id}/groups")).json()[0]["id"] == group_id
    renamed = await harness.client.patch(f"/admin/groups/{group_id}", json={"name": "research lab"})
    assert renamed.status_code == 200

    project = await harness.client.post(
        f"/admin/users/{alice.id}/keys", json={"name": "search-indexer", "group_id": group_id}
    )
    assert project.status_code == 201 and project.json()["group_id"] == group_id
    existing = await harness.client.patch(f"/admin/keys/{alice.key_id}", json={"group_id": group_id})
    assert existing.status_code == 200 and existing.json()["group_id"] == group_id
    bound = (await harness.client.get("/admin/keys", params={"group_id": group_id})).json()["items"]
    assert {k["id"] for k in bound} == {project.json()["id"], alice.key_id}

    restriction = {
        "allowed_models": ["bge-*", "nomic-embed-text"],
        "allowed_surfaces": ["embeddings"],
        "allowed_networks": ["10.1.0.0/16", "2001:db8::/32"],
        "rate_per_minute": 600,
    }
    restricted = await harness.client.patch(f"/admin/keys/{project.json()['id']}", json=restriction)
    assert restricted.status_code == 200, restricted.text
    assert {name: restricted.json()[name] for name in restriction} == restriction

    assert (await harness.client.delete(f"/admin/groups/{group_id}")).status_code == 409  # keys bound to it
    assert (await harness.client.patch(f"/admin/keys/{alice.key_id}", json={"group_id": None})).status_code == 200
    assert (await harness.client.delete(f"/admin/keys/{project.json()['id']}")).status_code == 200
    assert (await harness.client.delete(f"/admin/groups/{group_id}/members/{alice.id}")).status_code == 200
    assert (await harness.client.delete(f"/admin/groups/{group_id}")).status_code == 200
