"""Provider adapters: how Gatehouse talks to one upstream in its native protocol.

An HTTP provider (Ollama's API or any OpenAI-compatible server) and the built-in demo, behind one
small interface: `post(path, body)` returns an UpstreamResponse whose lines (SSE or NDJSON) or whole
body the relay reads.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from gatehouse.upstreams.config import UpstreamConfig, UpstreamKind

JSON = dict[str, Any]
# Paths per native protocol.
CHAT_PATH = {UpstreamKind.OPENAI: "/v1/chat/completions", UpstreamKind.OLLAMA: "/api/chat"}
EMBED_PATH = {UpstreamKind.OPENAI: "/v1/embeddings", UpstreamKind.OLLAMA: "/api/embed"}
COMPLETIONS_PATH = "/v1/completions"
MODELS_PATH = {
    UpstreamKind.OPENAI: "/v1/models",
    UpstreamKind.OLLAMA: "/api/tags",
    UpstreamKind.ANTHROPIC: "/v1/models",
}
MODEL_PAGES = 20  # an Anthropic model list is paged: at most this many pages are read
ANTHROPIC_PAGE = "1000"  # models a page (Anthropic's most)
MAX_LINE_BYTES = 8 * 1024 * 1024  # of a response head's lines
MAX_ANSWER_BYTES = 16 * 1024 * 1024  # UPSTREAM_MAX_ANSWER_BYTES's default
READ_BUFFER_BYTES = 256 * 1024


class UpstreamUnreachable(Exception):
    """Could not connect, or the connection broke before a response head arrived."""


class UpstreamTimedOut(Exception):
    """The upstream did not answer within its read timeout."""


class UpstreamTooLarge(Exception):
    """A whole answer, or one line of a stream, is larger than UPSTREAM_MAX_ANSWER_BYTES."""


class UpstreamResponse:
    """A response head plus a body to read whole or line by line."""

    status: int
    headers: dict[str, str]

    async def read(self) -> bytes:
        """The whole body."""
        raise NotImplementedError

    def lines(self, idle: float = 0) -> AsyncIterator[list[bytes] | None]:
        """The body as lines, without their line ends; empty lines included (SSE needs them), in batches: the
        lines that arrived together, so the relay writes them to its client at once. With `idle`, a None each
        time the upstream stayed silent that many seconds (the relay sends a keep-alive)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release (or abort) the underlying connection."""


def _salvage(content: aiohttp.StreamReader) -> bytes:
    """What a broken response had buffered (aiohttp's public reads raise instead of returning it)."""
    read = getattr(content, "_read_nowait", None)
    try:
        return bytes(read(-1)) if read is not None and getattr(content, "_buffer", None) else b""
    except Exception:
        return b""


class HttpUpstreamResponse(UpstreamResponse):
    def __init__(self, response: aiohttp.ClientResponse, max_bytes: int = MAX_ANSWER_BYTES) -> None:
        self._response = response
        self.status = response.status
        self.headers = {k.lower(): v for k, v in response.headers.items()}
        self.max_bytes = max_bytes

    def _too_large(self, what: str) -> UpstreamTooLarge:
        return UpstreamTooLarge(f"{what} larger than {self.max_bytes} bytes (UPSTREAM_MAX_ANSWER_BYTES)")

    async def read(self) -> bytes:
        limit = self.max_bytes
        try:
            length = self._response.content_length
            if length is not None and length > limit:
                raise self._too_large("an answer")
            content = self._response.content
            chunks: list[bytes] = []
            size = 0
            while chunk := await content.readany():
                size += len(chunk)
                if size > limit:
                    raise self._too_large("an answer")
                chunks.append(chunk)
            return b"".join(chunks)
        except TimeoutError as exc:
            raise UpstreamTimedOut(str(exc) or "read timeout") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnreachable(str(exc) or type(exc).__name__) from exc

    async def lines(self, idle: float = 0) -> AsyncIterator[list[bytes] | None]:
        # readany() (not readline()) because it can be cancelled without losing data: the idle timer may
        # interrupt it. It returns whatever arrived, often several lines at once, split here.
        content = self._response.content
        pending = b""
        broken: aiohttp.ClientPayloadError | None = None
        try:
            while True:
                if broken is not None:
                    raise broken
                try:
                    if idle:
                        timer = asyncio.timeout(idle)
                        try:
                            async with timer:
                                chunk = await content.readany()
                        except TimeoutError:
                            if not timer.expired():
                                raise  # aiohttp's own read timeout (UPSTREAM_READ_TIMEOUT)
                            yield None
                            continue
                    else:
                        chunk = await content.readany()
                except aiohttp.ClientPayloadError as exc:
                    # The connection broke. aiohttp raises at once, even with whole lines still buffered: the
                    # client gets those (and pays for them) before the error.
                    broken, chunk = exc, _salvage(content)
                    if not chunk:
                        raise
                if not chunk:  # the end (a truncated body raises ClientPayloadError instead)
                    if pending:
                        yield [pending.removesuffix(b"\r")]
                    return
                if b"\n" not in chunk:
                    pending += chunk
                    if len(pending) > self.max_bytes:
                        raise self._too_large("a stream line")
                    continue
                parts = (pending + chunk if pending else chunk).split(b"\n")
                pending = parts.pop()
                large = next((i for i, part in enumerate(parts) if len(part) > self.max_bytes), None)
                if large is not None:
                    del parts[large:]  # the lines before the large one still reach the client
                if parts:
                    yield [part.removesuffix(b"\r") for part in parts]
                if large is not None or len(pending) > self.max_bytes:
                    raise self._too_large("a stream line")
        except TimeoutError as exc:
            raise UpstreamTimedOut(str(exc) or "read timeout") from exc
        except aiohttp.ClientPayloadError as exc:
            raise UpstreamUnreachable("the upstream closed the connection mid-response") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnreachable(str(exc) or type(exc).__name__) from exc

    def close(self) -> None:
        self._response.close()


class Provider:
    """One upstream's adapter."""

    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self.name = config.name
        self.kind = config.kind
        # (most output tokens, context length) of the models whose list entry says (see `model_limits`).
        self.model_limits: dict[str, tuple[int | None, int | None]] = {}

    async def start(self) -> None:
        """Open connection pools."""

    async def close(self) -> None:
        """Close connection pools."""

    async def post(
        self, path: str, body: JSON, *, stream: bool, headers: dict[str, str] | None = None
    ) -> UpstreamResponse:
        """Send a request in the native protocol; returns once the response head arrived. `headers`: the
        client's own protocol headers passed on to an upstream of its protocol (anthropic-beta)."""
        raise NotImplementedError

    async def list_models(self, within: float = 10.0) -> list[str]:
        """The model names the upstream serves (discovery, and the health probe)."""
        raise NotImplementedError


class HttpProvider(Provider):
    """Ollama's native API or an OpenAI-compatible server, over one keep-alive pool."""

    def __init__(
        self,
        config: UpstreamConfig,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        super().__init__(config)
        self.connect_timeout = config.connect_timeout or connect_timeout
        self.read_timeout = config.read_timeout or read_timeout
        self.max_answer_bytes = max_answer_bytes
        self._session: aiohttp.ClientSession | None = None
        self._headers = {"content-type": "application/json"}
        key = config.resolved_api_key()
        if config.kind is UpstreamKind.ANTHROPIC:
            self._headers["anthropic-version"] = config.anthropic_version
            if key:
                self._headers["x-api-key"] = key
        elif key:
            self._headers["authorization"] = f"Bearer {key}"
        self._headers.update(config.headers)

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.config.max_connections, keepalive_timeout=60, enable_cleanup_closed=True
        )
        # sock_connect bounds the TCP (and TLS) connect; `connect` also covers waiting for a free pooled
        # connection when all max_connections are busy, so it gets the read timeout's patience.
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.connect_timeout, connect=self.read_timeout, sock_read=self.read_timeout
        )
        self._session = aiohttp.ClientSession(
            base_url=self.config.base_url + "/",
            connector=connector,
            timeout=timeout,
            headers=self._headers,
            # What is read ahead of the relay (aiohttp pauses the socket at twice this): per stream, what the server
            # holds for a client that reads slowly or not at all. Lines longer than this are fine (lines() joins).
            read_bufsize=READ_BUFFER_BYTES,
            max_line_size=MAX_LINE_BYTES,
            max_field_size=MAX_LINE_BYTES,
            auto_decompress=True,
            json_serialize=lambda obj: orjson.dumps(obj).decode(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError(f"upstream {self.name} used before start()")
        return self._session

    async def post(
        self, path: str, body: JSON, *, stream: bool, headers: dict[str, str] | None = None
    ) -> UpstreamResponse:
        started = time.monotonic()
        try:
            try:
                response = await self.session.post(path.lstrip("/"), data=orjson.dumps(body), headers=headers)
            except aiohttp.SocketTimeoutError:
                if time.monotonic() - started >= self.read_timeout / 2:
                    raise
                # A read timeout long before the read timeout: a pooled connection whose timer outlived its last
                # answer (aiohttp re-arms it when a stream that was held back by a slow client resumes after its
                # end) and fired while it was idle. That connection is closed now; the request goes on a fresh one.
                response = await self.session.post(path.lstrip("/"), data=orjson.dumps(body), headers=headers)
        except aiohttp.ConnectionTimeoutError as exc:
            # No connection within the connect timeout: nothing was sent, so another upstream may take it.
            raise UpstreamUnreachable(f"no connection within {self.connect_timeout} s") from exc
        except TimeoutError as exc:
            raise UpstreamTimedOut(f"no answer within {self.read_timeout} s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnreachable(f"{type(exc).__name__}: {exc}") from exc
        return HttpUpstreamResponse(response, self.max_answer_bytes)

    async def list_models(self, within: float = 10.0) -> list[str]:
        if self.kind is UpstreamKind.ANTHROPIC:
            return await self._anthropic_models(within)
        data = await self._get_json(MODELS_PATH[self.kind].lstrip("/"), {}, within)
        if self.kind is UpstreamKind.OLLAMA:
            return [str(m.get("name") or m.get("model")) for m in data.get("models", [])]
        entries = [m for m in data.get("data", []) if isinstance(m, dict) and "id" in m]
        self.model_limits = {str(m["id"]): limits for m in entries if any(limits := model_limits(m))}
        return [str(m["id"]) for m in entries]

    async def _anthropic_models(self, within: float) -> list[str]:
        """Anthropic's model list, page by page (`has_more`, `last_id` -> `after_id`); its entries' `max_tokens`
        and `max_input_tokens` are the models' output cap and context length."""
        names: list[str] = []
        after: str | None = None
        deadline = asyncio.get_running_loop().time() + within
        for _ in range(MODEL_PAGES):
            params = {"limit": ANTHROPIC_PAGE, **({"after_id": after} if after else {})}
            left = max(0.1, deadline - asyncio.get_running_loop().time())
            data = await self._get_json("v1/models", params, left)
            entries = [m for m in data.get("data", []) if isinstance(m, dict) and "id" in m]
            for entry in entries:
                names.append(str(entry["id"]))
                output, context = _first_count(entry.get("max_tokens")), _first_count(entry.get("max_input_tokens"))
                if output or context:
                    self.model_limits[str(entry["id"])] = (output, context)
            after = data.get("last_id")
            if not data.get("has_more") or not after:
                break
        return names

    async def _get_json(self, path: str, params: dict[str, str], within: float) -> JSON:
        try:
            timeout = aiohttp.ClientTimeout(total=within)
            async with self.session.get(path, params=params, timeout=timeout) as resp:
                if resp.status in (401, 403):
                    raise UpstreamUnreachable(f"{self.name} refused Gatehouse's credentials ({resp.status})")
                if resp.status != 200:
                    raise UpstreamUnreachable(f"{self.name} answered {resp.status} to /{path}")
                data = orjson.loads(await resp.read())
        except TimeoutError as exc:
            raise UpstreamTimedOut(f"{self.name} did not list its models within {within:g} s") from exc
        except (aiohttp.ClientError, OSError, orjson.JSONDecodeError) as exc:
            raise UpstreamUnreachable(f"cannot list models of {self.name}: {exc or type(exc).__name__}") from exc
        if not isinstance(data, dict):
            raise UpstreamUnreachable(f"{self.name} answered /{path} with something other than a JSON object")
        return data


def model_limits(entry: JSON) -> tuple[int | None, int | None]:
    """(most output tokens, context length) of a model, from its entry in an OpenAI-compatible model list, where
    the server says: OpenRouter's `top_provider.max_completion_tokens` and `context_length`, vLLM's `max_model_len`,
    LM Studio's `max_context_length`, llama.cpp's `meta.n_ctx_train`."""
    top = entry.get("top_provider")
    meta = entry.get("meta")
    output = _first_count(top.get("max_completion_tokens") if isinstance(top, dict) else None)
    context = _first_count(
        entry.get("context_length"),
        entry.get("max_model_len"),
        entry.get("max_context_length"),
        meta.get("n_ctx_train") if isinstance(meta, dict) else None,
    )
    return output, context


def _first_count(*values: Any) -> int | None:
    return next((v for v in values if isinstance(v, int) and not isinstance(v, bool) and v > 0), None)


# --- the built-in demo ---------------------------------------------------------------------------

DEMO_MODEL = "demo"
DEMO_EMBED_MODEL = "demo-embed"
DEMO_LABEL = "gatehouse-demo (built-in demo, not a real model)"
DEMO_TOKEN_SECONDS = 0.02


def demo_reply(messages: list[JSON]) -> list[str]:
    """The demo's deterministic answer, as tokens: it says what it is and echoes the question."""
    last = ""
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            last = str(content or "")
            break
    words = last.split()
    echoed = " ".join(words[:24]) + (" ..." if len(words) > 24 else "")
    text = (
        f"This is the Gatehouse demo model, not a real AI. You said: \u201c{echoed}\u201d. "
        "Point OLLAMA_BASE_URL or OPENAI_BASE_URL (or GATEHOUSE_CONFIG) at a real upstream to chat with "
        "a model."
    )
    return [w + " " for w in text.split(" ")]


def _count_prompt_tokens(messages: list[JSON]) -> int:
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        total += len(str(content or "").split()) + 4
    return total


def demo_embedding(text: str, dimensions: int = 16) -> list[float]:
    """A deterministic unit-ish vector derived from the text's hash."""
    digest = hashlib.sha256(text.encode()).digest()
    return [round((digest[i % len(digest)] - 127.5) / 127.5, 6) for i in range(dimensions)]


class _DemoResponse(UpstreamResponse):
    def __init__(self, status: int, body: bytes = b"", lines: AsyncIterator[bytes] | None = None) -> None:
        self.status = status
        self.headers = {"content-type": "application/json"}
        self._body = body
        self._lines = lines

    async def read(self) -> bytes:
        return self._body

    async def lines(self, idle: float = 0) -> AsyncIterator[list[bytes] | None]:
        # The demo is never silent for long (a token every DEMO_TOKEN_SECONDS): no keep-alives needed.
        if self._lines is None:
            yield self._body.splitlines()
            return
        async for line in self._lines:
            yield [line]


class DemoProvider(Provider):
    """A built-in OpenAI-protocol upstream with deterministic, streamed replies: for trying Gatehouse."""

    def __init__(self, config: UpstreamConfig, *, token_seconds: float = DEMO_TOKEN_SECONDS) -> None:
        super().__init__(config)
        self.kind = UpstreamKind.OPENAI  # it speaks the OpenAI protocol, in-process
        self.token_seconds = token_seconds

    async def list_models(self, within: float = 10.0) -> list[str]:
        return [DEMO_MODEL, DEMO_EMBED_MODEL]

    async def post(
        self, path: str, body: JSON, *, stream: bool, headers: dict[str, str] | None = None
    ) -> UpstreamResponse:
        if path == CHAT_PATH[UpstreamKind.OPENAI]:
            return self._chat(body, stream=stream)
        if path == COMPLETIONS_PATH:
            return self._completion(body, stream=stream)
        if path == EMBED_PATH[UpstreamKind.OPENAI]:
            return self._embed(body)
        return _DemoResponse(404, orjson.dumps({"error": {"message": f"demo has no {path}"}}))

    def _chat(self, body: JSON, *, stream: bool) -> UpstreamResponse:
        messages = body.get("messages") or []
        tokens = demo_reply(messages)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        finish = "stop"
        if isinstance(limit, int) and 0 < limit < len(tokens):
            tokens, finish = tokens[:limit], "length"
        usage = {
            "prompt_tokens": _count_prompt_tokens(messages),
            "completion_tokens": len(tokens),
            "total_tokens": _count_prompt_tokens(messages) + len(tokens),
        }
        created = int(time.time())
        cid = "chatcmpl-demo-" + hashlib.sha256(orjson.dumps(messages)).hexdigest()[:12]
        model = body.get("model", DEMO_MODEL)
        if not stream:
            return _DemoResponse(
                200,
                orjson.dumps(
                    {
                        "id": cid,
                        "object": "chat.completion",
                        "created": created,
                        "model": model,
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": "".join(tokens).rstrip()},
                                "finish_reason": finish,
                            }
                        ],
                        "usage": usage,
                        "system_fingerprint": "gatehouse-demo",
                    }
                ),
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return _DemoResponse(200, lines=self._stream(cid, created, model, tokens, finish, usage, include_usage))

    async def _stream(
        self, cid: str, created: int, model: str, tokens: list[str], finish: str, usage: JSON, include_usage: bool
    ) -> AsyncIterator[bytes]:
        def chunk(delta: JSON, finish_reason: str | None = None) -> bytes:
            obj: JSON = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }
            if include_usage:
                obj["usage"] = None
            return b"data: " + orjson.dumps(obj)

        yield chunk({"role": "assistant", "content": ""})
        yield b""
        for i, token in enumerate(tokens):
            if self.token_seconds:
                await asyncio.sleep(self.token_seconds)
            yield chunk({"content": token if i < len(tokens) - 1 else token.rstrip()})
            yield b""
        yield chunk({}, finish)
        yield b""
        if include_usage:
            yield b"data: " + orjson.dumps(
                {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
            )
            yield b""
        yield b"data: [DONE]"
        yield b""

    def _completion(self, body: JSON, *, stream: bool) -> UpstreamResponse:
        """Legacy completions: the same deterministic reply, continuing the prompt."""
        prompt = body.get("prompt")
        messages = [{"role": "user", "content": prompt if isinstance(prompt, str) else ""}]
        tokens = demo_reply(messages)
        limit = body.get("max_tokens", 16)  # OpenAI's default for legacy completions
        finish = "stop"
        if isinstance(limit, int) and 0 < limit < len(tokens):
            tokens, finish = tokens[:limit], "length"
        prompt_tokens = _count_prompt_tokens(messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(tokens),
            "total_tokens": prompt_tokens + len(tokens),
        }
        head = {
            "id": "cmpl-demo-" + hashlib.sha256(orjson.dumps(messages)).hexdigest()[:12],
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model", DEMO_MODEL),
        }
        if not stream:
            choice = {"text": "".join(tokens).rstrip(), "index": 0, "logprobs": None, "finish_reason": finish}
            return _DemoResponse(200, orjson.dumps({**head, "choices": [choice], "usage": usage}))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def lines() -> AsyncIterator[bytes]:
            for i, token in enumerate(tokens):
                if self.token_seconds:
                    await asyncio.sleep(self.token_seconds)
                text = token if i < len(tokens) - 1 else token.rstrip()
                choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": None}
                yield b"data: " + orjson.dumps({**head, "choices": [choice]})
                yield b""
            last = {"text": "", "index": 0, "logprobs": None, "finish_reason": finish}
            yield b"data: " + orjson.dumps({**head, "choices": [last]})
            yield b""
            if include_usage:
                yield b"data: " + orjson.dumps({**head, "choices": [], "usage": usage})
                yield b""
            yield b"data: [DONE]"
            yield b""

        return _DemoResponse(200, lines=lines())

    def _embed(self, body: JSON) -> UpstreamResponse:
        raw = body.get("input", "")
        inputs = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, list) else [raw]
        if not all(isinstance(i, str) for i in inputs):
            return _DemoResponse(400, orjson.dumps({"error": {"message": "demo embeddings take text input"}}))
        tokens = sum(len(i.split()) for i in inputs)
        return _DemoResponse(
            200,
            orjson.dumps(
                {
                    "object": "list",
                    "model": body.get("model", DEMO_EMBED_MODEL),
                    "data": [
                        {"object": "embedding", "index": i, "embedding": demo_embedding(text)}
                        for i, text in enumerate(inputs)
                    ],
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                }
            ),
        )


def create_provider(
    config: UpstreamConfig, *, connect_timeout: float, read_timeout: float, max_answer_bytes: int = MAX_ANSWER_BYTES
) -> Provider:
    """The adapter for an upstream's kind."""
    if config.kind is UpstreamKind.DEMO:
        return DemoProvider(config)
    return HttpProvider(
        config, connect_timeout=connect_timeout, read_timeout=read_timeout, max_answer_bytes=max_answer_bytes
    )
