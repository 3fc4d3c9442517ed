"""The relay: admit a gateway request, send it upstream (failing over before any byte), answer whole or
streamed (see `streaming`), and settle it (see `call`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
from starlette.responses import Response

from gatehouse.core.logging import get_logger
from gatehouse.errors import (
    GatehouseError,
    UpstreamTimeout,
)
from gatehouse.gateway.call import Call, Protocol, admit, finish_shielded
from gatehouse.gateway.context import Gateway
from gatehouse.gateway.errors import (
    InvalidField,
    ModelNotFound,
    NoUsableUpstream,
    Terminated,
    UnreachableUpstream,
    UnsupportedForUpstream,
    UpstreamAuthFailed,
    UpstreamBadRequest,
    UpstreamBadResponse,
    UpstreamDisconnected,
    UpstreamFailed,
    UpstreamRateLimited,
)
from gatehouse.gateway.streaming import Relay, late_relay_response, relay_response, stream_relay, upstream_message
from gatehouse.gateway.translate.chat import (
    ollama_chat_request_to_openai,
    ollama_chat_response_to_openai,
    openai_chat_request_to_ollama,
    openai_chat_response_to_ollama,
)
from gatehouse.gateway.translate.common import TranslationError, UpstreamStreamError
from gatehouse.gateway.translate.embeddings import (
    in_encoding,
    ollama_embed_request_to_openai,
    ollama_embed_response_to_openai,
    openai_embed_request_to_ollama,
    openai_embed_response_to_ollama,
)
from gatehouse.gateway.translate.usage import usage_from_ollama, usage_from_openai
from gatehouse.gateway.validate import require_messages, validate_chat, validate_dimensions, validate_embed_input
from gatehouse.limits import quotas
from gatehouse.upstreams.config import UpstreamKind
from gatehouse.upstreams.providers import (
    CHAT_PATH,
    EMBED_PATH,
    UpstreamResponse,
    UpstreamTimedOut,
    UpstreamUnreachable,
)
from gatehouse.upstreams.upstream import Route

log = get_logger("gatehouse.gateway")
JSON = dict[str, Any]
MAX_ERROR_BODY = 4096
RETRY_UNAVAILABLE_SECONDS = 10


# --- request parsing -------------------------------------------------------------------------------


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


def resolve_routes(gateway: Gateway, model: str) -> list[Route]:
    """The usable upstreams that serve `model`; else a 404 that says where to look, or a 503 saying why none is."""
    routes = gateway.upstreams.routes(model)
    if routes:
        return routes
    every = gateway.upstreams.all_routes(model)
    if not every:
        raise ModelNotFound(
            f"The model `{model}` does not exist here: list the available ones with GET /v1/models (or /api/tags).",
            param="model",
        )
    why = "; ".join(
        f"{r.upstream.name} is {r.upstream.health.state.value}"
        + (" (set by an operator)" if r.upstream.health.override else "")
        for r in every
    )
    raise NoUsableUpstream(
        f"No upstream serving `{model}` is available now: {why}. Retry later, or ask an operator.",
        headers={"retry-after": str(RETRY_UNAVAILABLE_SECONDS)},
    )


# --- upstream errors -------------------------------------------------------------------------------


async def _error_from_status(route: Route, response: UpstreamResponse) -> GatehouseError:
    try:
        raw = (await response.read())[:MAX_ERROR_BODY]
    except (UpstreamUnreachable, UpstreamTimedOut):
        raw = b""  # the error body itself broke off; the status says enough
    finally:
        response.close()
    message = upstream_message(raw)
    name = route.provider.name
    status = response.status
    if status in (401, 403):
        return UpstreamAuthFailed(
            f"Upstream {name} refused Gatehouse's credentials ({status}): an operator must fix its api_key."
        )
    if status == 404:
        return ModelNotFound(f"Upstream {name} does not serve model `{route.model}`: {message}")
    if status == 429:
        retry = response.headers.get("retry-after")
        return UpstreamRateLimited(
            f"Upstream {name} is rate limiting: {message}",
            headers={"retry-after": retry} if retry else None,
        )
    if 400 <= status < 500:
        return UpstreamBadRequest(
            f"Upstream {name} rejected the request: {message}", status=400 if status != 413 else 413
        )
    return UpstreamFailed(f"Upstream {name} failed ({status}): {message}")


async def open_upstream(
    gateway: Gateway,
    call: Call,
    routes: list[Route],
    path_for: dict[UpstreamKind, str],
    build: Callable[[Route], JSON],
) -> tuple[Route, UpstreamResponse]:
    """Send to the first upstream that answers; fail over on connection errors, timeouts and 5xx (no byte sent
    to the client yet). Each outcome feeds that upstream's circuit breaker."""
    registry = gateway.upstreams
    last_error: GatehouseError | None = None
    for route in routes:
        upstream = route.upstream
        if not upstream.health.usable:  # went down (breaker, override) since the routes were chosen
            last_error = last_error or NoUsableUpstream(f"Upstream {upstream.name} is not available.")
            continue
        call.set_upstream(upstream.name)
        body = build(route)
        try:
            response = await route.provider.post(path_for[route.provider.kind], body, stream=call.stream)
        except UpstreamUnreachable as exc:
            # Details (host, port, errno) go to the log for operators, not to API callers.
            last_error = UnreachableUpstream(f"Upstream {upstream.name} is unreachable.")
            log.warning("upstream_unreachable", upstream=upstream.name, error=str(exc))
            registry.request_failed(upstream, str(exc))
            continue
        except UpstreamTimedOut as exc:
            last_error = UpstreamTimeout(f"Upstream {upstream.name} did not answer in time ({exc}).")
            log.warning("upstream_timeout", upstream=upstream.name, error=str(exc))
            registry.request_failed(upstream, str(exc))
            continue
        if response.status < 300:
            registry.acquire(upstream)
            call.held = upstream
            registry.request_ok(upstream)
            return route, response
        error = await _error_from_status(route, response)
        # A 404 (model not there) or a 5xx may be served by the next upstream of the chain; other 4xx would not.
        if response.status < 500 and response.status != 404:
            raise error
        if response.status >= 500:
            registry.request_failed(upstream, f"answered {response.status}")
        last_error = error
        log.warning("upstream_failed", upstream=upstream.name, status=response.status)
    raise last_error or NoUsableUpstream(f"No upstream serves `{call.model}`.")


# --- chat ------------------------------------------------------------------------------------------


def _chat_body_for(call: Call, body: JSON, route: Route) -> JSON:
    kind = route.provider.kind
    if call.protocol == "openai":
        if kind is UpstreamKind.OLLAMA:
            try:
                return openai_chat_request_to_ollama(body, model=route.model)
            except TranslationError as exc:
                raise UnsupportedForUpstream(str(exc)) from exc
        upstream_body = {**body, "model": route.model}
        if call.stream:
            # Always ask for usage; the usage chunk is dropped again if the client did not ask for it.
            upstream_body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        return upstream_body
    if kind is UpstreamKind.OLLAMA:
        return {**body, "model": route.model, "stream": call.stream}
    try:
        return ollama_chat_request_to_openai(body, model=route.model, stream=call.stream)
    except TranslationError as exc:
        raise UnsupportedForUpstream(str(exc)) from exc


def requested_completion(body: JSON, protocol: Protocol) -> int | None:
    """The completion limit the client asked for, if any."""
    if protocol == "openai":
        value = body.get("max_completion_tokens", body.get("max_tokens"))
    else:
        value = (body.get("options") or {}).get("num_predict") if isinstance(body.get("options"), dict) else None
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        name = "options.num_predict" if protocol == "ollama" else "max_tokens"
        raise InvalidField(f"`{name}` must be an integer.", param=name)
    return value if value > 0 else None  # Ollama's -1 (no limit) and -2 (fill the context)


def completion_allowance(gateway: Gateway, routes: list[Route], requested: int | None) -> int:
    """The completion tokens to reserve: the most that any route that may serve the request lets it produce
    (the client's max_tokens, the model's output cap, DEFAULT_COMPLETION_ALLOWANCE; see Route.completion_limit)."""
    default = gateway.settings.default_completion_allowance
    return max((route.completion_limit(requested, default) for route in routes), default=requested or default)


def within_route(body: JSON, protocol: Protocol, route: Route) -> JSON:
    """The body with its completion limit lowered to what this route's model can produce, when it names one (a
    failover target may be smaller than the model the reservation was sized for)."""
    current = requested_completion(body, protocol)
    if current is None:
        return body
    limit = route.completion_limit(current, current)
    return with_completion_cap(body, protocol, limit) if limit < current else body


def with_completion_cap(body: JSON, protocol: Protocol, cap: int) -> JSON:
    """The body with its completion limit lowered to `cap` (what the quota reservation covers)."""
    if protocol == "ollama":
        return {**body, "options": {**(body.get("options") or {}), "num_predict": cap}}
    key = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    return {**body, key: cap}


async def chat(gateway: Gateway, call: Call, body: JSON) -> Response:
    """Serve a chat request (OpenAI or Ollama client, any upstream), streamed or not."""
    messages = require_messages(body)
    validate_chat(body)
    call.prompt_estimate = estimate_prompt_tokens(messages)
    routes = resolve_routes(gateway, call.model)
    requested = requested_completion(body, call.protocol)
    bound = quotas.prompt_bound(
        messages, extra=body.get("tools"), image_allowance=gateway.settings.image_token_allowance
    )
    await admit(gateway, call, prompt_bound=bound, want_completion=completion_allowance(gateway, routes, requested))
    cap = call.reservation.completion_cap if call.reservation else None
    if cap is not None and (requested is None or cap < requested):
        body = with_completion_cap(body, call.protocol, cap)
    streaming = False
    try:
        opening = open_upstream(
            gateway, call, routes, CHAT_PATH, lambda r: _chat_body_for(call, within_route(body, call.protocol, r), r)
        )
        ping = gateway.settings.stream_ping_seconds
        if call.stream and ping > 0:
            # A stream whose upstream is slow to answer at all (a model loading) starts with keep-alives.
            task = asyncio.ensure_future(opening)
            try:
                await asyncio.wait({task}, timeout=ping)
            except BaseException:
                _abandon(task)
                raise
            if not task.done():
                streaming = True
                return late_relay_response(gateway, call, task, lambda route: _chat_relay(call, body, route))
            route, response = task.result()
        else:
            route, response = await opening
        if call.live is not None:
            call.live.on_terminate(response.close)
        if call.stream:
            streaming = True
            return relay_response(gateway, call, response, _chat_relay(call, body, route))
        return await _chat_whole(call, body, route, response)
    except BaseException as exc:
        call.fail(exc)
        raise
    finally:
        if not streaming:
            await finish_shielded(gateway, call)


def _chat_relay(call: Call, body: JSON, route: Route) -> Relay:
    client_wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    relay = stream_relay(call, route.provider.kind, client_wants_usage)
    relay.rename_model(route.model)
    return relay


def _abandon(task: asyncio.Future[tuple[Route, UpstreamResponse]]) -> None:
    """Cancel an upstream attempt nobody waits for any more, closing its response if it had one."""
    if not task.done():
        task.cancel()
    elif not task.cancelled() and task.exception() is None:
        task.result()[1].close()


async def _chat_whole(call: Call, body: JSON, route: Route, response: UpstreamResponse) -> Response:
    raw = await _read_whole(route, response, call)
    data = _parse_answer(route, raw)
    call.first_token_at = time.perf_counter()
    try:
        return _chat_answer(call, route, raw, data)
    except (TypeError, ValueError, AttributeError, KeyError, UpstreamStreamError) as exc:
        log.error("upstream_answer_malformed", upstream=route.provider.name, error_type=type(exc).__name__)
        raise UpstreamBadResponse(f"Upstream {route.provider.name} sent a malformed answer.") from exc


def _same_protocol(call: Call, route: Route, raw: bytes, data: JSON) -> Response:
    """Pass the upstream's bytes through, showing the model name the client asked for (an alias)."""
    if route.model == call.model:
        return Response(raw, media_type="application/json")
    return _json({**data, "model": call.model})


def _chat_answer(call: Call, route: Route, raw: bytes, data: JSON) -> Response:
    if route.provider.kind is UpstreamKind.OPENAI:
        call.set_usage(usage_from_openai(data))
        call.chunks = _completion_estimate(_openai_text(data))
        if call.protocol == "openai":
            return _same_protocol(call, route, raw, data)
        return _json(openai_chat_response_to_ollama(data, model=call.model))
    call.set_usage(usage_from_ollama(data))
    message = data.get("message")
    call.chunks = _completion_estimate(message.get("content") if isinstance(message, dict) else None)
    if call.protocol == "ollama":
        return _same_protocol(call, route, raw, data)
    return _json(
        ollama_chat_response_to_openai(data, model=call.model, request_id=call.request_id, created=int(time.time()))
    )


def _openai_text(data: JSON) -> Any:
    choices = data.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = choices[0].get("message")
        return message.get("content") if isinstance(message, dict) else None
    return None


def _completion_estimate(text: Any) -> int:
    """Completion tokens of a whole answer when the upstream reports none: about four characters a token."""
    return max(1, len(text) // 4) if isinstance(text, str) else 1


def _json(data: JSON) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


# --- embeddings ------------------------------------------------------------------------------------


def _embed_body_for(call: Call, body: JSON, route: Route) -> JSON:
    kind = route.provider.kind
    try:
        if call.protocol == "openai":
            if kind is UpstreamKind.OLLAMA:
                return openai_embed_request_to_ollama(body, model=route.model)
            return {**body, "model": route.model}
        if kind is UpstreamKind.OLLAMA:
            return {**body, "model": route.model}
        return ollama_embed_request_to_openai(body, model=route.model)
    except TranslationError as exc:
        raise UnsupportedForUpstream(str(exc)) from exc


def _embed_input_estimate(body: JSON) -> int:
    value = body.get("input", body.get("prompt", ""))
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return sum(len(i) // 3 + 1 if isinstance(i, str) else len(i) if isinstance(i, list) else 1 for i in items)


async def embeddings(gateway: Gateway, call: Call, body: JSON, *, legacy: bool = False) -> Response:
    """Serve an embeddings request (OpenAI or Ollama client, any upstream); `legacy`: Ollama's /api/embeddings,
    one prompt and one vector (the body is in /api/embed's shape by then)."""
    value = validate_embed_input(body)
    validate_dimensions(body)
    call.prompt_estimate = _embed_input_estimate(body)
    routes = resolve_routes(gateway, call.model)
    bound = quotas.embedding_bound(value)
    await admit(gateway, call, prompt_bound=bound, want_completion=0)
    try:
        route, response = await open_upstream(
            gateway, call, routes, EMBED_PATH, lambda r: _embed_body_for(call, body, r)
        )
        return await _embed_whole(call, body, route, response, legacy)
    except BaseException as exc:
        call.fail(exc)
        raise
    finally:
        await finish_shielded(gateway, call)


async def _embed_whole(call: Call, body: JSON, route: Route, response: UpstreamResponse, legacy: bool) -> Response:
    raw = await _read_whole(route, response)
    data = _parse_answer(route, raw)
    call.first_token_at = time.perf_counter()
    call.chunks = 1
    try:
        return _embed_answer(call, body, route, raw, data, legacy)
    except (TypeError, ValueError, AttributeError, KeyError, UpstreamStreamError) as exc:
        log.error("upstream_answer_malformed", upstream=route.provider.name, error_type=type(exc).__name__)
        raise UpstreamBadResponse(f"Upstream {route.provider.name} sent a malformed answer.") from exc


def _legacy_embedding(data: JSON) -> JSON:
    """Ollama's /api/embed answer as its legacy /api/embeddings one: one prompt, one vector."""
    vectors = data.get("embeddings")
    if not isinstance(vectors, list) or not vectors:
        raise ValueError("no embedding in the answer")
    return {"embedding": vectors[0]}


def _embed_answer(call: Call, body: JSON, route: Route, raw: bytes, data: JSON, legacy: bool) -> Response:
    if route.provider.kind is UpstreamKind.OPENAI:
        usage = data.get("usage")
        if isinstance(usage, dict) and "prompt_tokens" in usage:
            call.set_usage((int(usage.get("prompt_tokens") or 0), 0))
        if call.protocol == "openai":
            converted = in_encoding(data, str(body.get("encoding_format") or "float"))
            if converted is not None:
                return _json({**converted, "model": call.model})
            return _same_protocol(call, route, raw, data)
        ollama = openai_embed_response_to_ollama(data, model=call.model)
        return _json(_legacy_embedding(ollama) if legacy else ollama)
    if "prompt_eval_count" in data:
        call.set_usage((int(data.get("prompt_eval_count") or 0), 0))
    if call.protocol == "ollama":
        if legacy:
            return _json(_legacy_embedding(data))
        return _same_protocol(call, route, raw, data)
    return _json(
        ollama_embed_response_to_openai(
            data, model=call.model, encoding_format=str(body.get("encoding_format") or "float")
        )
    )


async def _read_whole(route: Route, response: UpstreamResponse, call: Call | None = None) -> bytes:
    try:
        return await response.read()
    except UpstreamTimedOut as exc:
        raise UpstreamTimeout(f"Upstream {route.provider.name} did not finish in time.") from exc
    except UpstreamUnreachable as exc:
        if call is not None and call.terminated:
            raise Terminated(call.terminated) from exc
        raise UpstreamDisconnected(f"Upstream {route.provider.name} broke off the answer: {exc}") from exc
    finally:
        response.close()


def _parse_answer(route: Route, raw: bytes) -> JSON:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UpstreamBadResponse(f"Upstream {route.provider.name} sent an answer that is not JSON.") from exc
    if not isinstance(data, dict):
        raise UpstreamBadResponse(f"Upstream {route.provider.name} sent an answer that is not a JSON object.")
    return data
