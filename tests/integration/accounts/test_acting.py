"""Front-ends acting for their users: a key marked acts_for_users names the person each request is for (a header,
OpenAI's `user`, Anthropic's `metadata.user_id`), and the request is that person's (access rules, groups, quotas,
request log) under the key's own restrictions; other keys naming someone are refused and audited; unknown, disabled
and blocked people are refused; people from an allowed domain are created on first sight; the cache follows the bus
(SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, func, select

from gatehouse.accounts.acting.service import Acting
from gatehouse.audit.models import AuditEvent
from gatehouse.auth.models import User
from gatehouse.gateway.models import RequestLog
from tests.conftest import Harness, make_settings, running_app
from tests.support.accounts import Member, create_member, error_of

CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
MESSAGES = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
OLLAMA = {
    "model": "demo",
    "messages": [{"role": "user", "content": "hi"}],
    "stream": False,
    "options": {"num_predict": 4},
}
HEADER = "X-Gatehouse-User"


@pytest.fixture
async def harness(database_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    settings = make_settings(
        database_url,
        tmp_path,
        rate_limit_per_minute=None,
        acts_for_users_create_domains="new.example, @Other.New.Example",
        default_messages_per_day=40,
        default_tokens_per_day=9000,
    )
    async with running_app(settings) as running:
        yield running


async def front_end(harness: Harness, **settings: Any) -> Member:
    """A service account's key, marked acts_for_users by an administrator (with more settings when given)."""
    owner = await create_member(harness)
    changed = await harness.client.patch(f"/admin/keys/{owner.key_id}", json={"acts_for_users": True, **settings})
    assert changed.status_code == 200, changed.text
    return owner


def as_front_end(front: Member, person: str | None = None, header: str = HEADER) -> dict[str, str]:
    headers = {"authorization": f"Bearer {front.key}"}
    if person is not None:
        headers[header] = person
    return headers


async def logged(harness: Harness) -> list[RequestLog]:
    await harness.runtime.request_log.flush()
    async with harness.runtime.db.sessionmaker() as session:
        return list((await session.execute(select(RequestLog).order_by(RequestLog.id))).scalars())


async def audited(harness: Harness, action: str) -> list[AuditEvent]:
    async with harness.runtime.db.sessionmaker() as session:
        query = select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
        return list((await session.execute(query)).scalars())


# --- a front-end acting for two people ---------------------------------------------------------------------


async def test_each_person_gets_their_own_access_rules_quota_and_log_rows(harness: Harness) -> None:
    front = await front_end(harness)
    alice, bob = await create_member(harness), await create_member(harness)
    denied = await harness.client.post(
        "/admin/access/rules", json={"user_id": alice.id, "effect": "deny", "pattern": "demo"}
    )
    assert denied.status_code == 201, denied.text
    tiny = await harness.client.patch(f"/admin/users/{bob.id}", json={"tokens_per_day": 1})
    assert tiny.status_code == 200, tiny.text

    # Alice's rule refuses `demo` however the front-end names her, in each protocol's shape; she may still embed.
    for headers, body in (
        (as_front_end(front, alice.email), CHAT),
        (as_front_end(front), {**CHAT, "user": alice.email.upper()}),  # emails are matched whatever their case
    ):
        response = await harness.client.post("/v1/chat/completions", json=body, headers=headers)
        assert response.status_code == 403 and error_of(response)["code"] == "model_not_allowed", response.text
    response = await harness.client.post(
        "/v1/messages", json={**MESSAGES, "metadata": {"user_id": alice.email}}, headers=as_front_end(front)
    )
    assert response.status_code == 403 and response.json()["error"]["code"] == "model_not_allowed", response.text
    response = await harness.client.post("/api/chat", json=OLLAMA, headers=as_front_end(front, alice.email))
    assert response.status_code == 403 and "may not use the model" in response.json()["error"]
    embedded = await harness.client.post(
        "/v1/embeddings", json={"model": "demo-embed", "input": "hi"}, headers=as_front_end(front, alice.email)
    )
    assert embedded.status_code == 200, embedded.text
    # Bob may use `demo`, but his one-token day is spent before he starts.
    response = await harness.client.post("/v1/chat/completions", json=CHAT, headers=as_front_end(front, bob.email))
    assert response.status_code == 429 and error_of(response)["code"] == "quota_exceeded", response.text
    # The model lists are each person's too (through the header; the key's owner's own without one).
    alice_models = await harness.client.get("/v1/models", headers=as_front_end(front, alice.email))
    assert {m["id"] for m in alice_models.json()["data"]} == {"demo-embed"}
    owner_models = await harness.client.get("/api/tags", headers=as_front_end(front))
    assert {m["name"] for m in owner_models.json()["models"]} == {"demo", "demo-embed"}

    # The key's owner, named, is served as themselves: the rules of neither apply.
    ok = await harness.client.post("/v1/chat/completions", json=CHAT, headers=as_front_end(front, front.email))
    assert ok.status_code == 200, ok.text

    # The request log names the person and the front-end's key (model refusals come before it).
    rows = await logged(harness)
    assert [(r.user_id, r.key_id, r.status_code, r.surface) for r in rows] == [
        (alice.id, front.key_id, 200, "embeddings"),
        (bob.id, front.key_id, 429, "chat"),
        (front.id, front.key_id, 200, "chat"),
    ]
    usage = await harness.client.get("/admin/usage", params={"user_id": alice.id})
    assert usage.status_code == 200 and [u["user_id"] for u in usage.json()] == [alice.id]


async def test_responses_are_stored_for_the_person(harness: Harness) -> None:
    front, alice = await front_end(harness), await create_member(harness)
    body = {"model": "demo", "input": "hi", "max_output_tokens": 16, "safety_identifier": alice.email}
    created = await harness.client.post("/v1/responses", json=body, headers=as_front_end(front))
    assert created.status_code == 200, created.text
    response_id = created.json()["id"]
    # Hers: read back by the front-end naming her, and by her own key; not the key's owner's.
    mine = await harness.client.get(f"/v1/responses/{response_id}", headers=as_front_end(front, alice.email))
    assert mine.status_code == 200 and mine.json()["id"] == response_id
    assert (await harness.client.get(f"/v1/responses/{response_id}", headers=harness.as_key(alice.key))).is_success
    owner = await harness.client.get(f"/v1/responses/{response_id}", headers=as_front_end(front))
    assert owner.status_code == 404
    continued = await harness.client.post(
        "/v1/responses",
        json={**body, "previous_response_id": response_id, "safety_identifier": None, "user": alice.email},
        headers=as_front_end(front),
    )
    assert continued.status_code == 200, continued.text


# --- who may name a person ---------------------------------------------------------------------------------


async def test_a_normal_key_naming_someone_is_refused_and_audited(harness: Harness) -> None:
    member, alice = await create_member(harness), await create_member(harness)
    refusals = []
    for named in (alice.email, "nobody@nowhere.example"):  # the same answer, whether the account exists or not
        for path, body in (("/v1/chat/completions", CHAT), ("/v1/messages", MESSAGES), ("/api/chat", OLLAMA)):
            response = await harness.client.post(path, json=body, headers={**harness.as_key(member.key), HEADER: named})
            assert response.status_code == 403, response.text
            refusals.append(response.json())
    openai, anthropic, ollama = refusals[:3]
    assert openai["error"]["code"] == "acting_not_allowed" and "acts_for_users" in openai["error"]["message"]
    assert anthropic["type"] == "error" and anthropic["error"]["type"] == "permission_error"
    assert anthropic["error"]["code"] == "acting_not_allowed"
    assert "does not act for users" in ollama["error"]
    assert refusals[:3] == refusals[3:]
    listed = await harness.client.get("/v1/models", headers={**harness.as_key(member.key), HEADER: alice.email})
    assert listed.status_code == 403

    # OpenAI's `user` field is the client's own business: not refused, not used.
    response = await harness.client.post(
        "/v1/chat/completions", json={**CHAT, "user": alice.email}, headers=harness.as_key(member.key)
    )
    assert response.status_code == 200, response.text
    assert [(r.user_id, r.status_code) for r in await logged(harness)][-1] == (member.id, 200)

    # One audit row for the burst (a minute's worth per key), counting the refusals it stands for.
    rows = await audited(harness, "acting.refused")
    assert len(rows) == 1 and (rows[0].actor_key_id, rows[0].target_id) == (member.key_id, str(member.key_id))
    details = json.loads(rows[0].details)
    assert details["header"] == HEADER and details["named_user_id"] == alice.id and details["refused"] == 1
    assert alice.email not in rows[0].details
    acting = harness.runtime.components.get(Acting)
    acting._refusals.clear()  # a minute later
    again = await harness.client.post(
        "/v1/chat/completions", json=CHAT, headers={**harness.as_key(member.key), HEADER: "x"}
    )
    assert again.status_code == 403
    rows = await audited(harness, "acting.refused")
    assert len(rows) == 2 and json.loads(rows[1].details)["named_user_id"] is None


async def test_refusals_name_the_person_and_say_what_to_do(harness: Harness) -> None:
    front = await front_end(harness)
    disabled, pending, blocked = (
        await create_member(harness),
        await create_member(harness),
        await create_member(harness),
    )
    assert (await harness.client.post(f"/admin/users/{disabled.id}/disable")).status_code == 200
    assert (await harness.client.patch(f"/admin/users/{pending.id}", json={"status": "pending"})).status_code == 200
    until = "2999-01-01T00:00:00Z"
    block = await harness.client.post(
        f"/admin/users/{blocked.id}/block", json={"reason": "secret note", "until": until}
    )
    assert block.status_code == 200, block.text

    async def chat(headers: dict[str, str], **extra: Any) -> httpx.Response:
        return await harness.client.post("/v1/chat/completions", json={**CHAT, **extra}, headers=headers)

    response = await chat(as_front_end(front, disabled.email))
    assert response.status_code == 403 and error_of(response)["code"] == "account_disabled"
    assert disabled.email in error_of(response)["message"]
    response = await chat(as_front_end(front, pending.email))
    assert response.status_code == 403 and error_of(response)["code"] == "account_pending"
    response = await chat(as_front_end(front, blocked.email))
    assert response.status_code == 403 and error_of(response)["code"] == "account_blocked"
    assert "until 2999-01-01 00:00 UTC" in error_of(response)["message"] and "secret" not in response.text
    response = await chat(as_front_end(front, "nobody@nowhere.example"))
    assert response.status_code == 403 and error_of(response)["code"] == "acting_user_unknown"
    assert "ask an administrator to create one" in error_of(response)["message"]
    # The same in Anthropic's and Ollama's shapes.
    response = await harness.client.post(
        "/v1/messages", json={**MESSAGES, "metadata": {"user_id": disabled.email}}, headers=as_front_end(front)
    )
    assert response.status_code == 403 and response.json()["error"]["code"] == "account_disabled"
    response = await harness.client.post(
        "/api/chat", json=OLLAMA, headers=as_front_end(front, "nobody@nowhere.example")
    )
    assert response.status_code == 403 and "No Gatehouse account has the email" in response.json()["error"]

    # Naming nobody: a 400 saying how to name someone on that surface.
    response = await chat(as_front_end(front))
    assert response.status_code == 400 and error_of(response)["code"] == "acting_user_missing"
    assert HEADER in error_of(response)["message"] and "`user`" in error_of(response)["message"]
    response = await harness.client.post("/v1/messages", json=MESSAGES, headers=as_front_end(front))
    assert response.status_code == 400 and "`metadata.user_id`" in response.json()["error"]["message"]
    # A front-end's own user id where the email belongs (LibreChat puts its ids in `user`).
    response = await chat(as_front_end(front), user="65f1c0ffee0123456789abcd")
    assert response.status_code == 400 and error_of(response)["code"] == "invalid_acting_user"
    assert "`user` must be the email" in error_of(response)["message"]
    # The header comes first: a front-end's id in `user` does not matter when the header names the person.
    owner_named = await chat(as_front_end(front, front.email), user="65f1c0ffee0123456789abcd")
    assert owner_named.status_code == 200, owner_named.text


async def test_a_front_end_may_be_served_as_its_owner_when_it_names_nobody(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(
        database_url,
        tmp_path,
        rate_limit_per_minute=None,
        acts_for_users_unnamed="owner",
        acts_for_users_header="X-OpenWebUI-User-Email",
        acts_for_users_sources="header",
    )
    async with running_app(settings) as harness:
        front, alice = await front_end(harness), await create_member(harness)
        unnamed = await harness.client.post(
            "/v1/chat/completions", json={**CHAT, "user": alice.email}, headers=as_front_end(front)
        )
        assert unnamed.status_code == 200, unnamed.text  # `user` is not a source here: the owner's request
        named = await harness.client.post(
            "/v1/chat/completions", json=CHAT, headers=as_front_end(front, alice.email, "X-OpenWebUI-User-Email")
        )
        assert named.status_code == 200, named.text
        assert [r.user_id for r in await logged(harness)] == [front.id, alice.id]
        # X-Gatehouse-User is still refused from a key that does not act for users.
        refused = await harness.client.post(
            "/v1/chat/completions", json=CHAT, headers={**harness.as_key(alice.key), HEADER: front.email}
        )
        assert refused.status_code == 403 and error_of(refused)["code"] == "acting_not_allowed"


# --- first sight -------------------------------------------------------------------------------------------


async def test_people_of_an_allowed_domain_are_created_on_first_sight(harness: Harness) -> None:
    front, other_front = await front_end(harness), await front_end(harness)
    response = await harness.client.post(
        "/v1/chat/completions", json=CHAT, headers=as_front_end(front, "Carol@New.Example")
    )
    assert response.status_code == 200, response.text
    carol = (await harness.client.get("/admin/users", params={"q": "carol@new.example"})).json()["items"]
    assert [(u["email"], u["role"], u["status"]) for u in carol] == [("carol@new.example", "user", "active")]
    assert (carol[0]["messages_per_day"], carol[0]["tokens_per_day"]) == (40, 9000)  # the defaults
    rows = await audited(harness, "user.created_on_first_sight")
    assert len(rows) == 1 and rows[0].target_id == str(carol[0]["id"])
    assert (rows[0].actor_type, rows[0].actor_id, rows[0].actor_key_id) == ("key", front.id, front.key_id)
    assert json.loads(rows[0].details)["key_id"] == front.key_id
    assert [r.user_id for r in await logged(harness)] == [carol[0]["id"]]

    # Another domain is not created (a subdomain of an allowed one neither, unless listed).
    for email in ("dave@elsewhere.example", "dave@sub.new.example"):
        response = await harness.client.post("/v1/chat/completions", json=CHAT, headers=as_front_end(front, email))
        assert response.status_code == 403 and error_of(response)["code"] == "acting_user_unknown", response.text
        assert "ACTS_FOR_USERS_CREATE_DOMAINS" in error_of(response)["message"]

    # Many first requests at once, through two keys, for one new person: one account, one audit row.
    async def first(key: Member) -> int:
        response = await harness.client.post(
            "/v1/chat/completions", json=CHAT, headers=as_front_end(key, "erin@other.new.example")
        )
        return response.status_code

    statuses = await asyncio.gather(*(first(key) for key in (front, other_front) * 6))
    assert statuses == [200] * 12
    async with harness.runtime.db.sessionmaker() as session:
        query = select(func.count()).select_from(User).where(User.email == "erin@other.new.example")
        assert (await session.execute(query)).scalar_one() == 1
    assert len(await audited(harness, "user.created_on_first_sight")) == 2


# --- the key's own restrictions ----------------------------------------------------------------------------


async def test_the_key_restrictions_stay_on_top(harness: Harness) -> None:
    front = await front_end(harness, allowed_models=["demo-embed"], rate_per_minute=3)
    alice, bob = await create_member(harness), await create_member(harness)
    response = await harness.client.post("/v1/chat/completions", json=CHAT, headers=as_front_end(front, alice.email))
    assert response.status_code == 403 and "this API key is limited to the models demo-embed" in response.text
    listed = await harness.client.get("/v1/models", headers=as_front_end(front, alice.email))
    assert {m["id"] for m in listed.json()["data"]} == {"demo-embed"}

    # The key's rate counts every person's requests together.
    embed = {"model": "demo-embed", "input": "hi"}
    statuses = [
        (await harness.client.post("/v1/embeddings", json=embed, headers=as_front_end(front, who.email))).status_code
        for who in (alice, bob, alice)
    ]
    assert statuses == [200, 200, 200]
    response = await harness.client.post("/v1/embeddings", json=embed, headers=as_front_end(front, bob.email))
    assert response.status_code == 429 and error_of(response)["param"] == "key_per_minute", response.text

    surfaces = await harness.client.patch(
        f"/admin/keys/{front.key_id}", json={"allowed_surfaces": ["chat"], "rate_per_minute": None}
    )
    assert surfaces.status_code == 200
    response = await harness.client.post("/v1/embeddings", json=embed, headers=as_front_end(front, bob.email))
    assert response.status_code == 403 and error_of(response)["code"] == "surface_not_allowed"


# --- the cache -----------------------------------------------------------------------------------------------


@contextmanager
def account_reads(harness: Harness) -> Iterator[list[str]]:
    """The statements that read accounts (users, keys, memberships) while the block runs."""
    seen: list[str] = []
    engine = harness.runtime.db.engine.sync_engine

    def watch(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if any(table in statement for table in ("user_account", "api_key", "group_member")):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", watch)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", watch)


async def test_a_warm_person_costs_no_read_and_a_change_is_seen_at_once(harness: Harness) -> None:
    front, alice = await front_end(harness), await create_member(harness)
    headers = as_front_end(front, alice.email)
    assert (await harness.client.post("/v1/chat/completions", json=CHAT, headers=headers)).status_code == 200
    with account_reads(harness) as reads:
        for _ in range(3):
            assert (await harness.client.post("/v1/chat/completions", json=CHAT, headers=headers)).status_code == 200
    assert reads == []

    assert (await harness.client.post(f"/admin/users/{alice.id}/disable")).status_code == 200
    response = await harness.client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert response.status_code == 403 and error_of(response)["code"] == "account_disabled"
    assert (await harness.client.post(f"/admin/users/{alice.id}/enable")).status_code == 200
    assert (await harness.client.post("/v1/chat/completions", json=CHAT, headers=headers)).status_code == 200

    # Joining a group is a change of hers too: its rules apply from the next request.
    group = await harness.client.post("/admin/groups", json={"name": "interns"})
    rule = {"group_id": group.json()["id"], "effect": "deny", "pattern": "demo"}
    assert (await harness.client.post("/admin/access/rules", json=rule)).status_code == 201
    assert (await harness.client.put(f"/admin/groups/{group.json()['id']}/members/{alice.id}")).status_code == 200
    response = await harness.client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert response.status_code == 403 and error_of(response)["code"] == "model_not_allowed"

    # The key no longer acting for users: naming her is refused at once.
    unmarked = await harness.client.patch(f"/admin/keys/{front.key_id}", json={"acts_for_users": False})
    assert unmarked.status_code == 200
    response = await harness.client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert response.status_code == 403 and error_of(response)["code"] == "acting_not_allowed"


# --- another replica -----------------------------------------------------------------------------------------


@pytest.mark.redis
async def test_replicas_create_one_account_and_see_a_disabled_person_at_once(
    database_url: str, tmp_path: Path, redis_url: str, redis_key_prefix: str
) -> None:
    settings = make_settings(
        database_url,
        tmp_path,
        redis_url=redis_url,
        redis_prefix=redis_key_prefix,
        rate_limit_per_minute=None,
        acts_for_users_create_domains="new.example",
    )
    async with running_app(settings) as first, running_app(settings) as second:
        front = await front_end(first)

        async def chat(replica: Harness) -> int:
            headers = as_front_end(front, "frank@new.example")
            return (await replica.client.post("/v1/chat/completions", json=CHAT, headers=headers)).status_code

        # First sight on both replicas at once: one account, one audit row.
        assert await asyncio.gather(*(chat(replica) for replica in (first, second) * 4)) == [200] * 8
        frank = (await first.client.get("/admin/users", params={"q": "frank@new.example"})).json()["items"]
        assert len(frank) == 1 and len(await audited(first, "user.created_on_first_sight")) == 1

        # Warm on the second replica, disabled through the first: refused there from the next request.
        assert (await first.client.post(f"/admin/users/{frank[0]['id']}/disable")).status_code == 200
        deadline = asyncio.get_running_loop().time() + 1.0
        while (status := await chat(second)) != 403:
            assert asyncio.get_running_loop().time() < deadline, f"still {status} a second after the change"
            await asyncio.sleep(0.02)
