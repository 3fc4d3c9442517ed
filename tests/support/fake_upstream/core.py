"""The fake's ASGI plumbing shared by every protocol: reading requests, gating models, pacing tokens, control."""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from .content import (
    DEFAULT_TOKENS,
    HUGE_ANSWER_BYTES,
    MIDFAIL_TOKENS,
    MODELS,
    RETRY_AFTER_SECONDS,
    ModelSpec,
    cut_at_stop,
    json_pieces,
    reply_tokens,
    thinking_tokens,
    tool_call_input,
    tool_name,
)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Handler = Callable[[Scope, Receive, Send], Awaitable[None]]
Proto = Literal["openai", "ollama", "anthropic"]

REQUEST_LOG_SIZE = 100
YIELD_EVERY = 16  # an unpaced stream lets the event loop run after this many tokens (to notice a disconnect)
# The HTTP status Anthropic gives each error type it names.
ANTHROPIC_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}

JSON = b"application/json"
HDR_JSON = (b"content-type", JSON)
HDR_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
HDR_JSON_TRUNCATED = [HDR_JSON, (b"content-length", b"4096")]
HDR_NDJSON = [(b"content-type", b"application/x-ndjson")]
SSE_DONE = b"data: [DONE]\n\n"
# The behaviours that break an answer after it started (see Core._fail_midway and Core._stream_pieces).
MIDWAY = frozenset({"midfail", "hang-mid", "reset", "badjson", "badframe", "huge"})


class AbortConnectionError(Exception):
    """Raised on purpose so uvicorn drops the connection mid-body (fake-midfail)."""


class QuietExpectedErrors(logging.Filter):
    """Hide uvicorn's traceback logs for deliberate aborts and shutdown cancellations."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, AbortConnectionError | asyncio.CancelledError):
            return False
        # fake-hang requests are expected to outlive the shutdown grace period.
        return not str(record.msg).startswith("Cancel %s running task(s)")


def reset_connection(send: Send) -> None:
    """Abort the client's connection with a TCP RST (SO_LINGER 0), not a FIN (fake-reset).

    uvicorn's ASGI `send` is a bound method of its request cycle, which holds the connection's transport."""
    transport = send.__self__.transport  # type: ignore[attr-defined]
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def huge_line(sse: bool) -> bytes:
    """One stream line of HUGE_ANSWER_BYTES: a JSON object in an SSE `data:` line or an NDJSON line."""
    value = b'{"padding":"' + b"." * HUGE_ANSWER_BYTES + b'"}'
    return b"data: " + value + b"\n\n" if sse else value + b"\n"


async def wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class ClientWatch:
    """Notices the client going away while we sleep between tokens.

    uvicorn's httptools `send` silently drops writes after a disconnect instead of raising, so the
    only reliable signal is `receive()` returning http.disconnect; a background task waits on it.
    It also completes when our response completes, so only consult `gone` before the final send.
    """

    __slots__ = ("_task",)

    def __init__(self, receive: Receive) -> None:
        self._task = asyncio.ensure_future(wait_disconnect(receive))

    @property
    def gone(self) -> bool:
        return self._task.done()

    async def pause(self, delay: float) -> None:
        """Sleep for `delay` seconds, waking early if the client disconnects."""
        if delay > 0 and not self._task.done():
            await asyncio.wait((self._task,), timeout=delay)

    async def until_gone(self) -> None:
        """Wait until the client disconnects."""
        await asyncio.wait((self._task,))

    def close(self) -> None:
        self._task.cancel()


@dataclass(slots=True)
class Stats:
    requests: int = 0
    chat_requests: int = 0
    embed_requests: int = 0
    completion_tokens_served: int = 0
    prompt_tokens: int = 0
    disconnects: int = 0
    aborted: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    unauthorized: int = 0  # requests refused for a missing or unaccepted key

    def as_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "chat_requests": self.chat_requests,
            "embed_requests": self.embed_requests,
            "completion_tokens_served": self.completion_tokens_served,
            "prompt_tokens": self.prompt_tokens,
            "disconnects": self.disconnects,
            "aborted": self.aborted,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "unauthorized": self.unauthorized,
        }

    def reset(self) -> None:
        # in_flight is a live gauge, not a counter: zeroing it would go negative as requests finish.
        live = self.in_flight
        for name in self.__slots__:
            setattr(self, name, 0)
        self.in_flight = self.max_in_flight = live


@dataclass(slots=True)
class LedgerEntry:
    """One model's generations as the upstream counted them, to check a gateway's usage against (GET /_ledger).

    Every plan is an answer; one whose client left before its end is also cut short, with the prompt it had and
    the tokens it did produce: the tokens of the answers that finished are `completion_tokens - unsent_tokens`
    minus `cut_short_completion_tokens`, as :meth:`as_dict` spells out."""

    answers: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0  # as planned (what the usage of a finished answer reports)
    cut_short: int = 0
    cut_short_prompt_tokens: int = 0
    cut_short_completion_tokens: int = 0  # produced before the client left
    unsent_tokens: int = 0  # planned but never produced, the client having left

    def as_dict(self) -> dict[str, int]:
        finished_completion = self.completion_tokens - self.unsent_tokens - self.cut_short_completion_tokens
        return {
            "answers": self.answers,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens - self.unsent_tokens,
            "finished": self.answers - self.cut_short,
            "finished_prompt_tokens": self.prompt_tokens - self.cut_short_prompt_tokens,
            "finished_completion_tokens": finished_completion,
            "cut_short": self.cut_short,
            "cut_short_prompt_tokens": self.cut_short_prompt_tokens,
            "cut_short_completion_tokens": self.cut_short_completion_tokens,
        }


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call the fake model makes: its arguments as an object and as the JSON text it streams."""

    name: str
    arguments: dict[str, Any]
    raw: str  # json.dumps(arguments), what OpenAI-style protocols carry as a string
    pieces: tuple[str, ...]  # raw cut anywhere into pieces of 1 to 8 characters, one token each

    @classmethod
    def make(cls, tool: Mapping[str, Any], text: str) -> ToolCall:
        arguments = tool_call_input(tool, text)
        raw = json.dumps(arguments, ensure_ascii=False)
        return cls(name=tool_name(tool), arguments=arguments, raw=raw, pieces=json_pieces(raw))


@dataclass(slots=True)
class Plan:
    """What a generation request will produce: reasoning, then text, then maybe a tool call."""

    spec: ModelSpec
    tokens: tuple[str, ...]  # the answer's text, one token each
    finish_reason: str  # stop | length | tool_calls
    prompt_tokens: int
    delay: float  # per-token delay
    thinking: tuple[str, ...] = ()  # reasoning tokens, before the text
    call: ToolCall | None = None  # made after the text
    stop_sequence: str | None = None  # the stop sequence that ended the text

    @property
    def cached_tokens(self) -> int:
        """The prompt tokens reported as read from a prompt cache (fake-cached: half the prompt)."""
        return self.prompt_tokens // 2 if self.spec.cache_reads else 0

    @property
    def completion_tokens(self) -> int:
        """Every token produced: reasoning, text and the call's argument pieces."""
        return len(self.thinking) + len(self.tokens) + (len(self.call.pieces) if self.call is not None else 0)

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def thinking_text(self) -> str:
        return "".join(self.thinking)


def iso_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


def json_response(status: int, payload: bytes) -> tuple[Message, Message]:
    return (
        {
            "type": "http.response.start",
            "status": status,
            "headers": [HDR_JSON, (b"content-length", b"%d" % len(payload))],
        },
        {"type": "http.response.body", "body": payload},
    )


def openai_error(message: str, type_: str, code: str | None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def anthropic_error(type_: str, message: str) -> tuple[int, bytes]:
    """Anthropic's error body for `type_`, with the HTTP status Anthropic gives it."""
    return ANTHROPIC_STATUS[type_], orjson.dumps({"type": "error", "error": {"type": type_, "message": message}})


def sse_event(name: bytes, data: Mapping[str, Any]) -> bytes:
    """One server-sent event with its `event:` line, as Anthropic and OpenAI's Responses API stream them."""
    return b"event: " + name + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class Core:
    """State and helpers every protocol's handlers share; FakeUpstreamApp mixes the protocols over it."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        token_delay: float = 0.0,
        tokens: int = DEFAULT_TOKENS,
        latency: float = 0.0,
    ) -> None:
        # The keys accepted now (None: no authentication); POST /_control/keys replaces the set while running,
        # as a provider does during a key rotation (old and new both valid, then only the new one).
        self.api_keys: frozenset[bytes] | None = frozenset({api_key.encode("latin-1")}) if api_key else None
        self.token_delay = token_delay
        self.tokens = tokens
        self.latency = latency
        self.stats = Stats()
        self.ledger: dict[str, LedgerEntry] = {}  # per model, GET /_ledger
        self.failing = "ok"  # POST /_fail/{ok|error|overloaded|hang}
        # (path, body, raw headers): headers are decoded only when /_requests asks, off the hot path.
        self.request_log: collections.deque[tuple[str, Any, list[tuple[bytes, bytes]]]] = collections.deque(
            maxlen=REQUEST_LOG_SIZE
        )
        self._ids = itertools.count(1)

    # ---- helpers -----------------------------------------------------------------------------

    @staticmethod
    async def _send_json(send: Send, status: int, payload: bytes) -> None:
        start, body = json_response(status, payload)
        await send(start)
        await send(body)

    @staticmethod
    async def _send_raw(send: Send, status: int, payload: bytes, content_type: bytes) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", b"%d" % len(payload))],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    def _static(self, payload: bytes) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
        start, body = json_response(200, payload)

        async def handler(scope: Scope, receive: Receive, send: Send) -> None:
            await send(start)
            await send(body)

        return handler

    async def _read_body(self, scope: Scope, receive: Receive) -> Any:
        """Read and parse the JSON request body, logging it; returns None for bad JSON."""
        msg = await receive()
        raw: bytes = msg.get("body", b"")
        if msg.get("more_body"):
            chunks = [raw]
            while msg.get("more_body"):
                msg = await receive()
                chunks.append(msg.get("body", b""))
            raw = b"".join(chunks)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        self.request_log.append(
            (scope["path"], body if body is not None else raw.decode("utf-8", "replace"), scope["headers"])
        )
        return body if isinstance(body, dict) else None

    @staticmethod
    def _not_found_body(model: Any, *, proto: Proto) -> bytes:
        if proto == "openai":
            return openai_error(f"model '{model}' not found", "invalid_request_error", "model_not_found")
        if proto == "anthropic":
            return anthropic_error("not_found_error", f"model: {model}")[1]
        return orjson.dumps({"error": f'model "{model}" not found, try pulling it first'})

    async def _bad_request(self, send: Send, message: str, *, proto: Proto, param: str | None = None) -> None:
        if proto == "openai":
            body = openai_error(message, "invalid_request_error", None, param)
        elif proto == "anthropic":
            body = anthropic_error("invalid_request_error", message)[1]
        else:
            body = orjson.dumps({"error": message})
        await self._send_json(send, 400, body)

    async def _gate(self, body: dict[str, Any], receive: Receive, send: Send, *, proto: Proto) -> ModelSpec | None:
        """Resolve the model and act out error/hang behaviours; None means the response is done."""
        model = body.get("model")
        spec = MODELS.get(model) if isinstance(model, str) else None
        if spec is None:
            await self._send_json(send, 404, self._not_found_body(model, proto=proto))
            return None
        if spec.behaviour == "error":
            if proto == "openai":
                payload = openai_error("The fake upstream failed on purpose.", "server_error", "fake_error")
            elif proto == "anthropic":
                payload = anthropic_error("api_error", "The fake upstream failed on purpose.")[1]
            else:
                payload = b'{"error":"the fake upstream failed on purpose"}'
            await self._send_json(send, 500, payload)
            return None
        if spec.behaviour == "ratelimit":
            message = "The fake upstream is rate limiting on purpose."
            if proto == "openai":
                payload = openai_error(message, "rate_limit_error", "rate_limit_exceeded")
            elif proto == "anthropic":
                payload = anthropic_error("rate_limit_error", message)[1]
            else:
                payload = orjson.dumps({"error": message})
            retry = (b"retry-after", b"%d" % RETRY_AFTER_SECONDS)
            start, body = json_response(429, payload)
            await send({**start, "headers": [*start["headers"], retry]})
            await send(body)
            return None
        if spec.behaviour == "hang":
            # Never start the response; the body is already read, so receive() now only returns
            # when the client disconnects (or the server shuts down and cancels us).
            await wait_disconnect(receive)
            self.stats.disconnects += 1
            return None
        return spec

    def _reply_length(self, spec: ModelSpec) -> int:
        """How many text tokens `spec` answers when nothing caps it."""
        return spec.tokens if spec.tokens is not None else self.tokens

    def _plan(self, spec: ModelSpec, *args: Any, **kwargs: Any) -> Plan:
        """:meth:`_make_plan`, entered in the ledger under the model's name."""
        plan = self._make_plan(spec, *args, **kwargs)
        entry = self.ledger.get(spec.name)
        if entry is None:
            entry = self.ledger[spec.name] = LedgerEntry()
        entry.answers += 1
        entry.prompt_tokens += plan.prompt_tokens
        entry.completion_tokens += plan.completion_tokens
        return plan

    def _cut_short(self, plan: Plan, produced: int) -> None:
        """The client left after `produced` of the plan's tokens: the ledger keeps what was really produced."""
        entry = self.ledger.get(plan.spec.name)
        if entry is None:
            return
        entry.cut_short += 1
        entry.cut_short_prompt_tokens += plan.prompt_tokens
        entry.cut_short_completion_tokens += produced
        entry.unsent_tokens += plan.completion_tokens - produced

    def _make_plan(
        self,
        spec: ModelSpec,
        text: str,
        prompt_tokens: int,
        cap: Any,
        *,
        tool: Mapping[str, Any] | None = None,
        preamble: int = 0,
        stops: Sequence[str] = (),
        think: bool = True,
        answer: tuple[str, ...] | None = None,
    ) -> Plan:
        """What `spec` produces for a last user message `text`, in at most `cap` completion tokens.

        A reasoning model (unless `think` is off) first reasons; then it calls `tool` (after `preamble`
        words) if the whole call fits in what remains, else talks until the cap; or it answers
        `answer` (its reply words by default), cut at the cap and before the first of `stops`.
        """
        # bool is an int subclass; a JSON `true` is not a token limit. Negative means unlimited
        # (Ollama's num_predict=-1).
        limit = cap if isinstance(cap, int) and not isinstance(cap, bool) and cap >= 0 else None
        self.stats.prompt_tokens += prompt_tokens
        delay = max(spec.token_delay, self.token_delay)
        thinking = thinking_tokens(text, spec.thinking) if think and spec.thinking else ()
        if limit is not None and limit < len(thinking):
            return Plan(spec, (), "length", prompt_tokens, delay, thinking=thinking[:limit])
        room = None if limit is None else limit - len(thinking)
        if tool is not None:
            call = ToolCall.make(tool, text)
            words = reply_tokens(text, preamble)
            if room is None or len(words) + len(call.pieces) <= room:
                return Plan(spec, words, "tool_calls", prompt_tokens, delay, thinking=thinking, call=call)
            # The call does not fit: the model talks until the cap instead.
            return Plan(spec, reply_tokens(text, room), "length", prompt_tokens, delay, thinking=thinking)
        tokens = answer if answer is not None else reply_tokens(text, self._reply_length(spec))
        if spec.padding and answer is None:
            tokens = tuple(token.ljust(spec.padding, ".") for token in tokens)
        finish = "stop"
        if room is not None and room < len(tokens):
            tokens, finish = tokens[:room], "length"
        stop_sequence = None
        if stops:
            kept, stop_sequence = cut_at_stop(tokens, stops)
            if stop_sequence is not None:
                tokens, finish = kept, "stop"
        return Plan(spec, tokens, finish, prompt_tokens, delay, thinking=thinking, stop_sequence=stop_sequence)

    async def _abort_midway(self, send: Send, partial: bytes) -> None:
        """Start a JSON response, send part of it, then make uvicorn drop the connection."""
        self.stats.aborted += 1
        # The announced length is never reached, so every HTTP client sees a truncated body.
        await send({"type": "http.response.start", "status": 200, "headers": HDR_JSON_TRUNCATED})
        await send({"type": "http.response.body", "body": partial, "more_body": True})
        raise AbortConnectionError

    async def _fail_midway(
        self, spec: ModelSpec, send: Send, receive: Receive, partial: bytes, plan: Plan | None
    ) -> None:
        """A whole (non-streamed) answer broken as `spec` says; `partial` is the start of a real answer."""
        if plan is not None:
            self._cut_short(plan, 0)  # whatever it generated, nothing usable left here
        behaviour = spec.behaviour
        if behaviour == "midfail":
            await self._abort_midway(send, partial)
        if behaviour in ("hang-mid", "reset"):
            await send({"type": "http.response.start", "status": 200, "headers": HDR_JSON_TRUNCATED})
            await send({"type": "http.response.body", "body": partial, "more_body": True})
            if behaviour == "hang-mid":
                await wait_disconnect(receive)
                self.stats.disconnects += 1
                return
            await asyncio.sleep(0.05)  # let the partial body reach the client before the reset
            self.stats.aborted += 1
            reset_connection(send)
            raise AbortConnectionError
        if behaviour == "badjson":
            await self._send_json(send, 200, partial + b"}")  # complete, and not JSON
        elif behaviour == "badframe":
            await self._send_json(send, 200, b'["not", "an", "answer"]')  # JSON, but not the protocol's object
        else:  # huge
            await self._send_json(send, 200, huge_line(sse=False)[:-1])

    async def _wait_before_full_response(self, plan: Plan, receive: Receive) -> bool:
        """Non-stream: simulate latency + generation time; False if the client left meanwhile."""
        wait = self.latency + plan.delay * plan.completion_tokens
        if wait <= 0:
            return True  # fast path: no watcher task, this is what benchmarks hit
        watch = ClientWatch(receive)
        try:
            await watch.pause(wait)
            if watch.gone:
                self.stats.disconnects += 1
                self._cut_short(plan, 0)
                return False
            return True
        finally:
            watch.close()

    async def _stream_tokens(
        self,
        plan: Plan,
        watch: ClientWatch,
        send: Send,
        render: Callable[[str], bytes],
        *,
        midfail_partial: bytes,
    ) -> bool:
        """Send one chunk per token; False if the client went away (counted once here)."""
        return await self._stream_pieces(map(render, plan.tokens), plan, watch, send, midfail_partial=midfail_partial)

    async def _stream_pieces(
        self,
        pieces: Iterable[bytes],
        plan: Plan,
        watch: ClientWatch,
        send: Send,
        *,
        midfail_partial: bytes,
    ) -> bool:
        """Send each piece (one token's worth) after the token delay; False if the client went away.

        An empty piece is a token whose bytes go out with a later piece."""
        stats = self.stats
        behaviour = plan.spec.behaviour
        midfail = behaviour == "midfail"
        for i, piece in enumerate(pieces):
            if behaviour in MIDWAY and i == MIDFAIL_TOKENS:
                if midfail:
                    break
                return await self._break_stream(behaviour, plan, i, watch, send, midfail_partial)
            if plan.delay:
                await watch.pause(plan.delay)
            elif not i % YIELD_EVERY:
                # Unpaced, every send may return at once (uvicorn drops writes to a closed connection): without a
                # turn of the loop now and then the disconnect would never be seen, and the ledger would count an
                # answer nobody received as finished.
                await asyncio.sleep(0)
            if watch.gone:
                stats.disconnects += 1
                self._cut_short(plan, i)
                return False
            try:
                if piece:  # an empty piece is a token produced but not sent yet (Ollama sends tool calls whole)
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
            except OSError:  # other servers (and future uvicorn) raise instead of dropping the write
                stats.disconnects += 1
                self._cut_short(plan, i)
                return False
            stats.completion_tokens_served += 1
        if midfail:
            stats.aborted += 1
            # A half-written event makes the breakage visible even to lenient line parsers.
            await send({"type": "http.response.body", "body": midfail_partial, "more_body": True})
            raise AbortConnectionError
        return True

    async def _break_stream(
        self, behaviour: str, plan: Plan, produced: int, watch: ClientWatch, send: Send, partial: bytes
    ) -> bool:
        """Break a stream after `produced` tokens as `behaviour` says; always False (the caller sends no more).

        `partial` is the start of the protocol's next event (SSE when it starts with `data:` or `event:`)."""
        stats = self.stats
        self._cut_short(plan, produced)
        sse = partial.startswith((b"data:", b"event:"))
        if behaviour == "reset":
            await asyncio.sleep(0.05)  # let the tokens sent so far reach the client before the reset
            stats.aborted += 1
            reset_connection(send)
            raise AbortConnectionError
        if behaviour == "badframe":
            # Half an event, then a clean end of the body: no terminal event ([DONE], done, message_stop...).
            await send({"type": "http.response.body", "body": partial, "more_body": False})
            return False
        if behaviour == "badjson":  # a whole event (or line) whose JSON is broken
            await send(
                {"type": "http.response.body", "body": partial + (b"}\n\n" if sse else b"}\n"), "more_body": True}
            )
        elif behaviour == "huge":
            await send({"type": "http.response.body", "body": huge_line(sse), "more_body": True})
        # hang-mid, and after badjson or huge: nothing more until the client gives up (a gateway that let the bad
        # line through would time out here instead of reporting it).
        await watch.until_gone()
        stats.disconnects += 1
        return False

    async def _wait_latency(self, receive: Receive) -> bool:
        watch = ClientWatch(receive)
        try:
            await watch.pause(self.latency)
            if watch.gone:
                self.stats.disconnects += 1
                return False
            return True
        finally:
            watch.close()

    async def _control(self, method: str, path: str, receive: Receive, send: Send) -> None:
        if method == "POST" and path == "/_control/keys":
            await self._set_keys(receive, send)
        elif method == "GET" and path == "/_stats":
            await self._send_json(send, 200, orjson.dumps(self.stats.as_dict()))
        elif method == "GET" and path == "/_ledger":
            ledger = {model: entry.as_dict() for model, entry in sorted(self.ledger.items())}
            await self._send_json(send, 200, orjson.dumps(ledger))
        elif method == "GET" and path == "/_requests":
            logged = [
                {
                    "path": logged_path,
                    "body": body,
                    "headers": {
                        k.decode("latin-1"): v.decode("latin-1")
                        for k, v in headers
                        if k not in (b"authorization", b"x-api-key")
                    },
                }
                for logged_path, body, headers in self.request_log
            ]
            await self._send_json(send, 200, orjson.dumps(logged))
        elif method == "POST" and path in ("/_fail/ok", "/_fail/error", "/_fail/overloaded", "/_fail/hang"):
            self.failing = path.removeprefix("/_fail/")
            await self._send_json(send, 200, b'{"ok":true}')
        elif method == "POST" and path == "/_reset":
            self.stats.reset()
            self.ledger.clear()
            self.request_log.clear()
            await self._send_json(send, 200, b'{"ok":true}')
        else:
            await self._send_json(send, 404, b'{"error":"unknown control endpoint"}')

    async def _set_keys(self, receive: Receive, send: Send) -> None:
        """POST /_control/keys {"keys": [...]}: the keys accepted from now on (a rotation: both, then the new one).

        Not written to the request log: the keys are what a gateway under test must keep secret."""
        raw = b""
        while True:
            msg = await receive()
            raw += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        try:
            keys = orjson.loads(raw).get("keys")
        except (orjson.JSONDecodeError, AttributeError):
            keys = None
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) and k for k in keys):
            problem = 'send {"keys": ["key", ...]}: one or more non-empty strings'
            await self._send_json(send, 422, orjson.dumps({"error": problem}))
            return
        self.api_keys = frozenset(k.encode("latin-1") for k in keys)
        await self._send_json(send, 200, orjson.dumps({"keys": len(self.api_keys)}))
