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
