"""Bad input on every client surface and the admin API, against a real server on SQLite and PostgreSQL: bodies
over MAX_REQUEST_BYTES (with and without Content-Length), JSON nested 10,000 levels deep, invalid UTF-8, NUL
characters, huge message arrays, huge headers and wrong content types. Each is a 4xx in the surface's own error
shape whose message names the problem (never a 500 or a hang), and nothing is counted or stored for it; NUL
characters are passed through, and stored (PostgreSQL's text cannot hold them) without a 500."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from gatehouse.gateway.models import RequestLog
from tests.conftest import fresh_database
from tests.e2e.conftest import write_config
from tests.support.fake_upstream import FakeUpstream
from tests.support.server import GatehouseServer, base_env, run_gatehouse

LIMIT = 4_000_000  # MAX_REQUEST_BYTES of this module's server: 100,000 short messages fit under it
HI = [{"role": "user", "content": "hi"}]
ADMIN = "/admin/users"

# (path, error shape, a valid body, the body's list that a huge array goes into)
SURFACES: list[tuple[str, str, dict[str, Any], str]] = [
    ("/v1/chat/completions", "openai", {"model": "oa-chat", "messages": HI}, "messages"),
    ("/v1/completions", "openai", {"model": "oa-chat", "prompt": "hi", "max_tokens": 8}, "prompt"),
    ("/v1/responses", "openai", {"model": "oa-chat", "input": "hi", "store": False}, "input"),
    ("/v1/embeddings", "openai", {"model": "oa-embed", "input": "hi"}, "input"),
    ("/v1/messages", "anthropic", {"model": "an-chat", "max_tokens": 8, "messages": HI}, "messages"),
    ("/v1/messages/count_tokens", "anthropic", {"model": "an-chat", "messages": HI}, "messages"),
    ("/api/chat", "ollama", {"model": "ol-chat", "messages": HI, "stream": False}, "messages"),
    ("/api/generate", "ollama", {"model": "ol-chat", "prompt": "hi", "stream": False}, "prompt"),
    ("/api/embed", "ollama", {"model": "ol-embed", "input": "hi"}, "input"),
    ("/api/embeddings", "ollama", {"model": "ol-embed", "prompt": "hi"}, "prompt"),
    ("/api/show", "ollama", {"model": "ol-chat"}, "model"),
    (ADMIN, "openai", {"email": "someone@example.com"}, "email"),
]
IDS = [path for path, *_ in SURFACES]
# The surfaces whose requests are counted (a message each) and logged.
GENERATION = {"/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages", "/api/chat", "/api/generate"}


@pytest.fixture(scope="module")
def server(backend: str, fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A server whose MAX_REQUEST_BYTES is LIMIT, without the per-minute limit (this module sends hundreds)."""
    workdir = tmp_path_factory.mktemp(f"bad-input-{backend}")
    with fresh_database(backend, workdir) as database_url:
        config = write_config(workdir / "gatehouse.yaml", fake_upstream.url)
        env = base_env(
            database_url,
            workdir / "data",
            GATEHOUSE_CONFIG=str(config),
            MAX_REQUEST_BYTES=str(LIMIT),
            REQUEST_LOG_FLUSH_SECONDS="0.1",
        )
        with run_gatehouse(env, workdir=workdir) as running:
            with running.client() as admin:
                limits = admin.put("/admin/rate-limits", json={"limits": {"user_per_minute": None}})
                assert limits.status_code == 200, limits.text
            yield running


def new_user(server: GatehouseServer) -> tuple[int, httpx.Client]:
    """A new user's id and a client with their key."""
    with server.client() as admin:
        user = admin.post(ADMIN, json={"email": f"bad-{time.time_ns()}@example.com"}).json()
        key = admin.post(f"/admin/users/{user['id']}/keys", json={"name": "bad input"}).json()
    return user["id"], httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {key['key']}"}, timeout=60)


def message_of(response: httpx.Response, style: str, status: int) -> str:
    """The error's message, once the answer is `status` in the surface's error shape."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    if style == "ollama":
        assert isinstance(body["error"], str)
        return str(body["error"])
    if style == "anthropic":
        assert body["type"] == "error" and isinstance(body["error"]["type"], str), body
        return str(body["error"]["message"])
    assert {"type", "code", "message"} <= set(body["error"]), body
    return str(body["error"]["message"])


def post(
    client: httpx.Client, path: str, content: Any, content_type: str | None = "application/json"
) -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    return client.post(path, content=content, headers=headers)


# --- refused: each a 4xx naming the problem ------------------------------------------------------


def _refusals(body: dict[str, Any], array: str) -> list[tuple[str, Any, str | None, int, str]]:
    """(what, content, content type, status, a word the message must hold) for one surface."""
    valid = json.dumps(body).encode()
    deep = b"[" * 10_000 + b"]" * 10_000
    many = json.dumps({**body, array: [HI[0]] * 100_000}).encode()
    return [
        ("over the limit", b" " * (LIMIT + 1), "application/json", 413, "MAX_REQUEST_BYTES"),
        ("over the limit, chunked", iter([b" " * 65536] * (LIMIT // 65536 + 1)), "application/json", 413, "MAX_"),
        ("nested 10,000 deep", deep, "application/json", 400, "levels deep"),
        ("invalid UTF-8", valid.replace(b'": "', b'": "\xff', 1), None, 400, "UTF-8"),
        ("text/plain", valid, "text/plain", 415, "application/json"),
        ("multipart", valid, "multipart/form-data; boundary=x", 415, "application/json"),
        ("a form", valid, "application/x-www-form-urlencoded", 415, "application/json"),
        ("100,000 items", many, "application/json", 400, array),
    ]


@pytest.mark.parametrize(("path", "style", "body", "array"), SURFACES, ids=IDS)
def test_bad_bodies_are_refused_naming_the_problem_and_counted_nowhere(
    server: GatehouseServer, path: str, style: str, body: dict[str, Any], array: str
) -> None:
    user_id, client = new_user(server)
    with client:
        for what, content, content_type, status, word in _refusals(body, array):
            if what == "100,000 items" and array in ("model", "prompt") and path != "/v1/completions":
                continue  # no list to grow there
            if what == "100,000 items" and path == ADMIN:
                continue
            message = message_of(post(client, path, content, content_type), style, status)
            assert word.lower() in message.lower(), (what, message)
        # Refused before anything reached an upstream: no message counted, no request logged.
        usage = client.get("/me/usage").json()
        assert (usage["messages"], usage["tokens"]) == (0, 0), usage
    assert logged(server, user_id) == 0


@pytest.mark.parametrize(("path", "style", "body", "array"), SURFACES, ids=IDS)
def test_huge_headers_are_refused_in_the_surface_shape(
    server: GatehouseServer, path: str, style: str, body: dict[str, Any], array: str
) -> None:
    with server.client() as client:
        # One header of 100 KB (read at once), and many headers over a megabyte (read over several reads).
        big = client.post(path, json=body, headers={"x-big": "a" * 100_000})
        assert "64 KiB" in message_of(big, style, 431)
        many = {f"x-h{i}": "a" * 1000 for i in range(1500)}
        assert "headers" in message_of(client.post(path, json=body, headers=many), style, 431)
        assert client.post(path, json=body).status_code < 500  # the server goes on answering


def test_a_never_ending_head_is_cut_off(server: GatehouseServer) -> None:
    """A client that sends headers forever gets a 431 and a closed connection, not a server reading on."""
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")
        answer = b""
        try:
            for i in range(10_000):  # up to 10 MB, if nothing stopped it
                sock.sendall(b"x-h%d: %s\r\n" % (i, b"a" * 1000))
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]


# --- accepted: a missing content type, NUL characters ---------------------------------------------


@pytest.mark.parametrize(("path", "style", "body", "array"), SURFACES, ids=IDS)
def test_json_without_a_content_type_is_accepted(
    server: GatehouseServer, path: str, style: str, body: dict[str, Any], array: str
) -> None:
    """What the providers' APIs do, and what `curl --data-binary` without -H sends."""
    with server.client() as client:
        for content_type in (None, "application/json; charset=utf-8"):
            if path == ADMIN:
                body = {"email": f"plain-{time.time_ns()}@example.com"}
            response = post(client, path, json.dumps(body).encode(), content_type)
            assert response.status_code in (200, 201), response.text


def with_nul(body: dict[str, Any], array: str) -> dict[str, Any]:
    """`body` with NUL characters in its texts."""
    text = "a\u0000b"
    if array == "messages":
        return {**body, "messages": [{"role": "user", "content": text}]}
    if array == "model":
        return {**body, "model": body["model"] + "\u0000"}
    return {**body, array: text}


@pytest.mark.parametrize(("path", "style", "body", "array"), SURFACES, ids=IDS)
def test_nul_characters_pass_through_or_are_refused_naming_them(
    server: GatehouseServer, path: str, style: str, body: dict[str, Any], array: str
) -> None:
    user_id, client = new_user(server)
    with client, server.client() as admin:
        response = (admin if path == ADMIN else client).post(path, json=with_nul(body, array))
        if path == ADMIN:
            assert "email" in message_of(response, style, 422)
        elif path == "/api/show":
            assert "model" in message_of(response, style, 404)
        else:
            assert response.status_code == 200, response.text
        usage = client.get("/me/usage").json()
    counted = 1 if path in GENERATION else 0
    assert usage["messages"] == counted, usage
    if path in GENERATION:
        assert wait_logged(server, user_id, counted) == counted


def test_nul_characters_in_a_stored_response(server: GatehouseServer) -> None:
    """Stored as sent, and read back the same (PostgreSQL's text and JSONB cannot hold NUL as such)."""
    with server.client() as client:
        created = client.post("/v1/responses", json={"model": "oa-chat", "input": "one\u0000two"})
        assert created.status_code == 200, created.text
        stored = client.get(f"/v1/responses/{created.json()['id']}/input_items")
        assert stored.status_code == 200, stored.text
        assert stored.json()["data"][0]["content"][0]["text"] == "one\u0000two"
        follow = client.post(
            "/v1/responses",
            json={"model": "oa-chat", "input": "and\u0000on", "previous_response_id": created.json()["id"]},
        )
        assert follow.status_code == 200, follow.text


# --- the request log ------------------------------------------------------------------------------


async def _count(url: str, user_id: int) -> int:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(
                select(func.count()).select_from(RequestLog).where(RequestLog.user_id == user_id)
            )
            return int(result.scalar_one())
    finally:
        await engine.dispose()


def logged(server: GatehouseServer, user_id: int) -> int:
    """The user's rows in the request log now (rows are written in batches: see wait_logged)."""
    return asyncio.run(_count(server.env["DATABASE_URL"], user_id))


def wait_logged(server: GatehouseServer, user_id: int, expected: int, timeout: float = 5.0) -> int:
    """The user's request-log rows, once there are `expected` of them (or the timeout)."""
    deadline = time.monotonic() + timeout
    while (count := logged(server, user_id)) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return count
