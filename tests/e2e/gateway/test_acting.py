"""A chat front-end's key acting for its users, through the official openai, anthropic and ollama packages against
a running server (SQLite and PostgreSQL): each person named by `user=`, `metadata={"user_id": ...}` or the
X-Gatehouse-User header gets their own access rules and quota, the request log names the person and the front-end's
key, a person from an allowed domain is created on first sight, and a normal key naming someone is refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import ollama
import openai
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from gatehouse.gateway.models import RequestLog
from tests.conftest import fresh_database
from tests.e2e.conftest import write_config
from tests.support.fake_upstream import FakeUpstream, reply_text
from tests.support.server import GatehouseServer, base_env, run_gatehouse

HEADER = "X-Gatehouse-User"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def server(backend: str, fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The e2e server, creating the people of first.example on first sight."""
    workdir = tmp_path_factory.mktemp(f"gatehouse-acting-{backend}")
    with fresh_database(backend, workdir) as database_url:
        env = base_env(
            database_url,
            workdir / "data",
            GATEHOUSE_CONFIG=str(write_config(workdir / "gatehouse.yaml", fake_upstream.url)),
            REQUEST_LOG_FLUSH_SECONDS="0.1",
            RATE_LIMIT_PER_MINUTE="",
            ACTS_FOR_USERS_CREATE_DOMAINS="first.example",
        )
        with run_gatehouse(env, workdir=workdir) as running:
            yield running


@dataclass
class Account:
    id: int
    email: str
    key: str
    key_id: int


def account(server: GatehouseServer, name: str, **key_settings: Any) -> Account:
    """A user with one key (with these settings), made through the admin API."""
    with server.client() as admin:
        email = f"{name}-{time.time_ns()}@example.com"
        user = admin.post("/admin/users", json={"email": email})
        assert user.status_code == 201, user.text
        key = admin.post(f"/admin/users/{user.json()['id']}/keys", json={"name": name, **key_settings})
        assert key.status_code == 201, key.text
        return Account(user.json()["id"], email, key.json()["key"], key.json()["id"])


def openai_client(server: GatehouseServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def anthropic_client(server: GatehouseServer, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0)


async def _rows(server: GatehouseServer, key_id: int) -> list[Any]:
    engine = create_async_engine(server.env["DATABASE_URL"])
    try:
        async with engine.connect() as conn:
            query = select(RequestLog.user_id, RequestLog.surface, RequestLog.status_code)
            result = await conn.execute(query.where(RequestLog.key_id == key_id).order_by(RequestLog.id))
            return list(result.all())
    finally:
        await engine.dispose()


def rows_of(server: GatehouseServer, key_id: int, count: int) -> list[tuple[int, str, int]]:
    """The request-log rows of a key (they are written in batches): (user_id, surface, status)."""
    deadline = time.monotonic() + 5
    while True:
        rows = [tuple(row) for row in asyncio.run(_rows(server, key_id))]
        if len(rows) >= count or time.monotonic() > deadline:
            return rows  # type: ignore[return-value]
        time.sleep(0.1)


def test_a_front_end_key_acts_for_two_people(server: GatehouseServer) -> None:
    front = account(server, "webui", acts_for_users=True)
    alice, bob = account(server, "alice"), account(server, "bob")
    with server.client() as admin:
        rule = admin.post("/admin/access/rules", json={"user_id": alice.id, "effect": "deny", "pattern": "an-*"})
        assert rule.status_code == 201, rule.text
        assert admin.patch(f"/admin/users/{bob.id}", json={"tokens_per_day": 1}).status_code == 200

    chat = openai_client(server, front.key)
    # Alice, named by OpenAI's `user` field, then by the header: her answer, on her account.
    answer = chat.chat.completions.create(model="oa-chat", messages=HI, user=alice.email)
    assert answer.choices[0].message.content == reply_text(HI)
    stream = chat.chat.completions.create(
        model="oa-chat",
        messages=HI,
        stream=True,
        extra_headers={HEADER: alice.email},
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == reply_text(HI)
    # Her rule denies the an-* models, in Anthropic's protocol too.
    messages = anthropic_client(server, front.key)
    with pytest.raises(anthropic.PermissionDeniedError) as denied:
        messages.messages.create(model="an-chat", max_tokens=16, messages=HI, metadata={"user_id": alice.email})
    assert "may not use the model `an-chat`" in str(denied.value)
    # Bob may use it, but his one-token day is spent at once.
    with pytest.raises(anthropic.RateLimitError):
        messages.messages.create(model="an-chat", max_tokens=16, messages=HI, metadata={"user_id": bob.email})
    with pytest.raises(openai.RateLimitError) as limited:
        chat.embeddings.create(model="oa-embed", input="hi", extra_headers={HEADER: bob.email})
    assert limited.value.code == "quota_exceeded"
    # The Ollama client names its person by the header only.
    local = ollama.Client(host=server.url, headers={"authorization": f"Bearer {front.key}", HEADER: alice.email})
    assert local.chat(model="ol-chat", messages=HI).message.content == reply_text(HI)

    rows = rows_of(server, front.key_id, 5)
    assert rows == [
        (alice.id, "chat", 200),
        (alice.id, "chat", 200),
        (bob.id, "messages", 429),
        (bob.id, "embeddings", 429),
        (alice.id, "ollama_chat", 200),
    ]

    # Someone new from first.example: created on first sight, and the request is theirs.
    newcomer = f"new-{time.time_ns()}@First.Example"
    answer = chat.chat.completions.create(model="oa-chat", messages=HI, extra_headers={HEADER: newcomer})
    assert answer.choices[0].message.content == reply_text(HI)
    with server.client() as admin:
        found = admin.get("/admin/users", params={"q": newcomer.lower()}).json()["items"]
    assert [u["email"] for u in found] == [newcomer.lower()]
    assert rows_of(server, front.key_id, 6)[-1] == (found[0]["id"], "chat", 200)
    with pytest.raises(openai.PermissionDeniedError) as unknown:
        chat.chat.completions.create(model="oa-chat", messages=HI, user="someone@elsewhere.example")
    assert unknown.value.code == "acting_user_unknown"


def test_a_normal_key_naming_someone_is_refused(server: GatehouseServer) -> None:
    member, alice = account(server, "member"), account(server, "alice")
    with pytest.raises(openai.PermissionDeniedError) as refused:
        openai_client(server, member.key).chat.completions.create(
            model="oa-chat",
            messages=HI,
            extra_headers={HEADER: alice.email},
        )
    assert refused.value.code == "acting_not_allowed"
    with pytest.raises(anthropic.PermissionDeniedError) as refused_too:
        anthropic_client(server, member.key).messages.create(
            model="an-chat",
            max_tokens=16,
            messages=HI,
            extra_headers={HEADER: alice.email},
        )
    assert "does not act for users" in str(refused_too.value)
    # Its own `user` and `metadata.user_id` are its business: served as itself.
    answer = openai_client(server, member.key).chat.completions.create(model="oa-chat", messages=HI, user=alice.email)
    assert answer.choices[0].message.content == reply_text(HI)
    anthropic_client(server, member.key).messages.create(
        model="an-chat",
        max_tokens=16,
        messages=HI,
        metadata={"user_id": alice.email},
    )
    assert rows_of(server, member.key_id, 2) == [(member.id, "chat", 200), (member.id, "messages", 200)]
