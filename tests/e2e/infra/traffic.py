"""Steady mixed chat traffic in a thread of its own (OpenAI, streamed OpenAI, Ollama and Anthropic surfaces), every
answer recorded: status, error code in the surface's own shape, Retry-After, and the tokens the answer reports."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

PROMPT = "Say something about reliability"
MAX_TOKENS = 8


@dataclass(frozen=True)
class Answer:
    """One request's outcome, as its client saw it."""

    surface: str
    started: float  # time.monotonic()
    ended: float
    status: int  # 0: no HTTP answer (the connection failed)
    code: str | None  # the error code (OpenAI and Anthropic shapes); the message's start for Ollama's
    retry_after: str | None
    tokens: int | None  # prompt + completion as the answer reports them (2xx only)
    complete: bool  # a 2xx whose body ended as its protocol ends (a stream with its usage and end marker)
    via: str | None = None  # the replica that answered (the proxy's X-Gatehouse-Backend), if any

    @property
    def ok(self) -> bool:
        """Answered 2xx, to its end."""
        return 200 <= self.status < 300 and self.complete


def _request(surface: str, max_tokens: int) -> tuple[str, dict[str, Any]]:
    messages = [{"role": "user", "content": PROMPT}]
    if surface == "openai":
        return "/v1/chat/completions", {"model": "oa-chat", "messages": messages, "max_tokens": max_tokens}
    if surface == "openai-stream":
        body = {
            "model": "oa-chat",
            "messages": messages,
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        return "/v1/chat/completions", body
    if surface == "ollama":
        body = {"model": "ol-chat", "messages": messages, "stream": False, "options": {"num_predict": max_tokens}}
        return "/api/chat", body
    return "/v1/messages", {"model": "an-chat", "messages": messages, "max_tokens": max_tokens}


def _error_code(surface: str, body: bytes) -> str | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return f"not json: {body[:80]!r}"
    if surface == "ollama":
        return str(data.get("error"))[:300] if isinstance(data, dict) else None
    if surface == "anthropic":
        if data.get("type") != "error":
            return f"not anthropic's shape: {body[:80]!r}"
        return str(data["error"].get("code"))
    return str(data["error"].get("code"))


def _tokens(surface: str, data: dict[str, Any]) -> int | None:
    if surface == "ollama":
        return int(data["prompt_eval_count"]) + int(data["eval_count"])
    if surface == "anthropic":
        return int(data["usage"]["input_tokens"]) + int(data["usage"]["output_tokens"])
    usage = data.get("usage")
    return int(usage["prompt_tokens"]) + int(usage["completion_tokens"]) if usage else None


async def _stream_tokens(response: httpx.Response) -> tuple[int | None, bool]:
    tokens, done = None, False
    async for line in response.aiter_lines():
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            done = True
            continue
        chunk = orjson.loads(line[6:])
        if chunk.get("error"):
            return tokens, False
        if chunk.get("usage"):
            tokens = _tokens("openai", chunk)
    return tokens, done and tokens is not None


async def one_request(client: httpx.AsyncClient, surface: str, max_tokens: int = MAX_TOKENS) -> Answer:
    """Send one request of `surface` and record how it ended."""
    path, body = _request(surface, max_tokens)
    started = time.monotonic()
    status, via = 0, None
    try:
        async with client.stream("POST", path, json=body) as response:
            status, via = response.status_code, response.headers.get("x-gatehouse-backend")
            if response.is_success and surface == "openai-stream":
                tokens, complete = await _stream_tokens(response)
                return Answer(surface, started, time.monotonic(), status, None, None, tokens, complete, via)
            raw = await response.aread()
            if response.is_success:
                tokens = _tokens(surface, orjson.loads(raw))
                return Answer(surface, started, time.monotonic(), status, None, None, tokens, True, via)
            code = _error_code(surface, raw)
            retry = response.headers.get("retry-after")
            return Answer(surface, started, time.monotonic(), status, code, retry, None, False, via)
    except (httpx.HTTPError, orjson.JSONDecodeError, KeyError) as exc:
        # A 2xx head whose body broke off stays a 2xx here, but not `ok`: it did not end as its protocol ends.
        return Answer(surface, started, time.monotonic(), status, type(exc).__name__, None, None, False, via)


SURFACES = ("openai", "openai-stream", "ollama", "anthropic")


@dataclass
class Traffic:
    """`workers` clients each sending one request after another to `url` with `key` until stopped."""

    url: str
    key: str
    workers: int = 6
    pause: float = 0.02
    max_tokens: int = MAX_TOKENS
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    async def _worker(self, client: httpx.AsyncClient, number: int) -> None:
        for surface in itertools.islice(itertools.cycle(SURFACES), number, None):
            if self._stop.is_set():
                return
            self.answers.append(await one_request(client, surface, self.max_tokens))
            await asyncio.sleep(self.pause)

    async def _run(self) -> None:
        headers = {"authorization": f"Bearer {self.key}", "anthropic-version": "2023-06-01"}
        limits = httpx.Limits(max_connections=self.workers * 2)
        async with httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=30, limits=limits, trust_env=False
        ) as client:
            await asyncio.gather(*(self._worker(client, n) for n in range(self.workers)))

    def start(self) -> None:
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(),), daemon=True, name="traffic")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
            assert not self._thread.is_alive(), "the traffic did not stop within 60 s"

    def since(self, moment: float) -> list[Answer]:
        """Answers to requests started at or after `moment` (time.monotonic())."""
        return [a for a in list(self.answers) if a.started >= moment]

    def wait_for(self, predicate: Callable[[list[Answer]], bool], what: str, timeout: float = 30) -> None:
        """Wait until predicate(answers so far) holds."""
        deadline = time.monotonic() + timeout
        while not predicate(list(self.answers)):
            assert self._thread is not None and self._thread.is_alive(), "the traffic stopped"
            assert time.monotonic() < deadline, f"not within {timeout} s: {what}; {summary(self.answers)}"
            time.sleep(0.02)


@contextlib.contextmanager
def traffic(url: str, key: str, **options: Any) -> Iterator[Traffic]:
    """Traffic running for the block's duration."""
    running = Traffic(url, key, **options)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def summary(answers: list[Answer]) -> dict[str, int]:
    """How many answers of each (status, code)."""
    return dict(Counter(f"{a.status} {a.code or ''}".strip() for a in answers))


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30, step: float = 0.05) -> float:
    """Poll until predicate() holds; the seconds it took."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, f"not within {timeout} s: {what}"
        time.sleep(step)
    return time.monotonic() - started
