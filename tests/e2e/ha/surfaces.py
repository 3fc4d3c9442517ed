"""Streams on each client surface, read raw with httpx so that a stream's last event (an answer's end, or an error in
the surface's own shape) can be checked exactly; and what the database recorded, read directly."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any

import anyio
import asyncpg
import httpx
import orjson

SHUTDOWN_CODE = "shutdown_deadline"
SURFACES = ("chat", "responses", "messages", "ollama")


@dataclass
class StreamResult:
    """What a client saw of one streamed answer."""

    surface: str
    model: str
    chunks: int = 0  # content pieces received
    finished: bool = False  # the protocol's normal end arrived
    error: dict[str, Any] | None = None  # the error event's payload, as sent
    failure: str | None = None  # anything else that went wrong (a status, a broken connection)
    backend: str | None = None  # the proxy's X-Gatehouse-Backend, when there is one
    events: list[str] = field(default_factory=list, repr=False)

    @property
    def ended_by_shutdown(self) -> bool:
        """The stream ended with the documented `shutdown_deadline` error, in its surface's shape."""
        error = self.error
        if error is None or self.finished:
            return False
        if self.surface == "chat":  # OpenAI chat: `data: {"error": {"message", "type", "code"}}`
            return bool(error.get("error", {}).get("code") == SHUTDOWN_CODE)
        if self.surface == "responses":  # an `error` event (code, message), then `response.failed`
            return error.get("code") == SHUTDOWN_CODE and "response.failed" in self.events
        if self.surface == "messages":  # Anthropic: `event: error` {"type": "error", "error": {"type", "message"}}
            inner = error.get("error", {})
            return (
                error.get("type") == "error"
                and inner.get("type") == "api_error"
                and "shutting down" in inner.get("message", "")
            )
        return "shutting down" in str(error.get("error", ""))  # Ollama: a last line {"error": "..."}


def request_for(surface: str, model: str, text: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    """(path, body, extra headers) of a streamed request on `surface`."""
    messages = [{"role": "user", "content": text}]
    if surface == "chat":
        return "/v1/chat/completions", {"model": model, "messages": messages, "stream": True}, {}
    if surface == "responses":
        return "/v1/responses", {"model": model, "input": text, "stream": True}, {}
    if surface == "messages":
        body = {"model": model, "max_tokens": 1000, "messages": messages, "stream": True}
        return "/v1/messages", body, {"anthropic-version": "2023-06-01"}
    return "/api/chat", {"model": model, "messages": messages, "stream": True}, {}


def _feed(result: StreamResult, event: str | None, data: dict[str, Any]) -> None:
    surface = result.surface
    if surface == "chat":
        if "error" in data:
            result.error = data
        elif data.get("choices") and data["choices"][0]["delta"].get("content"):
            result.chunks += 1
        elif data.get("choices") and data["choices"][0].get("finish_reason"):
            result.finished = True
    elif surface == "responses":
        kind = data.get("type") or event or ""
        result.events.append(kind)
        if kind == "error":
            result.error = data
        elif kind == "response.output_text.delta":
            result.chunks += 1
        elif kind == "response.completed":
            result.finished = True
    elif surface == "messages":
        kind = data.get("type") or event or ""
        if kind == "error":
            result.error = data
        elif kind == "content_block_delta":
            result.chunks += 1
        elif kind == "message_stop":
            result.finished = True
    else:
        if "error" in data:
            result.error = data
        elif data.get("done"):
            result.finished = True
        elif data.get("message", {}).get("content"):
            result.chunks += 1


async def stream(client: httpx.AsyncClient, surface: str, model: str, text: str) -> StreamResult:
    """One streamed request; every outcome is in the result (never raises for the gateway's failures)."""
    path, body, headers = request_for(surface, model, text)
    result = StreamResult(surface=surface, model=model)
    try:
        async with client.stream("POST", path, json=body, headers=headers) as answer:
            result.backend = answer.headers.get("x-gatehouse-backend")
            if answer.status_code != 200:
                await answer.aread()
                result.failure = f"HTTP {answer.status_code}: {answer.text[:300]}"
                return result
            event: str | None = None
            async for line in answer.aiter_lines():
                if not line or line.startswith(":"):
                    continue
                if line.startswith("event:"):
                    event = line[6:].strip()
                    continue
                payload = line[5:].strip() if line.startswith("data:") else line
                if payload == "[DONE]":
                    continue
                _feed(result, event, orjson.loads(payload))
                event = None
    except (httpx.HTTPError, anyio.EndOfStream) as exc:
        result.failure = f"{type(exc).__name__}: {exc}"
    if result.failure is None and not result.finished and result.error is None:
        result.failure = "the stream ended without its end event or an error"
    return result


def query(database_url: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of `sql` in Gatehouse's database (SQLite file or PostgreSQL), read directly."""
    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[1]
        with sqlite3.connect(path) as conn:
            return list(conn.execute(sql).fetchall())

    async def read() -> list[tuple[Any, ...]]:
        url = database_url.replace("postgresql+asyncpg://", "postgresql://")
        conn = await asyncpg.connect(url)
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()

    return anyio.run(read)
