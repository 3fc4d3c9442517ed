"""Malformed requests are 400s naming the field; aliases show their own name; chains fail over."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Harness, make_settings, running_app
from tests.e2e.conftest import UPSTREAM_KEY
from tests.support.fake_upstream import FakeUpstream
from tests.support.server import free_port

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port whose connects hang: a listener that never accepts, with its backlog already full."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):
        client = socket.socket()
        client.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            client.connect(("127.0.0.1", port))
        fillers.append(client)
    yield port
    for client in fillers:
        client.close()
    server.close()


@pytest.fixture
async def chains(
    database_url: str, tmp_path: Path, fake_upstream: FakeUpstream, blackhole: int
) -> AsyncIterator[Harness]:
    """An app whose aliases are failover chains over a dead, a hanging and a live upstream."""
    live = {"base_url": fake_upstream.url, "api_key": UPSTREAM_KEY, "discover": False}
    config = {
        "upstreams": [
            {"name": "dead", "kind": "openai", "base_url": f"http://127.0.0.1:{free_port()}", "discover": False},
            {"name": "hole", "kind": "openai", "base_url": f"http://127.0.0.1:{blackhole}", "discover": False},
            {"name": "live", "kind": "openai", **live},
            {"name": "live-ollama", "kind": "ollama", **live},
        ],
        "models": {
            "via-dead": [{"upstream": "dead", "model": "fake-chat"}, {"upstream": "live", "model": "fake-chat"}],
            "via-hole": [{"upstream": "hole", "model": "fake-chat"}, {"upstream": "live", "model": "fake-chat"}],
            "via-500": [{"upstream": "live", "model": "fake-error"}, {"upstream": "live", "model": "fake-chat"}],
            "via-404": [{"upstream": "live", "model": "not-pulled"}, {"upstream": "live-ollama", "model": "fake-chat"}],
            "o-alias": {"upstream": "live", "model": "fake-chat"},
            "l-alias": {"upstream": "live-ollama", "model": "fake-chat"},
            "only-dead": {"upstream": "dead", "model": "fake-chat"},
        },
    }
    path = tmp_path / "chains.yaml"
    path.write_text(yaml.safe_dump(config))
    async with running_app(
        make_settings(database_url, tmp_path, gatehouse_config=path, upstream_connect_timeout=0.3)
    ) as harness:
        yield harness


MALFORMED: list[tuple[str, dict[str, Any], str]] = [
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]},
        "messages.0.content.0.text",
    ),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    ("/v1/chat/completions", {"messages": MESSAGES, "stream": True, "stream_options": "x"}, "stream_options"),
    ("/v1/chat/completions", {"messages": MESSAGES, "stream": "no"}, "stream"),
    ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": "ten"}, "max_tokens"),
    (
        "/v1/chat/completions",
        {"messages": MESSAGES, "response_format": {"type": "json_schema", "json_schema": "x"}},
        "response_format.json_schema",
    ),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "assistant", "content": "", "tool_calls": "x"}]},
        "messages.0.tool_calls",
    ),
    ("/v1/chat/completions", {"messages": [{"role": 3, "content": "x"}]}, "messages.0"),
    ("/v1/chat/completions", {"messages": []}, "messages"),
    ("/api/chat", {"messages": MESSAGES, "options": [1]}, "options"),
    ("/api/chat", {"messages": [{"role": "user", "content": "x", "images": [1]}]}, "messages.0.images"),
    ("/v1/embeddings", {"input": 5}, "input"),
    ("/v1/embeddings", {"input": None}, "input"),
    ("/v1/embeddings", {"input": [1, "a"]}, "input"),
    ("/api/embed", {}, "input"),
]


@pytest.mark.parametrize(("path", "body", "param"), MALFORMED, ids=[f"{p}:{m}" for p, _, m in MALFORMED])
async def test_malformed_requests_name_the_field(harness: Harness, path: str, body: dict[str, Any], param: str) -> None:
    response = await harness.client.post(path, json={"model": "demo", **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    if path.startswith("/api/"):
        assert isinstance(error, str)
    else:
        assert error["param"] == param, error


async def test_alias_names_are_shown_to_clients(chains: Harness) -> None:
    client = chains.client
    whole = await client.post("/v1/chat/completions", json={"model": "o-alias", "messages": MESSAGES})
    assert whole.json()["model"] == "o-alias"
    streamed = await client.post(
        "/v1/chat/completions", json={"model": "o-alias", "messages": MESSAGES, "stream": True}
    )
    assert '"model":"fake-chat"' not in streamed.text and '"model":"o-alias"' in streamed.text
    native = await client.post("/api/chat", json={"model": "l-alias", "messages": MESSAGES, "stream": False})
    assert native.json()["model"] == "l-alias"
    lines = (await client.post("/api/chat", json={"model": "l-alias", "messages": MESSAGES})).text.splitlines()
    assert all('"model":"l-alias"' in line for line in lines)


@pytest.mark.parametrize("model", ["via-dead", "via-hole", "via-500", "via-404"])
async def test_chains_fail_over_before_any_byte(chains: Harness, model: str) -> None:
    for stream in (False, True):
        response = await chains.client.post(
            "/v1/chat/completions", json={"model": model, "messages": MESSAGES, "stream": stream}
        )
        assert response.status_code == 200, response.text


async def test_unreachable_upstream_details_stay_in_the_log(chains: Harness) -> None:
    # The start-up probe found it down: refused before trying, saying so without its address.
    response = await chains.client.post("/v1/chat/completions", json={"model": "only-dead", "messages": MESSAGES})
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "no_usable_upstream"
    assert "dead is down" in error["message"] and "127.0.0.1" not in error["message"]
    # Died since its last good probe: tried, and the connection error stays in the log.
    dead = chains.runtime.upstreams.get("dead")
    assert dead is not None
    dead.health.probe_ok(1.0)
    chains.runtime.upstreams.request_ok(dead)
    chains.runtime.upstreams._usable.clear()
    response = await chains.client.post("/v1/chat/completions", json={"model": "only-dead", "messages": MESSAGES})
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_unreachable"
    assert "127.0.0.1" not in error["message"]
