"""The relay: send one gateway request upstream (failing over before any byte), stream the answer back,
capture usage, and record the request.

Same-protocol streams pass through line by line, parsed only where usage or errors live; cross-protocol
streams go through the translators in `translate`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from starlette.responses import Response, StreamingResponse

from gatehouse.accounts.principal import Principal
from gatehouse.errors import (
    BadRequest,
    GatehouseError,
    NotFound,
    TooManyRequests,
    UpstreamError,
    UpstreamTimeout,
)
from gatehouse.gateway import translate
from gatehouse.ops.logging import get_logger
from gatehouse.runtime import Runtime
from gatehouse.upstreams.config import UpstreamKind
from gatehouse.upstreams.providers import (
    CHAT_PATH,
    EMBED_PATH,
    UpstreamResponse,
    UpstreamTimedOut,
    UpstreamUnreachable,
)
from gatehouse.upstreams.registry import Route

log = get_logger("gatehouse.gateway")
Protocol = Literal["openai", "ollama"]
JSON = dict[str, Any]
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
MAX_ERROR_BODY = 4096


@dataclass
class Call:
    """One gateway request, from admission to settlement."""

    request_id: str
    principal: Principal
    protocol: Protocol
    endpoint: Literal["chat", "embeddings"]
    model: str
    stream: bool
    started: float = field(default_factory=time.perf_counter)
    upstream: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_reported: bool = False
    chunks: int = 0
    first_token_at: float | None = None
    status_code: int = 200
    error_code: str | None = None
    prompt_estimate: int = 0
    settled: bool = False

    def set_usage(self, usage: tuple[int, int] | None) -> None:
        """Record the upstream's own count."""
        if usage is not None:
            self.prompt_tokens, self.completion_tokens = usage
            self.usage_reported = True

    def saw_token(self) -> None:
        """A content chunk went to the client."""
        self.chunks += 1
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    def fail(self, error: GatehouseError) -> None:
        """Remember how the request ended badly."""
        self.status_code = error.status
        self.error_code = error.code


def settle(runtime: Runtime, call: Call) -> None:
    """Record the request once: usage (estimated when the upstream reported none), status, latency."""
    if call.settled:
        return
    call.settled = True
    if not call.usage_reported and call.upstream is not None:
        # The upstream gave no count: the prompt estimate and one token per streamed chunk stand in.
        call.prompt_tokens = call.prompt_estimate
        call.completion_tokens = call.chunks
    now = time.perf_counter()
    principal = call.principal
    runtime.request_log.add(
        {
            "request_id": call.request_id,
            "user_id": principal.user_id,
            "key_id": principal.key_id,
            "endpoint": call.endpoint,
            "protocol": call.protocol,
            "model": call.model,
            "upstream": call.upstream,
            "stream": call.stream,
            "status_code": call.status_code,
            "error_code": call.error_code,
            "prompt_tokens": call.prompt_tokens,
            "completion_tokens": call.completion_tokens,
            "usage_reported": call.usage_reported,
            "latency_ms": round((now - call.started) * 1000, 3),
            "ttft_ms": round((call.first_token_at - call.started) * 1000, 3) if call.first_token_at else None,
        }
    )
    if principal.key_id is not None:
        runtime.request_log.key_used(principal.key_id)


# --- request parsing -------------------------------------------------------------------------------


def parse_body(raw: bytes) -> JSON:
    """The JSON object in a request body, or a 400 that says what is wrong."""
    if not raw:
        raise BadRequest("The request body is empty: send a JSON object.", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.", code="invalid_json")
    return body


def require_model(body: JSON) -> str:
    """The `model` field, which every gateway request names."""
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest(
            "Field `model` is required: a model name from GET /v1/models.", code="missing_field", param="model"
        )
    return model


def require_messages(body: JSON) -> list[JSON]:
    """The `messages` field of a chat request."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest(
            "Field `messages` is required: a non-empty list of {role, content} objects.",
            code="missing_field",
            param="messages",
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(
                f"messages[{i}] must be an object with a `role` and `content`.",
                code="invalid_message",
                param=f"messages.{i}",
            )
    return messages


def estimate_prompt_tokens(messages: list[JSON]) -> int:
    """A deliberately generous prompt estimate (about 3 characters a token, plus framing per message)."""
    chars = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(p.get("text", "")) for p in content if isinstance(p, dict))
    return chars // 3 + 4 * len(messages) + 1


def resolve_routes(runtime: Runtime, model: str) -> list[Route]:
    """The upstreams that serve `model`, or a 404 that says where to look."""
    routes = runtime.upstreams.routes(model)
    if not routes:
        raise NotFound(
            f"The model `{model}` does not exist here: list the available ones with GET /v1/models (or /api/tags).",
            code="model_not_found",
            param="model",
        )
    return routes


# --- upstream errors -------------------------------------------------------------------------------


def _upstream_message(raw: bytes) -> str:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:300].decode("utf-8", "replace").strip() or "no details"
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err)
        if err:
            return str(err)
        if "detail" in data:
            return str(data["detail"])
    return str(data)[:300]


async def _error_from_status(route: Route, response: UpstreamResponse) -> GatehouseError:
    raw = (await response.read())[:MAX_ERROR_BODY]
    response.close()
    message = _upstream_message(raw)
    name = route.provider.name
    status = response.status
    if status in (401, 403):
        return UpstreamError(
            f"Upstream {name} refused Gatehouse's credentials ({status}): an operator must fix its api_key.",
            code="upstream_auth_failed",
        )
    if status == 404:
        return NotFound(f"Upstream {name} does not serve model `{route.model}`: {message}", code="model_not_found")
    if status == 429:
        retry = response.headers.get("retry-after")
        return TooManyRequests(
            f"Upstream {name} is rate limiting: {message}",
            code="upstream_rate_limited",
            headers={"retry-after": retry} if retry else None,
        )
    if 400 <= status < 500:
        return BadRequest(
            f"Upstream {name} rejected the request: {message}",
            code="upstream_bad_request",
            status=400 if status != 413 else 413,
        )
    return UpstreamError(f"Upstream {name} failed ({status}): {message}", code="upstream_error")


async def open_upstream(
    call: Call, routes: list[Route], path_for: dict[UpstreamKind, str], build: Callable[[Route], JSON]
) -> tuple[Route, UpstreamResponse]:
    """Send to the first upstream that answers; fail over on connection errors and 5xx (no byte sent yet)."""
    last_error: GatehouseError | None = None
    for route in routes:
        call.upstream = route.provider.name
        body = build(route)
        try:
            response = await route.provider.post(path_for[route.provider.kind], body, stream=call.stream)
        except UpstreamUnreachable as exc:
            last_error = UpstreamError(
                f"Upstream {route.provider.name} is unreachable: {exc}", code="upstream_unreachable"
            )
            log.warning("upstream_unreachable", upstream=route.provider.name, error=str(exc))
            continue
        except UpstreamTimedOut as exc:
            raise UpstreamTimeout(f"Upstream {route.provider.name} did not answer in time: {exc}") from exc
        if response.status < 300:
            return route, response
        error = await _error_from_status(route, response)
        if response.status < 500:
            raise error
        last_error = error
        log.warning("upstream_failed", upstream=route.provider.name, status=response.status)
    assert last_error is not None
    raise last_error


# --- chat ------------------------------------------------------------------------------------------


def _chat_body_for(call: Call, body: JSON, route: Route) -> JSON:
    kind = route.provider.kind
    if call.protocol == "openai":
        if kind is UpstreamKind.OLLAMA:
            try:
                return translate.openai_chat_request_to_ollama(body, model=route.model)
            except translate.TranslationError as exc:
                raise BadRequest(str(exc), code="unsupported_for_upstream") from exc
        upstream_body = {**body, "model": route.model}
        if call.stream:
            # Always ask for usage; the usage chunk is dropped again if the client did not ask for it.
            upstream_body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        return upstream_body
    if kind is UpstreamKind.OLLAMA:
        return {**body, "model": route.model, "stream": call.stream}
    try:
        return translate.ollama_chat_request_to_openai(body, model=route.model, stream=call.stream)
    except translate.TranslationError as exc:
        raise BadRequest(str(exc), code="unsupported_for_upstream") from exc


async def chat(runtime: Runtime, call: Call, body: JSON) -> Response:
    """Serve a chat request (OpenAI or Ollama client, any upstream), streamed or not."""
    messages = require_messages(body)
    call.prompt_estimate = estimate_prompt_tokens(messages)
    routes = resolve_routes(runtime, call.model)
    try:
        route, response = await open_upstream(call, routes, CHAT_PATH, lambda r: _chat_body_for(call, body, r))
    except GatehouseError as exc:
        call.fail(exc)
        settle(runtime, call)
        raise
    if not call.stream:
        try:
            return await _chat_whole(call, body, route, response)
        except GatehouseError as exc:
            call.fail(exc)
            raise
        finally:
            settle(runtime, call)
    client_wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    return _relay_response(runtime, call, response, _stream_relay(call, route.provider.kind, client_wants_usage))


async def _chat_whole(call: Call, body: JSON, route: Route, response: UpstreamResponse) -> Response:
    try:
        raw = await response.read()
    except UpstreamTimedOut as exc:
        raise UpstreamTimeout(f"Upstream {route.provider.name} did not finish in time.") from exc
    except UpstreamUnreachable as exc:
        raise UpstreamError(
            f"Upstream {route.provider.name} broke off the answer: {exc}", code="upstream_disconnected"
        ) from exc
    finally:
        response.close()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(
            f"Upstream {route.provider.name} sent an answer that is not JSON.", code="upstream_bad_response"
        ) from exc
    kind = route.provider.kind
    call.first_token_at = time.perf_counter()
    if kind is UpstreamKind.OPENAI:
        call.set_usage(translate.usage_from_openai(data))
        call.chunks = 1
        if call.protocol == "openai":
            return Response(raw, media_type="application/json")
        return _json(translate.openai_chat_response_to_ollama(data, model=call.model))
    call.set_usage(translate.usage_from_ollama(data))
    call.chunks = 1
    if call.protocol == "ollama":
        return Response(raw, media_type="application/json")
    return _json(
        translate.ollama_chat_response_to_openai(
            data, model=call.model, request_id=call.request_id, created=int(time.time())
        )
    )


def _json(data: JSON) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


# --- stream relays: one line in, zero or more encoded bytes out ------------------------------------


class _Relay:
    """Turns upstream lines into client bytes for one protocol pair."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.completed = False

    def feed(self, line: bytes) -> bytes:
        raise NotImplementedError

    def finish(self) -> bytes:
        return b""

    def error(self, message: str, code: str) -> bytes:
        if self.call.protocol == "openai":
            return (
                b"data: "
                + orjson.dumps({"error": {"message": message, "type": "upstream_error", "code": code}})
                + b"\n\n"
            )
        return orjson.dumps({"error": message}) + b"\n"


def _sse_payload(line: bytes) -> bytes | None:
    if line.startswith(b"data:"):
        return line[5:].strip()
    return None


class _OpenAIPassthrough(_Relay):
    def __init__(self, call: Call, client_wants_usage: bool) -> None:
        super().__init__(call)
        self.client_wants_usage = client_wants_usage

    def feed(self, line: bytes) -> bytes:
        payload = _sse_payload(line)
        if payload is None:
            return line + b"\n\n" if line.startswith(b":") else (line + b"\n" if line else b"")
        if payload == b"[DONE]":
            return b"data: [DONE]\n\n"
        if b'"usage"' in payload or b'"error"' in payload:
            obj = orjson.loads(payload)
            if isinstance(obj, dict):
                if obj.get("error"):
                    raise translate.UpstreamStreamError(_upstream_message(payload))
                usage = translate.usage_from_openai(obj)
                if usage is not None:
                    self.call.set_usage(usage)
                    if not self.client_wants_usage and not obj.get("choices"):
                        return b""
        if b'"content"' in payload or b'"tool_calls"' in payload:
            self.call.saw_token()
        return b"data: " + payload + b"\n\n"


class _OllamaPassthrough(_Relay):
    def feed(self, line: bytes) -> bytes:
        if not line.strip():
            return b""
        if b'"done":true' in line or b'"done": true' in line or b'"error"' in line:
            obj = orjson.loads(line)
            if isinstance(obj, dict):
                if obj.get("error"):
                    raise translate.UpstreamStreamError(str(obj["error"]))
                self.call.set_usage(translate.usage_from_ollama(obj))
        else:
            self.call.saw_token()
        return line + b"\n"


class _OllamaToOpenAI(_Relay):
    def __init__(self, call: Call, client_wants_usage: bool) -> None:
        super().__init__(call)
        self.translator = translate.OllamaToOpenAIStream(
            model=call.model, request_id=call.request_id, created=int(time.time()), include_usage=client_wants_usage
        )

    def feed(self, line: bytes) -> bytes:
        if not line.strip():
            return b""
        event = orjson.loads(line)
        chunks = self.translator.feed(event)
        if not event.get("done"):
            self.call.saw_token()
        self.call.set_usage(self.translator.usage)
        return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks)

    def finish(self) -> bytes:
        return b"data: [DONE]\n\n"


class _OpenAIToOllama(_Relay):
    def __init__(self, call: Call) -> None:
        super().__init__(call)
        self.translator = translate.OpenAIToOllamaStream(model=call.model)

    def feed(self, line: bytes) -> bytes:
        payload = _sse_payload(line)
        if payload is None or payload == b"[DONE]":
            return b""
        chunk = orjson.loads(payload)
        events = self.translator.feed(chunk)
        if events:
            self.call.saw_token()
        self.call.set_usage(self.translator.usage)
        return b"".join(orjson.dumps(e) + b"\n" for e in events)

    def finish(self) -> bytes:
        events = self.translator.finish()
        self.call.set_usage(self.translator.usage)
        return b"".join(orjson.dumps(e) + b"\n" for e in events)


def _stream_relay(call: Call, upstream_kind: UpstreamKind, client_wants_usage: bool) -> _Relay:
    if call.protocol == "openai":
        if upstream_kind is UpstreamKind.OPENAI:
            return _OpenAIPassthrough(call, client_wants_usage)
        return _OllamaToOpenAI(call, client_wants_usage)
    if upstream_kind is UpstreamKind.OLLAMA:
        return _OllamaPassthrough(call)
    return _OpenAIToOllama(call)


class RelayResponse(StreamingResponse):
    """A streamed answer whose clean-up runs however the response ends, even if it never started."""

    def __init__(self, content: AsyncIterator[bytes], *, on_close: Callable[[], None], media_type: str) -> None:
        super().__init__(content, media_type=media_type, headers=SSE_HEADERS)
        self._on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


def _relay_response(runtime: Runtime, call: Call, response: UpstreamResponse, relay: _Relay) -> Response:
    def on_close() -> None:
        # Starlette cancels the body iterator when the client disconnects; closing aborts the upstream.
        if not relay.completed and call.error_code is None:
            call.status_code, call.error_code = 499, "client_disconnected"
        response.close()
        settle(runtime, call)

    media = "text/event-stream" if call.protocol == "openai" else "application/x-ndjson"
    return RelayResponse(_relay_stream(call, response, relay), on_close=on_close, media_type=media)


async def _relay_stream(call: Call, response: UpstreamResponse, relay: _Relay) -> AsyncIterator[bytes]:
    """Client bytes for each upstream line; a mid-stream failure ends with an error event in the client's shape."""
    error: GatehouseError
    try:
        async for line in response.lines():
            out = relay.feed(line)
            if out:
                yield out
        tail = relay.finish()
        if tail:
            yield tail
        relay.completed = True
        return
    except translate.UpstreamStreamError as exc:
        error = UpstreamError(f"Upstream {call.upstream} reported an error: {exc}", code="upstream_error")
    except UpstreamTimedOut:
        error = UpstreamTimeout(f"Upstream {call.upstream} went silent mid-answer (read timeout).")
    except (UpstreamUnreachable, orjson.JSONDecodeError) as exc:
        error = UpstreamError(f"Upstream {call.upstream} broke off the answer: {exc}", code="upstream_disconnected")
    call.fail(error)
    yield relay.error(error.message, error.code)
    relay.completed = True


# --- embeddings ------------------------------------------------------------------------------------


def _embed_body_for(call: Call, body: JSON, route: Route) -> JSON:
    kind = route.provider.kind
    try:
        if call.protocol == "openai":
            if kind is UpstreamKind.OLLAMA:
                return translate.openai_embed_request_to_ollama(body, model=route.model)
            return {**body, "model": route.model}
        if kind is UpstreamKind.OLLAMA:
            return {**body, "model": route.model}
        return translate.ollama_embed_request_to_openai(body, model=route.model)
    except translate.TranslationError as exc:
        raise BadRequest(str(exc), code="unsupported_for_upstream") from exc


def _embed_input_estimate(body: JSON) -> int:
    value = body.get("input", body.get("prompt", ""))
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return sum(len(i) // 3 + 1 if isinstance(i, str) else len(i) if isinstance(i, list) else 1 for i in items)


async def embeddings(runtime: Runtime, call: Call, body: JSON) -> Response:
    """Serve an embeddings request (OpenAI or Ollama client, any upstream)."""
    if "input" not in body and not (call.protocol == "ollama" and "prompt" in body):
        raise BadRequest(
            "Field `input` is required: a string or a list of strings.", code="missing_field", param="input"
        )
    call.prompt_estimate = _embed_input_estimate(body)
    routes = resolve_routes(runtime, call.model)
    try:
        route, response = await open_upstream(call, routes, EMBED_PATH, lambda r: _embed_body_for(call, body, r))
        try:
            raw = await response.read()
        except UpstreamTimedOut as exc:
            raise UpstreamTimeout(f"Upstream {route.provider.name} did not finish in time.") from exc
        except UpstreamUnreachable as exc:
            raise UpstreamError(
                f"Upstream {route.provider.name} broke off the answer: {exc}", code="upstream_disconnected"
            ) from exc
        finally:
            response.close()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(
                f"Upstream {route.provider.name} sent an answer that is not JSON.", code="upstream_bad_response"
            ) from exc
        call.first_token_at = time.perf_counter()
        if route.provider.kind is UpstreamKind.OPENAI:
            usage = data.get("usage") if isinstance(data, dict) else None
            if isinstance(usage, dict) and "prompt_tokens" in usage:
                call.set_usage((int(usage.get("prompt_tokens") or 0), 0))
            if call.protocol == "openai":
                return Response(raw, media_type="application/json")
            return _json(translate.openai_embed_response_to_ollama(data, model=call.model))
        if isinstance(data, dict) and "prompt_eval_count" in data:
            call.set_usage((int(data.get("prompt_eval_count") or 0), 0))
        if call.protocol == "ollama":
            return Response(raw, media_type="application/json")
        return _json(
            translate.ollama_embed_response_to_openai(
                data, model=call.model, encoding_format=str(body.get("encoding_format") or "float")
            )
        )
    except GatehouseError as exc:
        call.fail(exc)
        raise
    finally:
        settle(runtime, call)
