"""Model access: rules of users and groups (allow, deny; models, aliases and upstreams by pattern), the default
policy, and a key's own model list, surfaces, networks and rate, enforced on every gateway surface and route, in
each protocol's error shape; model lists filtered; a change in force on another replica within a second
(SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from gatehouse.audit.models import AuditEvent
from tests.conftest import Harness, make_settings, running_app
from tests.support.accounts import Member, create_member, error_of

# Two demo upstreams serving the same models, and aliases on one, the other, or both.
CONFIG = """
upstreams:
  - {name: local, kind: demo}
  - {name: cloud, kind: demo}
models:
  small: {upstream: local, model: demo}
  big: {upstream: cloud, model: demo}
"""
CHAT_MESSAGES = [{"role": "user", "content": "hi"}]


@dataclass(frozen=True)
class Surface:
    name: str
    path: str
    body: dict[str, Any]
    style: str = "openai"  # the error shape: openai, anthropic or ollama
    embeds: bool = False


SURFACES = [
    Surface("chat", "/v1/chat/completions", {"messages": CHAT_MESSAGES, "max_tokens": 4}),
    Surface("responses", "/v1/responses", {"input": "hi", "max_output_tokens": 16, "store": False}),
    Surface("messages", "/v1/messages", {"messages": CHAT_MESSAGES, "max_tokens": 4}, "anthropic"),
    Surface("count_tokens", "/v1/messages/count_tokens", {"messages": CHAT_MESSAGES}, "anthropic"),
    Surface("completions", "/v1/completions", {"prompt": "hi", "max_tokens": 4}),
    Surface("ollama_chat", "/api/chat", {"messages": CHAT_MESSAGES, "stream": False}, "ollama"),
    Surface("generate", "/api/generate", {"prompt": "hi", "stream": False}, "ollama"),
    Surface("show", "/api/show", {}, "ollama"),
    Surface("embeddings", "/v1/embeddings", {"input": "hi"}, embeds=True),
    Surface("ollama_embed", "/api/embed", {"input": "hi"}, "ollama", embeds=True),
    Surface("ollama_embeddings", "/api/embeddings", {"prompt": "hi"}, "ollama", embeds=True),
]


@pytest.fixture
async def harness(database_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    config = tmp_path / "gatehouse.yaml"
    config.write_text(CONFIG)
    settings = make_settings(database_url, tmp_path, gatehouse_config=config, rate_limit_per_minute=None)
    async with running_app(settings) as running:
        yield running


async def use(harness: Harness, member: Member, surface: Surface, model: str) -> httpx.Response:
    return await harness.client.post(
        surface.path, json={**surface.body, "model": model}, headers=harness.as_key(member.key)
    )


def refused(response: httpx.Response, surface: Surface) -> bool:
    """Whether the answer is a 403 model_not_allowed in the surface's protocol."""
    if response.status_code != 403:
        return False
    body = response.json()
    if surface.style == "ollama":
        return "may not use the model" in body["error"]
    if surface.style == "anthropic":
        error = body["error"]
        return body["type"] == "error" and error["type"] == "permission_error" and error["code"] == "model_not_allowed"
    return bool(error_of(response)["code"] == "model_not_allowed")


async def rule(harness: Harness, **body: Any) -> dict[str, Any]:
    response = await harness.client.post("/admin/access/rules", json=body)
    assert response.status_code in (200, 201), response.text
    created: dict[str, Any] = response.json()
    return created


async def group_with(harness: Harness, name: str, *members: Member) -> int:
    created = await harness.client.post("/admin/groups", json={"name": name})
    assert created.status_code == 201, created.text
    group_id: int = created.json()["id"]
    for member in members:
        added = await harness.client.put(f"/admin/groups/{group_id}/members/{member.id}")
        assert added.status_code == 200, added.text
    return group_id


async def listed(harness: Harness, member: Member) -> tuple[set[str], set[str]]:
    headers = harness.as_key(member.key)
    openai = await harness.client.get("/v1/models", headers=headers)
    ollama = await harness.client.get("/api/tags", headers=headers)
    assert openai.status_code == ollama.status_code == 200
    return {m["id"] for m in openai.json()["data"]}, {m["name"] for m in ollama.json()["models"]}


# --- the matrix: every surface x every kind of rule ------------------------------------------------------


async def test_every_surface_obeys_user_group_upstream_and_default_rules(harness: Harness) -> None:
    alice, bob = await create_member(harness), await create_member(harness)
    interns = await group_with(harness, "interns", alice, bob)

    def model_of(surface: Surface) -> str:
        return "demo-embed" if surface.embeds else "demo"

    for surface in SURFACES:
        ok = await use(harness, alice, surface, model_of(surface))
        assert ok.status_code == 200, (surface.name, ok.text)

    # A group's deny: both members refused, on every surface, in its protocol's shape.
    for pattern in ("demo", "demo-embed"):
        await rule(harness, group_id=interns, effect="deny", pattern=pattern)
    for surface in SURFACES:
        for member in (alice, bob):
            response = await use(harness, member, surface, model_of(surface))
            assert refused(response, surface), (surface.name, response.status_code, response.text)
            if surface.style != "ollama":
                assert "access" in response.text and "POST /admin/access/rules" in response.text

    # The user's own allow is the exception to the group's deny; Bob stays refused.
    for pattern in ("demo*",):
        await rule(harness, user_id=alice.id, effect="allow", pattern=pattern)
    for surface in SURFACES:
        assert (await use(harness, alice, surface, model_of(surface))).status_code == 200, surface.name
        assert refused(await use(harness, bob, surface, model_of(surface)), surface), surface.name

    # A deny of a whole upstream: `demo` is still served through the other one, `big` (on cloud only) is not.
    await rule(harness, user_id=alice.id, effect="deny", target="upstream", pattern="cloud")
    chat = SURFACES[0]
    assert (await use(harness, alice, chat, "demo")).status_code == 200
    assert (await use(harness, alice, chat, "small")).status_code == 200
    assert refused(await use(harness, alice, chat, "big"), chat)
    assert (await use(harness, alice, chat, "nonexistent")).status_code == 404  # unknown stays unknown

    rows = await audit(harness, "access_rule.")
    assert [r.action for r in rows] == ["access_rule.added"] * 4


async def test_default_deny_lets_in_only_what_a_rule_allows(database_url: str, tmp_path: Path) -> None:
    config = tmp_path / "gatehouse.yaml"
    config.write_text(CONFIG)
    settings = make_settings(
        database_url, tmp_path, gatehouse_config=config, model_access_default="deny", rate_limit_per_minute=None
    )
    async with running_app(settings) as harness:
        researcher, intern = await create_member(harness), await create_member(harness)
        research = await group_with(harness, "research", researcher)
        chat = SURFACES[0]
        for member in (researcher, intern):
            response = await use(harness, member, chat, "small")
            assert refused(response, chat) and "denied by default" in error_of(response)["message"]
            assert await listed(harness, member) == (set(), set())

        await rule(harness, group_id=research, effect="allow", pattern="big")
        await rule(harness, group_id=research, effect="allow", target="upstream", pattern="local")
        assert (await use(harness, researcher, chat, "big")).status_code == 200  # the alias, by name
        assert (await use(harness, researcher, chat, "small")).status_code == 200  # every model of `local`
        assert (await use(harness, researcher, chat, "demo")).status_code == 200  # served by local (cloud refused)
        assert refused(await use(harness, intern, chat, "big"), chat)
        openai, ollama = await listed(harness, researcher)
        assert openai == ollama == {"big", "small", "demo", "demo-embed"}
        assert await listed(harness, intern) == (set(), set())

        # /v1/models/{id} and /api/show answer 403 for a model the caller may not use.
        hidden = await harness.client.get("/v1/models/big", headers=harness.as_key(intern.key))
        assert hidden.status_code == 403 and error_of(hidden)["code"] == "model_not_allowed"
        seen = await harness.client.get("/v1/models/big", headers=harness.as_key(researcher.key))
        assert seen.status_code == 200 and seen.json()["id"] == "big"

        # Explained: which rule (or the default) decided, per upstream.
        check = await harness.client.get("/admin/access/check", params={"user_id": researcher.id, "model": "demo"})
        assert check.status_code == 200, check.text
        routes = {r["upstream"]: r for r in check.json()["routes"]}
        assert routes["local"]["allowed"] and routes["local"]["decided_by"] == "group"
        assert routes["local"]["group_id"] == research
        assert not routes["cloud"]["allowed"] and routes["cloud"]["decided_by"] == "default"
        assert check.json()["allowed"] is True and check.json()["group_ids"] == [research]


# --- a key's own restrictions ----------------------------------------------------------------------------


async def test_a_key_model_list_surfaces_networks_and_rate(harness: Harness) -> None:
    member = await create_member(harness)
    chat, embeddings = SURFACES[0], SURFACES[8]

    async def restrict(**settings: Any) -> None:
        response = await harness.client.patch(f"/admin/keys/{member.key_id}", json=settings)
        assert response.status_code == 200, response.text

    await restrict(allowed_models=["small", "demo-*"])
    assert (await use(harness, member, chat, "small")).status_code == 200
    response = await use(harness, member, chat, "big")
    assert refused(response, chat) and "this API key is limited to the models small, demo-*" in response.text
    assert (await use(harness, member, embeddings, "demo-embed")).status_code == 200
    assert await listed(harness, member) == ({"small", "demo-embed"}, {"small", "demo-embed"})
    # The key narrows what the user may do; it never widens it.
    await rule(harness, user_id=member.id, effect="deny", pattern="small")
    assert refused(await use(harness, member, chat, "small"), chat)

    await restrict(allowed_models=None, allowed_surfaces=["embeddings"])
    assert (await use(harness, member, embeddings, "demo-embed")).status_code == 200
    assert (await use(harness, member, SURFACES[9], "demo-embed")).status_code == 200  # Ollama's embed too
    response = await use(harness, member, chat, "big")
    assert response.status_code == 403 and error_of(response)["code"] == "surface_not_allowed"
    assert "may only be used for: embeddings" in error_of(response)["message"]

    # The in-process client comes from 127.0.0.1.
    await restrict(allowed_surfaces=None, allowed_networks=["10.0.0.0/8"])
    response = await use(harness, member, chat, "big")
    assert response.status_code == 403 and error_of(response)["code"] == "network_not_allowed"
    await restrict(allowed_networks=["10.0.0.0/8", "127.0.0.1"])
    assert (await use(harness, member, chat, "big")).status_code == 200

    await restrict(rate_per_minute=2)
    for _ in range(2):
        assert (await use(harness, member, chat, "big")).status_code == 200
    response = await use(harness, member, chat, "big")
    assert response.status_code == 429 and error_of(response)["param"] == "key_per_minute", response.text
    assert "this API key" in error_of(response)["message"]


# --- managing rules --------------------------------------------------------------------------------------


async def test_rules_are_validated_listed_removed_and_audited(harness: Harness) -> None:
    member = await create_member(harness)
    monitor = await create_member(harness, "monitor")
    first = await harness.client.post(
        "/admin/access/rules", json={"user_id": member.id, "effect": "deny", "pattern": "gpt-4*"}
    )
    assert first.status_code == 201, first.text
    again = await harness.client.post(
        "/admin/access/rules", json={"user_id": member.id, "effect": "deny", "pattern": "gpt-4*"}
    )
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    clash = await harness.client.post(
        "/admin/access/rules", json={"user_id": member.id, "effect": "allow", "pattern": "gpt-4*"}
    )
    assert clash.status_code == 409 and error_of(clash)["code"] == "invalid_rule"
    assert f"DELETE /admin/access/rules/{first.json()['id']}" in error_of(clash)["message"]

    bad = [
        ({"effect": "deny", "pattern": "x"}, 422),  # no subject
        ({"user_id": member.id, "group_id": 1, "effect": "deny", "pattern": "x"}, 422),  # two subjects
        ({"user_id": member.id, "effect": "maybe", "pattern": "x"}, 422),
        ({"user_id": member.id, "effect": "deny", "target": "key", "pattern": "x"}, 422),
        ({"user_id": member.id, "effect": "deny", "pattern": "two words"}, 400),
        ({"user_id": member.id, "effect": "deny", "pattern": "gpt-[45]"}, 400),
        ({"user_id": member.id, "effect": "deny", "pattern": ""}, 422),
        ({"user_id": 999_999, "effect": "deny", "pattern": "x"}, 404),
        ({"group_id": 999_999, "effect": "deny", "pattern": "x"}, 404),
    ]
    for body, status in bad:
        response = await harness.client.post("/admin/access/rules", json=body)
        assert response.status_code == status, (body, response.text)

    # Monitors read; only admins change.
    as_monitor = harness.as_key(monitor.key)
    policy = await harness.client.get("/admin/access", headers=as_monitor, params={"user_id": member.id})
    assert policy.status_code == 200 and policy.json()["default"] == "allow"
    assert [r["pattern"] for r in policy.json()["rules"]] == ["gpt-4*"]
    denied = await harness.client.post(
        "/admin/access/rules", headers=as_monitor, json={"user_id": member.id, "effect": "deny", "pattern": "y"}
    )
    assert denied.status_code == 403

    removed = await harness.client.delete(f"/admin/access/rules/{first.json()['id']}")
    assert removed.status_code == 200
    gone = await harness.client.delete(f"/admin/access/rules/{first.json()['id']}")
    assert gone.status_code == 404 and error_of(gone)["code"] == "rule_not_found"
    rows = await audit(harness, "access_rule.")
    assert [r.action for r in rows] == ["access_rule.added", "access_rule.removed"]
    details = json.loads(rows[0].details)
    assert (details["user_id"], details["pattern"], details["effect"]) == (member.id, "gpt-4*", "deny")

    # Deleting the user takes their rules with them.
    await rule(harness, user_id=member.id, effect="deny", pattern="z")
    assert (await harness.client.delete(f"/admin/users/{member.id}")).status_code in (200, 204)
    assert (await harness.client.get("/admin/access", params={"user_id": member.id})).json()["rules"] == []


async def audit(harness: Harness, prefix: str) -> list[AuditEvent]:
    async with harness.runtime.db.sessionmaker() as session:
        query = select(AuditEvent).where(AuditEvent.action.startswith(prefix)).order_by(AuditEvent.id)
        return list((await session.execute(query)).scalars())


# --- another replica -------------------------------------------------------------------------------------


@pytest.mark.redis
async def test_a_rule_change_is_in_force_on_another_replica_within_a_second(
    database_url: str, tmp_path: Path, redis_url: str, redis_key_prefix: str
) -> None:
    config = tmp_path / "gatehouse.yaml"
    config.write_text(CONFIG)
    settings = make_settings(
        database_url,
        tmp_path,
        gatehouse_config=config,
        redis_url=redis_url,
        redis_prefix=redis_key_prefix,
        rate_limit_per_minute=None,
    )
    async with running_app(settings) as first, running_app(settings) as second:
        member = await create_member(first)
        chat = SURFACES[0]
        assert (await use(second, member, chat, "small")).status_code == 200  # warm on the second replica

        for effect, expected in (("deny", 403), ("allow", 200)):
            if effect == "deny":
                added = await rule(first, user_id=member.id, effect="deny", pattern="small")
            else:
                assert (await first.client.delete(f"/admin/access/rules/{added['id']}")).status_code == 200
            changed = time.monotonic()
            while (status := (await use(second, member, chat, "small")).status_code) != expected:
                assert time.monotonic() - changed < 1.0, f"still {status} a second after the change"
                await asyncio.sleep(0.02)
