"""Real traffic for the demo: requests through the gateway to the built-in demo model, as several people with their
own keys, over the OpenAI (chat, streamed chat, Responses, embeddings), Anthropic and Ollama surfaces.

It runs in-process: the app with its whole lifespan (middleware, authentication, access rules, quotas, routing,
relay, settlement, the request log flushed at the end) on an httpx ASGI transport. So a fresh database gets its
traffic without a server running, the traffic is the gateway's own path (not rows written to look like it), and the
demo upstream is switched on for this app alone (DEMO_UPSTREAM), whatever the servers serve.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx

from gatehouse.app import create_app
from gatehouse.settings import Settings
from gatehouse.upstreams.providers import DEMO_EMBED_MODEL, DEMO_MODEL

CONCURRENCY = 16
TIMEOUT = httpx.Timeout(connect=5, read=60, write=10, pool=60)
QUESTIONS = (
    "What does Gatehouse do?",
    "Summarise our on-call rota in one line.",
    "Write a haiku about quotas.",
    "Which models may I use?",
    "Explain rate limits to a new colleague.",
    "Translate 'good morning' into French.",
)


@dataclass(frozen=True)
class Call:
    """One request: who sends it (their key), to which route, with which body, and how the key is sent."""

    key: str
    path: str
    body: dict[str, Any]
    anthropic: bool = False


def plan(keys: list[str], project_key: str) -> list[Call]:
    """Every surface for every person, with questions that differ so token counts differ."""
    calls: list[Call] = []
    for n, key in enumerate(keys):
        ask = [{"role": "user", "content": QUESTIONS[(n + i) % len(QUESTIONS)]} for i in range(1 + n % 3)]
        calls += [
            Call(key, "/v1/chat/completions", {"model": DEMO_MODEL, "messages": ask, "max_tokens": 24}),
            Call(key, "/v1/chat/completions", {"model": DEMO_MODEL, "messages": ask[:1], "max_tokens": 12}),
            Call(
                key,
                "/v1/chat/completions",
                {"model": DEMO_MODEL, "messages": ask, "stream": True, "stream_options": {"include_usage": True}},
            ),
            Call(key, "/v1/responses", {"model": DEMO_MODEL, "input": ask[0]["content"], "max_output_tokens": 32}),
            Call(key, "/v1/messages", {"model": DEMO_MODEL, "messages": ask, "max_tokens": 24}, anthropic=True),
            Call(key, "/api/chat", {"model": DEMO_MODEL, "messages": ask, "stream": False}),
            Call(key, "/api/generate", {"model": DEMO_MODEL, "prompt": ask[-1]["content"], "stream": False}),
            # Refused for the support group (an access rule): the request log shows refusals too.
            Call(key, "/v1/embeddings", {"model": DEMO_EMBED_MODEL, "input": [q["content"] for q in ask]}),
        ]
    calls.append(
        Call(
            project_key,
            "/v1/chat/completions",
            {"model": DEMO_MODEL, "messages": [{"role": "user", "content": QUESTIONS[0]}]},
        )
    )
    return calls


async def send(client: httpx.AsyncClient, calls: list[Call]) -> Counter[int]:
    """Send the calls, CONCURRENCY at a time; how many answered with each status."""
    statuses: Counter[int] = Counter()
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(call: Call) -> None:
        headers = (
            {"x-api-key": call.key, "anthropic-version": "2023-06-01"}
            if call.anthropic
            else {"authorization": f"Bearer {call.key}"}
        )
        async with gate:
            response = await client.post(call.path, json=call.body, headers=headers)
            statuses[response.status_code] += 1

    await asyncio.gather(*(one(call) for call in calls))
    return statuses


async def run_in_process(settings: Settings, calls: list[Call]) -> Counter[int]:
    """Send the calls through an in-process app (see the module docstring); its lifespan ends with the request log
    flushed, so every row is stored when this returns."""
    # Its access lines would bury the command's own output: warnings and errors only.
    app = create_app(settings.model_copy(update={"demo_upstream": True, "log_level": "WARNING"}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gatehouse.demo", timeout=TIMEOUT) as client:
            return await send(client, calls)
