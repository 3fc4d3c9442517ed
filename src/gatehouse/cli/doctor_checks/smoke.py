"""`--smoke`: a real chat completion and a real embedding through a running gateway, timed, with their tokens."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import orjson

from gatehouse.cli.doctor_checks.report import Check, failed, passed
from gatehouse.cli.doctor_checks.upstreams import is_embedding_model

SMOKE_TIMEOUT = 30.0  # a real model's first answer (cold load) can take a while; still bounded
PROMPT = "Reply with the single word OK."


async def smoke_checks(
    url: str, key: str, *, chat_model: str | None = None, embed_model: str | None = None, wait: float = SMOKE_TIMEOUT
) -> list[Check]:
    """GET /v1/models (unless both models are given), then one chat completion and one embedding."""
    base = url.rstrip("/")
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    client_timeout = aiohttp.ClientTimeout(total=wait, sock_connect=min(wait, 5.0))
    async with aiohttp.ClientSession(headers=headers, timeout=client_timeout) as session:
        if chat_model is None or embed_model is None:
            status, data, took = await _call(session, "GET", f"{base}/v1/models")
            if status != 200:
                return [failed("smoke.models", f"GET {base}/v1/models: {_error(status, data)}", _fix(status), took)]
            names = [str(m.get("id")) for m in data.get("data", []) if isinstance(m, dict)]
            chat_model = chat_model or next((n for n in names if not is_embedding_model(n)), None)
            embed_model = embed_model or next((n for n in names if is_embedding_model(n)), None)
        return [
            await _chat(session, base, chat_model),
            await _embedding(session, base, embed_model),
        ]


async def _call(
    session: aiohttp.ClientSession, method: str, url: str, body: Any = None
) -> tuple[int, dict[str, Any], float]:
    """(status, JSON body or {}, seconds); status 0 when no answer came (the reason in the body's error)."""
    started = time.perf_counter()
    try:
        async with session.request(method, url, data=None if body is None else orjson.dumps(body)) as response:
            raw = await response.read()
            status = response.status
    except TimeoutError:
        return 0, {"error": {"message": "no answer in time"}}, time.perf_counter() - started
    except (aiohttp.ClientError, OSError) as exc:
        return 0, {"error": {"message": f"{type(exc).__name__}: {exc}"}}, time.perf_counter() - started
    took = time.perf_counter() - started
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = {}
    return status, data if isinstance(data, dict) else {}, took


def _error(status: int, data: dict[str, Any]) -> str:
    error = data.get("error")
    message = error.get("message") if isinstance(error, dict) else error
    return f"{status or 'no answer'}: {message or 'no error message'}"


def _fix(status: int) -> str:
    if status in (401, 403):
        return "pass a working Gatehouse key with --key (or GATEHOUSE_API_KEY)"
    if status == 0:
        return "check --url (or GATEHOUSE_URL) and that Gatehouse serves there"
    return "read the error above; `gatehouse doctor` without --smoke checks the upstreams"


async def _chat(session: aiohttp.ClientSession, base: str, model: str | None) -> Check:
    if model is None:
        return failed("smoke.chat", "GET /v1/models lists no chat model", "serve a chat model, or pass --chat-model")
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 16, "stream": False}
    status, data, took = await _call(session, "POST", f"{base}/v1/chat/completions", body)
    if status != 200:
        return failed("smoke.chat", f"chat with {model}: {_error(status, data)}", _fix(status), took)
    usage = data.get("usage") or {}
    return passed(
        "smoke.chat",
        f"chat with {model}: {took * 1000:.0f} ms, {usage.get('prompt_tokens', '?')} prompt + "
        f"{usage.get('completion_tokens', '?')} completion tokens",
        took,
    )


async def _embedding(session: aiohttp.ClientSession, base: str, model: str | None) -> Check:
    if model is None:
        return failed(
            "smoke.embeddings", "GET /v1/models lists no embeddings model", "serve one, or pass --embed-model"
        )
    status, data, took = await _call(session, "POST", f"{base}/v1/embeddings", {"model": model, "input": PROMPT})
    if status != 200:
        return failed("smoke.embeddings", f"embedding with {model}: {_error(status, data)}", _fix(status), took)
    vectors = data.get("data") or []
    dimensions = len(vectors[0].get("embedding", [])) if vectors and isinstance(vectors[0], dict) else 0
    tokens = (data.get("usage") or {}).get("prompt_tokens", "?")
    return passed(
        "smoke.embeddings",
        f"embedding with {model}: {took * 1000:.0f} ms, {tokens} tokens, {dimensions} dimensions",
        took,
    )
