"""Mixed client traffic through the proxy: every client surface, streamed and not, short answers and long streams; each
answer checked, each error classified and explained by the operators' actions it may come from (or not)."""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from bench.soak.report import Tally

GRACE = 3.0  # seconds a block, unblock or revocation may take to reach every replica (the bus says "at once")
CODE = re.compile(r'"code"\s*:\s*"([^"]+)"')
TYPE = re.compile(r'"type"\s*:\s*"([^"]+)"')
TERMINATE_TOKEN = re.compile(r"soak-terminate-\d+")


@dataclass
class Person:
    """A soak user: their current key, the keys revoked under them, and when they were blocked."""

    user_id: int
    email: str
    key: str
    key_id: int
    revoked: dict[str, float] = field(default_factory=dict)  # key -> when the revocation was sent (monotonic)
    blocks: list[list[float]] = field(default_factory=list)  # [sent, lifted] (lifted inf while blocked)
    busy_streams: int = 0

    def blocked_during(self, start: float, end: float) -> bool:
        """Whether a block of this user overlapped [start, end] (with the grace after the unblock)."""
        return any(sent <= end and start <= lifted + GRACE for sent, lifted in self.blocks)

    def surely_blocked(self, start: float, end: float) -> bool:
        """Whether every replica knew of a block over the whole of [start, end]."""
        return any(sent + GRACE <= start and end <= lifted for sent, lifted in self.blocks)


@dataclass
class World:
    """What the traffic and the operators share."""

    people: list[Person]
    started: float
    tally: Tally = field(default_factory=Tally)
    terminated: set[str] = field(default_factory=set)  # the reasons sent with each terminate (soak-terminate-N)
    events: list[tuple[float, str, str]] = field(default_factory=list)  # (seconds since start, action, detail)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def event(self, action: str, detail: str = "") -> None:
        """Note an operator's action on the timeline."""
        self.events.append((time.monotonic() - self.started, action, detail))


@dataclass(frozen=True)
class Kind:
    """One kind of request: its surface, path, body and how a complete answer ends."""

    surface: str
    path: str
    stream: bool
    body: Callable[[str, int], dict[str, Any]]
    done_marker: bytes  # a complete streamed answer contains it (non-streamed: parsed JSON); "a|b": either
    anthropic: bool = False
    weight: int = 1


def _messages(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are terse."}, {"role": "user", "content": text}]


def _chat(model: str, stream: bool) -> Callable[[str, int], dict[str, Any]]:
    def body(text: str, cap: int) -> dict[str, Any]:
        out: dict[str, Any] = {"model": model, "messages": _messages(text), "max_tokens": cap}
        if stream:
            out |= {"stream": True, "stream_options": {"include_usage": True}}
        return out

    return body


def _responses(stream: bool) -> Callable[[str, int], dict[str, Any]]:
    def body(text: str, cap: int) -> dict[str, Any]:
        return {
            "model": "fake-chat",
            "instructions": "You are terse.",
            "input": text,
            "max_output_tokens": cap,
            "store": False,
            "stream": stream,
        }

    return body


def _anthropic(stream: bool) -> Callable[[str, int], dict[str, Any]]:
    def body(text: str, cap: int) -> dict[str, Any]:
        return {
            "model": "fake-chat",
            "system": "You are terse.",
            "max_tokens": cap,
            "messages": [{"role": "user", "content": text}],
            "stream": stream,
        }

    return body


def _ollama(stream: bool) -> Callable[[str, int], dict[str, Any]]:
    def body(text: str, cap: int) -> dict[str, Any]:
        return {"model": "fake-chat", "messages": _messages(text), "stream": stream, "options": {"num_predict": cap}}

    return body


def _completion(text: str, cap: int) -> dict[str, Any]:
    return {"model": "fake-chat", "prompt": text, "max_tokens": cap}


KINDS = (
    Kind("chat", "/v1/chat/completions", False, _chat("fake-chat", False), b"", weight=3),
    Kind("chat", "/v1/chat/completions", True, _chat("fake-chat", True), b"data: [DONE]", weight=3),
    Kind("chat (long stream)", "/v1/chat/completions", True, _chat("fake-long", True), b"data: [DONE]", weight=2),
    Kind("completions", "/v1/completions", False, _completion, b""),
    Kind("responses", "/v1/responses", False, _responses(False), b""),
    Kind("responses", "/v1/responses", True, _responses(True), b"event: response.completed|event: response.incomplete"),
    Kind("messages", "/v1/messages", False, _anthropic(False), b"", anthropic=True),
    Kind("messages", "/v1/messages", True, _anthropic(True), b"message_stop", anthropic=True),
    Kind("ollama", "/api/chat", False, _ollama(False), b""),
    Kind("ollama", "/api/chat", True, _ollama(True), b'"done":true'),
)
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima")


def _explain(world: World, person: Person, key: str, status: int, text: str, start: float, end: float) -> str | None:
    """The operator's action that explains an error, or None."""
    token = TERMINATE_TOKEN.search(text)
    if token is not None and token.group(0) in world.terminated:
        return "a stream terminated by the soak's operator"
    if status == 401 and key in person.revoked and person.revoked[key] <= end:
        return "a key revoked by the soak's operator"
    if status == 403 and person.blocked_during(start, end):
        return "a user blocked by the soak's operator"
    return None


def _code(status: int, text: str) -> str:
    if TERMINATE_TOKEN.search(text):
        return "terminated_by_operator"
    match = CODE.search(text)
    if match is not None:
        return match.group(1)
    types = [name for name in TYPE.findall(text) if name != "error"]  # Anthropic's shape: the inner error's type
    if types:
        return types[-1]
    return "(no code)" if status else "(no answer)"


async def one_request(client: httpx.AsyncClient, world: World, person: Person, kind: Kind, rng: random.Random) -> None:
    """Send one request of `kind` as `person`, check the answer, count it and any error."""
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30)))
    cap = 200 if kind.surface == "chat (long stream)" else rng.randint(4, 8)
    key = person.key
    headers = (
        {"x-api-key": key, "anthropic-version": "2023-06-01"} if kind.anthropic else {"authorization": f"Bearer {key}"}
    )
    world.tally.request(kind.surface + (" stream" if kind.stream and "stream" not in kind.surface else ""))
    start = time.monotonic()
    status, raw = 0, b""
    try:
        async with client.stream("POST", kind.path, json=kind.body(text, cap), headers=headers) as answer:
            status = answer.status_code
            raw = await answer.aread()
    except httpx.HTTPError as exc:
        raw = f"{type(exc).__name__}: {exc}".encode()
    end = time.monotonic()
    body = raw.decode(errors="replace")
    ended = any(marker in raw for marker in kind.done_marker.split(b"|"))  # capped: Responses ends incomplete
    ok = status == 200 and (ended if kind.stream else _parses(raw))
    if ok and not kind.stream and '"error"' in body[:20]:
        ok = False
    if ok:
        leak = None
        if key in person.revoked and person.revoked[key] + GRACE <= start:
            leak = "a revoked key was served"
        elif person.surely_blocked(start, end):
            leak = "a blocked user was served"
        if leak is not None:
            world.tally.error(200, "served_when_refused", because=None, detail=f"{leak} ({kind.path})")
        return
    because = _explain(world, person, key, status, body, start, end)
    world.tally.error(status, _code(status, body), because=because, detail=f"{kind.path}: {body[-200:]}")
    if because is not None and status in (401, 403):
        await asyncio.sleep(0.5)  # an explained refusal: do not hammer while the operator's action lasts


def _parses(raw: bytes) -> bool:
    try:
        return isinstance(orjson.loads(raw), dict)
    except orjson.JSONDecodeError:
        return False


async def client_loop(base_url: str, world: World, person: Person, seed: int, *, pause: float) -> None:
    """Requests as `person` until the soak stops: kinds drawn by weight, `pause` seconds apart on average."""
    rng = random.Random(seed)
    weights = [kind.weight for kind in KINDS]
    timeout = httpx.Timeout(connect=10, read=120, write=30, pool=30)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout, trust_env=False) as client:
        while not world.stop.is_set():
            kind = rng.choices(KINDS, weights)[0]
            await one_request(client, world, person, kind, rng)
            if pause:
                await asyncio.sleep(rng.uniform(0, 2 * pause))
