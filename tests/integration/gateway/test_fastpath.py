"""The gateway's hot routes answer the same through the direct dispatch (gateway/fastpath.py) as through
FastAPI's router: same status, body shape, headers and metrics, for successes and for every kind of refusal."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Harness
from tests.support.accounts import create_member

CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hello there"}]}
EMBED = {"model": "demo-embed", "input": "hello there"}


def _cases(key: str) -> list[tuple[str, str, dict[str, str], Any]]:
    """(name, path, headers, body) for successes and refusals on every hot route."""
    auth = {"authorization": f"Bearer {key}"}
    return [
        ("openai chat", "/v1/chat/completions", auth, CHAT),
        ("openai chat streamed", "/v1/chat/completions", auth, {**CHAT, "stream": True}),
        ("openai embeddings", "/v1/embeddings", auth, EMBED),
        ("ollama chat", "/api/chat", auth, {**CHAT, "stream": False}),
        ("ollama chat streamed", "/api/chat", auth, CHAT),
        ("ollama embed", "/api/embed", auth, EMBED),
        ("responses", "/v1/responses", auth, {"model": "demo", "input": "hello there"}),
        ("responses streamed", "/v1/responses", auth, {"model": "demo", "input": "hello there", "stream": True}),
        ("completions", "/v1/completions", auth, {"model": "demo", "prompt": "hello there"}),
        ("messages", "/v1/messages", auth, {**CHAT, "max_tokens": 20}),
        ("messages streamed", "/v1/messages", auth, {**CHAT, "max_tokens": 20, "stream": True}),
        ("messages, x-api-key", "/v1/messages", {"authorization": "", "x-api-key": key}, {**CHAT, "max_tokens": 20}),
        ("messages without max_tokens", "/v1/messages", auth, CHAT),
        (
            "messages, wrong key",
            "/v1/messages",
            {"authorization": "", "x-api-key": "gh_nope"},
            {**CHAT, "max_tokens": 20},
        ),
        ("generate", "/api/generate", auth, {"model": "demo", "prompt": "hello there", "stream": False}),
        ("generate streamed", "/api/generate", auth, {"model": "demo", "prompt": "hello there"}),
        ("no key", "/v1/chat/completions", {"authorization": ""}, CHAT),
        ("wrong key", "/v1/chat/completions", {"authorization": "Bearer gh_nope"}, CHAT),
        ("malformed header", "/api/chat", {"authorization": "Basic abc"}, CHAT),
        ("unknown model", "/v1/chat/completions", auth, {**CHAT, "model": "no-such-model"}),
        ("unknown model, ollama shape", "/api/chat", auth, {**CHAT, "model": "no-such-model"}),
        ("bad field", "/v1/chat/completions", auth, {**CHAT, "temperature": "hot"}),
        ("no messages", "/api/chat", auth, {"model": "demo"}),
        ("not json", "/v1/embeddings", {**auth, "content-type": "application/json"}, b"{not json"),
    ]


def _comparable(response: httpx.Response) -> tuple[int, str, Any]:
    """What a caller sees, minus what differs on every request (ids, times, the generated text)."""
    kind = response.headers.get("content-type", "").split(";")[0]
    if response.status_code == 200:
        return response.status_code, kind, None  # the demo's text and ids vary; checked below
    return response.status_code, kind, response.json()


async def _send(harness: Harness, path: str, headers: dict[str, str], body: Any) -> httpx.Response:
    if isinstance(body, bytes):
        return await harness.client.post(path, content=body, headers=headers)
    return await harness.client.post(path, json=body, headers=headers)


async def test_hot_routes_answer_alike_on_both_paths(harness: Harness) -> None:
    member = await create_member(harness)
    fast_path = harness.app.state.fast_path
    for name, path, headers, body in _cases(member.key):
        fast_path.enabled = True
        fast = await _send(harness, path, headers, body)
        fast_path.enabled = False
        try:
            routed = await _send(harness, path, headers, body)
        finally:
            fast_path.enabled = True
        assert _comparable(fast) == _comparable(routed), name
        assert fast.headers.get("x-request-id"), name
        if fast.status_code == 200:
            assert fast.text and routed.text, name
            if "stream" in name:
                assert ("[DONE]" in fast.text) == ("[DONE]" in routed.text), name
        for header in ("retry-after", "www-authenticate"):
            assert fast.headers.get(header) == routed.headers.get(header), (name, header)


async def test_hot_routes_keep_their_route_label_and_usage(harness: Harness) -> None:
    member = await create_member(harness)
    headers = harness.as_key(member.key)
    for _ in range(2):
        assert (await harness.client.post("/v1/chat/completions", json=CHAT, headers=headers)).status_code == 200
    metrics = (await harness.client.get("/metrics")).text
    line = next(
        (
            line
            for line in metrics.splitlines()
            if line.startswith("gatehouse_http_request_duration_seconds_count")
            and 'route="/v1/chat/completions"' in line
            and 'status="200"' in line
        ),
        None,
    )
    assert line is not None and float(line.rsplit(" ", 1)[1]) >= 2, line
    usage = (await harness.client.get(f"/admin/users/{member.id}")).json()
    assert usage["messages_today"] == 2
    assert usage["tokens_today"] > 0


async def test_a_failure_inside_the_handler_is_a_500_with_the_request_id(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    member = await create_member(harness)

    async def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("gatehouse.gateway.relay.chat", broken)
    response = await harness.client.post("/v1/chat/completions", json=CHAT, headers=harness.as_key(member.key))
    assert response.status_code == 500
    request_id = response.headers["x-request-id"]
    assert request_id in response.json()["error"]["message"]
