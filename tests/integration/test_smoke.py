"""The app starts on both databases and answers health and a demo chat."""

from __future__ import annotations

from tests.conftest import Harness


async def test_health_and_demo_chat(harness: Harness) -> None:
    assert (await harness.client.get("/healthz")).json() == {"status": "ok"}
    ready = await harness.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    reply = await harness.client.post(
        "/v1/chat/completions", json={"model": "demo", "messages": [{"role": "user", "content": "hello"}]}
    )
    assert reply.status_code == 200, reply.text
    assert "demo" in reply.json()["choices"][0]["message"]["content"]


async def test_the_demo_model_answers_on_every_surface(harness: Harness) -> None:
    client = harness.client
    hello = [{"role": "user", "content": "hello"}]
    answers = {
        "responses": await client.post("/v1/responses", json={"model": "demo", "input": "hello"}),
        "messages": await client.post("/v1/messages", json={"model": "demo", "max_tokens": 64, "messages": hello}),
        "completions": await client.post("/v1/completions", json={"model": "demo", "prompt": "hello"}),
        "generate": await client.post("/api/generate", json={"model": "demo", "prompt": "hello", "stream": False}),
        "raw generate": await client.post(
            "/api/generate", json={"model": "demo", "prompt": "hello", "raw": True, "stream": False}
        ),
        "ollama chat": await client.post("/api/chat", json={"model": "demo", "messages": hello, "stream": False}),
    }
    for surface, answer in answers.items():
        assert answer.status_code == 200, (surface, answer.text)
        assert "demo" in answer.text.lower(), (surface, answer.text)
    assert answers["responses"].json()["output"][0]["content"][0]["type"] == "output_text"
    assert answers["messages"].json()["content"][0]["type"] == "text"
    assert answers["completions"].json()["choices"][0]["finish_reason"] == "length"  # OpenAI's default 16 tokens
    streamed = await client.post(
        "/v1/messages", json={"model": "demo", "max_tokens": 64, "messages": hello, "stream": True}
    )
    assert streamed.status_code == 200 and "event: message_stop" in streamed.text
