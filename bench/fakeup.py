"""A fast fake LLM upstream (OpenAI and Ollama protocols) for `make bench`, in its own process.

    python bench/fakeup.py --port P [--host H] [--latency-ms X] [--token-ms Y] [--tokens N]
                           [--slow-first-ms F] [--fast-tokens M]

Raw asyncio protocol + httptools on uvloop, HTTP/1.1 keep-alive, no framework: the answer to a request
body seen before is a dictionary lookup (responses are built once per distinct body), so the server
costs a few microseconds per request and is never the bottleneck of a gateway benchmark.

Behaviour is chosen by the model name, so every gateway can route to the same upstream:

* ``bench-fast``: no delay beyond ``--latency-ms`` (default 0); a stream sends ``--fast-tokens``
  (default 64) tokens back to back, one socket write per token.
* ``bench-slow``: a stream's first token after ``--slow-first-ms`` (default 100), then one token every
  ``--token-ms`` (default 200) until ``--tokens`` (default 60) are out; a non-streamed answer waits as
  long in total.
* ``bench-embed``: embeddings (a fixed 32-float vector per input), after ``--latency-ms``.

A client's ``max_tokens`` / ``max_completion_tokens`` / ``options.num_predict`` caps the token count.

Endpoints: ``GET /health``, ``GET /v1/models``, ``GET /api/tags``, ``POST /v1/chat/completions`` (JSON, or
SSE with one ``data:`` chunk per token, a finishing chunk, a usage chunk when
``stream_options.include_usage`` is set, then ``data: [DONE]``), ``POST /v1/embeddings`` (floats, or
base64 when ``encoding_format`` is ``base64``), ``POST /api/chat`` (NDJSON stream, the default, or one
JSON object with ``prompt_eval_count`` / ``eval_count``) and ``POST /api/embed``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import signal
import struct
from dataclasses import dataclass
from typing import Any, cast

import httptools
import orjson
import uvloop

MODELS = ("bench-fast", "bench-slow", "bench-embed")
EMBED_DIM = 32
CACHE_LIMIT = 4096
CREATED = 1_763_700_000

JSON_HEADERS = b"content-type: application/json\r\ncontent-length: %d\r\n%b\r\n"
STREAM_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: %b\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n%b\r\n"
CLOSE = b"connection: close\r\n"
LAST_CHUNK = b"0\r\n\r\n"


@dataclass(frozen=True)
class Options:
    latency: float  # seconds before a fast/embed answer
    slow_first: float  # seconds before bench-slow's first token
    token_interval: float  # seconds between bench-slow's tokens
    slow_tokens: int
    fast_tokens: int


@dataclass(frozen=True)
class Plan:
    """A prepared answer: either one body (`whole`), or a stream: head, per-token writes and a tail."""

    status: int
    whole: bytes = b""
    content_type: bytes = b"application/json"
    head_delay: float = 0.0
    token_writes: tuple[bytes, ...] = ()
    tail: bytes = b""  # finishing chunk(s), usage, [DONE] or done line, already chunk-encoded
    first_delay: float = 0.0
    interval: float = 0.0


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def _json_plan(obj: Any, *, status: int = 200, delay: float = 0.0) -> Plan:
    return Plan(status=status, whole=orjson.dumps(obj), head_delay=delay)


def _error(status: int, message: str, *, openai: bool) -> Plan:
    obj: Any = (
        {"error": {"message": message, "type": "invalid_request_error", "code": None}} if openai else {"error": message}
    )
    return _json_plan(obj, status=status)


def _prompt_tokens(messages: Any) -> int:
    size = 0
    if isinstance(messages, list):
        for m in messages:
            content = m.get("content") if isinstance(m, dict) else None
            size += len(content) if isinstance(content, str) else 16
    return max(1, size // 4) + 4


def _cap(n: int, *values: Any) -> int:
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            n = min(n, value)
    return n


def _tokens(count: int) -> list[str]:
    return [(" tok" if i else "tok") + str(i) for i in range(count)]


class Planner:
    """Builds (and caches, per request body) the answer to a request."""

    def __init__(self, options: Options) -> None:
        self.o = options
        self.cache: dict[tuple[bytes, bytes], Plan] = {}
        models = [{"id": m, "object": "model", "created": CREATED, "owned_by": "bench"} for m in MODELS]
        tags = [
            {"name": m, "model": m, "modified_at": "2026-01-01T00:00:00Z", "size": 1, "digest": m, "details": {}}
            for m in MODELS
        ]
        self.static: dict[bytes, Plan] = {
            b"/health": _json_plan({"status": "ok"}),
            b"/v1/models": _json_plan({"object": "list", "data": models}),
            b"/api/tags": _json_plan({"models": tags}),
        }
        vector = [round(0.01 * (i + 1), 4) for i in range(EMBED_DIM)]
        self.vector = vector
        self.vector_b64 = base64.b64encode(struct.pack(f"<{EMBED_DIM}f", *vector)).decode()

    def plan(self, method: bytes, url: bytes, body: bytes) -> Plan:
        if method == b"GET":
            path = url.split(b"?", 1)[0]
            return self.static.get(path) or _error(404, "not found", openai=True)
        key = (url, body)
        plan = self.cache.get(key)
        if plan is None:
            plan = self._build(url, body)
            if len(self.cache) >= CACHE_LIMIT:
                self.cache.clear()
            self.cache[key] = plan
        return plan

    def _build(self, url: bytes, body: bytes) -> Plan:
        openai = url.startswith(b"/v1/")
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _error(400, "body is not JSON", openai=openai)
        if not isinstance(req, dict):
            return _error(400, "body is not a JSON object", openai=openai)
        model = req.get("model")
        if model not in MODELS:
            return _error(404, f"model {model!r} not found", openai=openai)
        path = url.split(b"?", 1)[0]
        if path == b"/v1/chat/completions":
            return self._openai_chat(req, model)
        if path == b"/v1/embeddings":
            return self._openai_embed(req, model)
        if path == b"/api/chat":
            return self._ollama_chat(req, model)
        if path == b"/api/embed":
            return self._ollama_embed(req, model)
        return _error(404, "not found", openai=openai)

    def _timing(self, model: str) -> tuple[int, float, float]:
        """(tokens, first-token delay, interval)."""
        if model == "bench-slow":
            return self.o.slow_tokens, self.o.slow_first, self.o.token_interval
        return self.o.fast_tokens, self.o.latency, 0.0

    def _openai_chat(self, req: dict[str, Any], model: str) -> Plan:
        stream = bool(req.get("stream"))
        full, first, interval = self._timing(model)
        count = _cap(full, req.get("max_tokens"), req.get("max_completion_tokens"))
        tokens = _tokens(count)
        prompt = _prompt_tokens(req.get("messages"))
        usage = {"prompt_tokens": prompt, "completion_tokens": count, "total_tokens": prompt + count}
        cid = "chatcmpl-bench"
        finish = "length" if count < full else "stop"
        if not stream:
            obj = {
                "id": cid,
                "object": "chat.completion",
                "created": CREATED,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(tokens)},
                        "finish_reason": finish,
                    }
                ],
                "usage": usage,
            }
            return _json_plan(obj, delay=first + interval * max(0, count - 1))
        include_usage = bool((req.get("stream_options") or {}).get("include_usage"))

        def event(delta: dict[str, Any], finish_reason: str | None) -> bytes:
            obj: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }
            if include_usage:
                obj["usage"] = None
            return _chunk(b"data: " + orjson.dumps(obj) + b"\n\n")

        writes = [
            event({"role": "assistant", "content": tokens[0]} if i == 0 else {"content": t}, None)
            for i, t in enumerate(tokens)
        ]
        tail = event({}, finish)
        if include_usage:
            usage_obj = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "choices": [],
                "usage": usage,
            }
            tail += _chunk(b"data: " + orjson.dumps(usage_obj) + b"\n\n")
        tail += _chunk(b"data: [DONE]\n\n") + LAST_CHUNK
        return Plan(
            status=200,
            content_type=b"text/event-stream",
            token_writes=tuple(writes),
            tail=tail,
            first_delay=first,
            interval=interval,
        )

    def _ollama_chat(self, req: dict[str, Any], model: str) -> Plan:
        stream = req.get("stream", True) is not False
        count, first, interval = self._timing(model)
        options = req.get("options") if isinstance(req.get("options"), dict) else {}
        count = _cap(count, options.get("num_predict"))
        tokens = _tokens(count)
        prompt = _prompt_tokens(req.get("messages"))
        created_at = "2026-01-01T00:00:00Z"
        final = {
            "model": model,
            "created_at": created_at,
            "message": {"role": "assistant", "content": "" if stream else "".join(tokens)},
            "done": True,
            "done_reason": "stop",
            "total_duration": 1000,
            "load_duration": 0,
            "prompt_eval_count": prompt,
            "prompt_eval_duration": 1,
            "eval_count": count,
            "eval_duration": 1,
        }
        if not stream:
            return _json_plan(final, delay=first + interval * max(0, count - 1))
        writes = [
            _chunk(
                orjson.dumps(
                    {
                        "model": model,
                        "created_at": created_at,
                        "message": {"role": "assistant", "content": t},
                        "done": False,
                    }
                )
                + b"\n"
            )
            for t in tokens
        ]
        tail = _chunk(orjson.dumps(final) + b"\n") + LAST_CHUNK
        return Plan(
            status=200,
            content_type=b"application/x-ndjson",
            token_writes=tuple(writes),
            tail=tail,
            first_delay=first,
            interval=interval,
        )

    def _inputs(self, raw: Any) -> list[str] | None:
        if isinstance(raw, str):
            return [raw]
        if isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
            return raw
        if isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
            return ["x" * len(raw)]  # one pre-tokenized input
        if isinstance(raw, list) and raw and all(isinstance(x, list) for x in raw):
            return ["x" * len(x) for x in raw]
        return None

    def _openai_embed(self, req: dict[str, Any], model: str) -> Plan:
        inputs = self._inputs(req.get("input"))
        if inputs is None:
            return _error(400, "`input` must be a string or a list", openai=True)
        vector: Any = self.vector_b64 if req.get("encoding_format") == "base64" else self.vector
        data = [{"object": "embedding", "index": i, "embedding": vector} for i in range(len(inputs))]
        tokens = sum(max(1, len(t) // 4) for t in inputs)
        obj = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return _json_plan(obj, delay=self.o.latency)

    def _ollama_embed(self, req: dict[str, Any], model: str) -> Plan:
        inputs = self._inputs(req.get("input"))
        if inputs is None:
            return _error(400, "`input` must be a string or a list", openai=False)
        tokens = sum(max(1, len(t) // 4) for t in inputs)
        obj = {"model": model, "embeddings": [self.vector] * len(inputs), "prompt_eval_count": tokens}
        return _json_plan(obj, delay=self.o.latency)


STATUS_LINES = {
    200: b"HTTP/1.1 200 OK\r\n",
    400: b"HTTP/1.1 400 Bad Request\r\n",
    404: b"HTTP/1.1 404 Not Found\r\n",
}


class Upstream(asyncio.Protocol):
    """One client connection."""

    planner: Planner

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transport is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        url, self.url = self.url, b""
        body, self.body = b"".join(self.body), []
        method = self.parser.get_method()
        keep = self.parser.should_keep_alive()
        plan = self.planner.plan(method, url, body)
        extra = b"" if keep else CLOSE
        if plan.token_writes or plan.tail:
            self._stream(plan, extra, keep)
        else:
            status = STATUS_LINES.get(plan.status, b"HTTP/1.1 %d Error\r\n" % plan.status)
            payload = status + JSON_HEADERS % (len(plan.whole), extra) + plan.whole
            if plan.head_delay > 0:
                self.timer = self.loop.call_later(plan.head_delay, self._send, payload, keep)
            else:
                self._send(payload, keep)

    def _send(self, payload: bytes, keep: bool) -> None:
        self.timer = None
        if self.closed or self.transport is None:
            return
        self.transport.write(payload)
        if not keep:
            self.transport.close()

    def _stream(self, plan: Plan, extra: bytes, keep: bool) -> None:
        assert self.transport is not None
        self.transport.write(STREAM_HEAD % (plan.content_type, extra))
        if plan.interval <= 0 and plan.first_delay <= 0:
            write = self.transport.write
            for w in plan.token_writes:  # back to back, one write per token
                write(w)
            write(plan.tail)
            if not keep:
                self.transport.close()
            return
        self.timer = self.loop.call_later(plan.first_delay, self._tick, plan, 0, keep)

    def _tick(self, plan: Plan, i: int, keep: bool) -> None:
        self.timer = None
        if self.closed or self.transport is None:
            return
        writes = plan.token_writes
        if i < len(writes):
            self.transport.write(writes[i])
        if i + 1 < len(writes):
            if plan.interval > 0:
                self.timer = self.loop.call_later(plan.interval, self._tick, plan, i + 1, keep)
            else:
                self._tick(plan, i + 1, keep)
            return
        self.transport.write(plan.tail)
        if not keep:
            self.transport.close()


async def serve(host: str, port: int, options: Options) -> None:
    Upstream.planner = Planner(options)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Upstream, host, port, backlog=4096, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay of bench-fast / bench-embed answers")
    parser.add_argument("--slow-first-ms", type=float, default=100.0, help="bench-slow: delay of the first token")
    parser.add_argument("--token-ms", type=float, default=200.0, help="bench-slow: interval between tokens")
    parser.add_argument("--tokens", type=int, default=60, help="bench-slow: tokens per answer")
    parser.add_argument("--fast-tokens", type=int, default=64, help="bench-fast: tokens per answer")
    args = parser.parse_args()
    options = Options(
        latency=args.latency_ms / 1000,
        slow_first=args.slow_first_ms / 1000,
        token_interval=args.token_ms / 1000,
        slow_tokens=args.tokens,
        fast_tokens=args.fast_tokens,
    )
    uvloop.run(serve(args.host, args.port, options))


if __name__ == "__main__":
    main()
