"""The relay: admit a gateway request, send it upstream (failing over before any byte), answer whole or
streamed (see `streaming`), and settle it (see `call`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from starlette.responses import Response

from gatehouse.core.logging import get_logger
from gatehouse.core.tracing import AttributeValue
from gatehouse.errors import (
    GatehouseError,
    UpstreamTimeout,
)
from gatehouse.gateway import access, ir
from gatehouse.gateway.call import Call, admit, finish_shielded, traced_admit
from gatehouse.gateway.context import Gateway
from gatehouse.gateway.errors import (
    ModelNotFound,
    NoUsableUpstream,
    UnreachableUpstream,
    UnsupportedForUpstream,
    UpstreamAuthFailed,
    UpstreamBadRequest,
    UpstreamBadResponse,
    UpstreamDisconnected,
    UpstreamFailed,
    UpstreamRateLimited,
)
from gatehouse.gateway.streaming import (
    Encoder,
    Relay,
    TranslatingRelay,
    late_relay_response,
    relay_response,
    upstream_message,
)
from gatehouse.gateway.surfaces.base import Surface
from gatehouse.gateway.surfaces.ollama import OllamaChatSurface
from gatehouse.gateway.surfaces.openai import ChatSurface
from gatehouse.gateway.translate import upstream
from gatehouse.gateway.translate.common import TranslationError, UpstreamStreamError
from gatehouse.gateway.translate.embeddings import (
    in_encoding,
    ollama_embed_request_to_openai,
    ollama_embed_response_to_openai,
    openai_embed_request_to_ollama,
    openai_embed_response_to_ollama,
)
from gatehouse.gateway.validate import require_messages, validate_chat, validate_dimensions, validate_embed_input
from gatehouse.limits import quotas
from gatehouse.limits.ratelimit import user_identity
from gatehouse.upstreams.config import UpstreamKind
from gatehouse.upstreams.providers import (
    EMBED_PATH,
    UpstreamResponse,
    UpstreamTimedOut,
    UpstreamTooLarge,
    UpstreamUnreachable,
)
from gatehouse.upstreams.registry import UpstreamRegistry
from gatehouse.upstreams.upstream import Route

log = get_logger("gatehouse.gateway")
JSON = dict[str, Any]
MAX_ERROR_BODY = 4096
RETRY_UNAVAILABLE_SECONDS = 10


# --- request parsing -------------------------------------------------------------------------------


def resolve_routes(gateway: Gateway, call: Call) -> list[Route]:
    """The usable upstreams that serve the call's model and that its caller may use; else a 404 that says where to
    look, a 403 when the caller may not use the model, or a 503 saying why no upstream is usable."""
    model, principal = call.model, call.principal
    routes = gateway.upstreams.routes(model)
    if routes:
        routes = access.permitted(gateway.access, principal, model, routes)
        if routes:
            return routes
    every = gateway.upstreams.all_routes(model)
    if not every:
        raise ModelNotFound(
            f"The model `{model}` does not exist here: list the available ones with GET /v1/models (or /api/tags).",
            param="model",
        )
    allowed = access.permitted(gateway.access, principal, model, every)
    if not allowed:
        raise access.refusal(gateway.access, principal, model, every)
    why = "; ".join(
        f"{r.upstream.name} is {r.upstream.health.state.value}"
        + (" (set by an operator)" if r.upstream.health.override else "")
        for r in allowed
    )
    raise NoUsableUpstream(
        f"No upstream serving `{model}` is available now: {why}. Retry later, or ask an operator.",
        headers={"retry-after": str(RETRY_UNAVAILABLE_SECONDS)},
    )


# --- upstream errors -------------------------------------------------------------------------------


async def _error_from_status(route: Route, response: UpstreamResponse) -> GatehouseError:
    try:
        raw = (await response.read())[:MAX_ERROR_BODY]
    except (UpstreamUnreachable, UpstreamTimedOut, UpstreamTooLarge):
        raw = b""  # the error body itself broke off (or is absurd); the status says enough
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


async def _post_counted(
    registry: UpstreamRegistry,
    route: Route,
    path: str,
    body: JSON,
    *,
    stream: bool,
    headers: dict[str, str] | None,
) -> UpstreamResponse:
    """Send, counted in flight from the moment it is sent (not from the answer's head): a reload that retires the
    upstream meanwhile keeps its pool open until the request is over. Released here when sending fails; a caller
    given an answer releases it (or hands it to the call, which does)."""
    registry.acquire(route.upstream)
    try:
        return await route.provider.post(path, body, stream=stream, headers=headers)
    except BaseException:
        registry.release(route.upstream)
        raise


async def open_upstream(
    gateway: Gateway,
    call: Call,
    routes: list[Route],
    build: Callable[[Route], tuple[str, JSON]],
    *,
    headers: dict[str, str] | None = None,
) -> tuple[Route, UpstreamResponse]:
    """Send to the first upstream that answers; fail over on connection errors, timeouts, 404, 429 and 5xx (no byte
    sent to the client yet). Each outcome feeds that upstream's circuit breaker (a 429 does not: it is busy, not
    broken)."""
    registry = gateway.upstreams
    tracer = gateway.tracer
    last_error: GatehouseError | None = None
    for route in routes:
        if route.upstream.retired:
            # Reconfigured since the routes were chosen (a reload with a new key, an edit): its successor serves,
            # and the old pool, which may already be closing, is not used.
            successor = registry.get(route.upstream.name)
            if successor is None or successor.retired:
                continue
            route = Route(successor, route.model, route.max_output)
        upstream = route.upstream
        if not upstream.health.usable:  # went down (breaker, override) since the routes were chosen
            last_error = last_error or NoUsableUpstream(f"Upstream {upstream.name} is not available.")
            continue
        call.set_upstream(upstream.name)
        path, body = build(route)
        native_headers = headers if headers and route.provider.kind is UpstreamKind.ANTHROPIC else None
        span = None
        if tracer is not None:
            span = tracer.client_span(*upstream_span(call, route, path))
            native_headers = {**native_headers, **span.headers} if native_headers else span.headers
        try:
            response = await _post_counted(registry, route, path, body, stream=call.stream, headers=native_headers)
        except UpstreamUnreachable as exc:
            # Details (host, port, errno) go to the log for operators, not to API callers.
            last_error = UnreachableUpstream(f"Upstream {upstream.name} is unreachable.")
            log.warning("upstream_unreachable", upstream=upstream.name, error=str(exc))
            registry.request_failed(upstream, str(exc))
            if span is not None:
                span.end(last_error.code)
            continue
        except UpstreamTimedOut as exc:
            last_error = UpstreamTimeout(f"Upstream {upstream.name} did not answer in time ({exc}).")
            log.warning("upstream_timeout", upstream=upstream.name, error=str(exc))
            registry.request_failed(upstream, str(exc))
            if span is not None:
                span.end(last_error.code)
            continue
        except BaseException:
            if span is not None:
                span.end("cancelled")  # the client left, or an operator terminated it, before the head arrived
            raise
        if span is not None:
            span.set_attribute("http.response.status_code", response.status)
            span.add_event("first_byte")  # the response head arrived: the upstream's time to first byte
        if response.status < 300:
            call.held = upstream
            call.upstream_span = span
            registry.request_ok(upstream)
            return route, response
        if span is not None:
            span.end(str(response.status))
        try:
            error = await _error_from_status(route, response)
        finally:
            registry.release(upstream)  # counted by _post_counted until its answer was read
        # A 404 (model not there), a 429 (that upstream's own limit: its Retry-After is passed on when no other
        # upstream takes the request) or a 5xx may be served by the next upstream of the chain; other 4xx would not.
        if response.status < 500 and response.status not in (404, 429):
            raise error
        if response.status >= 500:
            registry.request_failed(upstream, f"answered {response.status}")
        last_error = error
        log.warning("upstream_failed", upstream=upstream.name, status=response.status)
    raise last_error or NoUsableUpstream(f"No upstream serves `{call.model}`.")


def upstream_span(call: Call, route: Route, path: str) -> tuple[str, dict[str, AttributeValue]]:
    """The name and attributes of an upstream call's client span (GenAI and HTTP client conventions): the
    operation, the provider's protocol, the upstream's model and address; never the body, never the key."""
    operation = "embeddings" if call.endpoint == "embeddings" else "chat"
    base = urlsplit(route.provider.config.base_url)
    attributes: dict[str, AttributeValue] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": route.provider.kind.value,
        "gen_ai.request.model": route.model,
        "gatehouse.upstream": route.upstream.name,
    }
    if base.hostname:  # an HTTP upstream (the demo runs in-process)
        attributes["http.request.method"] = "POST"
        # Without any user:password@ the base URL may carry.
        netloc = base.netloc.rpartition("@")[2]
        attributes["url.full"] = urlunsplit((base.scheme, netloc, base.path.rstrip("/") + path, "", ""))
        attributes["server.address"] = base.hostname
        attributes["server.port"] = base.port or (443 if base.scheme == "https" else 80)
    if operation == "chat":
        attributes["gen_ai.request.stream"] = call.stream
    return f"{operation} {route.model}", attributes


# --- generation (chat, Responses, Messages, completions, generate) ---------------------------------

DROPPED_HEADER = "x-gatehouse-dropped"


def completion_allowance(gateway: Gateway, routes: list[Route], requested: int | None) -> int:
    """The completion tokens to reserve: the most that any route that may serve the request lets it produce
    (the client's max_tokens, the model's output cap, DEFAULT_COMPLETION_ALLOWANCE; see Route.completion_limit)."""
    default = gateway.settings.default_completion_allowance
    return max((route.completion_limit(requested, default) for route in routes), default=requested or default)


class _Plan:
    """What is sent to each route, and what was dropped on the way (the answer's header names it)."""

    def __init__(self, gateway: Gateway, call: Call, surface: Surface, limit: int | None) -> None:
        self.gateway = gateway
        self.call = call
        self.surface = surface
        self.limit = limit  # the completion limit the reservation covers (None: the client's own)
        self.dropped: list[str] = []

    def route_limit(self, route: Route) -> int | None:
        """The completion limit to send this route: the reserved one (else the client's), lowered to what its model
        can produce; None when neither says (the upstream's own default then applies, as without Gatehouse)."""
        wanted = self.limit if self.limit is not None else self.surface.requested()
        return route.completion_limit(wanted, wanted) if wanted is not None else None

    def build(self, route: Route) -> tuple[str, JSON]:
        kind = route.provider.kind
        surface = self.surface
        limit = self.route_limit(route)
        if surface.is_native(route):
            return surface.native_path, surface.native_body(route.model, limit)
        if limit is None and kind is UpstreamKind.ANTHROPIC:  # max_tokens is required there
            limit = route.completion_limit(None, self.gateway.settings.default_completion_allowance)
        try:
            request = surface.decode()
            dropped: list[str] = []
            built = upstream.request_for(kind, request, route.model, limit, dropped)
        except TranslationError as exc:
            raise UnsupportedForUpstream(f"{exc} (upstream {route.upstream.name}, kind {kind.value})") from exc
        self.dropped = dropped
        return built

    def headers(self) -> dict[str, str] | None:
        return {DROPPED_HEADER: ", ".join(self.dropped)} if self.dropped else None


async def chat(gateway: Gateway, call: Call, body: JSON) -> Response:
    """Serve a chat request (OpenAI's /v1/chat/completions or Ollama's /api/chat), on any upstream."""
    require_messages(body)
    validate_chat(body)
    surface = ChatSurface(call, body) if call.protocol == "openai" else OllamaChatSurface(call, body)
    return await generate(gateway, call, surface)


async def generate(gateway: Gateway, call: Call, surface: Surface) -> Response:
    """Serve a generation request from any client surface on any upstream, streamed or not."""
    settings = gateway.settings
    bound = surface.prompt_bound(settings.image_token_allowance)
    call.prompt_estimate = surface.prompt_estimate(bound)
    routes = resolve_routes(gateway, call)
    requested = surface.requested()
    admission = admit if gateway.tracer is None else traced_admit
    await admission(gateway, call, prompt_bound=bound, want_completion=completion_allowance(gateway, routes, requested))
    cap = call.reservation.completion_cap if call.reservation else None
    plan = _Plan(gateway, call, surface, cap if cap is not None and (requested is None or cap < requested) else None)
    streaming = False
    try:
        opening = open_upstream(gateway, call, routes, plan.build, headers=call.passed_headers)
        ping = settings.stream_ping_seconds
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
                if not surface.is_native(routes[0]):
                    with contextlib.suppress(GatehouseError):
                        plan.build(routes[0])  # what the first choice drops, for the header sent now
                encoder = surface.encoder()
                return late_relay_response(
                    gateway, call, task, lambda route: _relay(surface, route, encoder), encoder, plan.headers()
                )
            route, response = task.result()
        else:
            task = asyncio.ensure_future(opening)
            if call.live is not None:  # an operator's terminate or the shutdown deadline, before the head arrives
                call.live.on_terminate(lambda: _abandon(task))
            try:
                route, response = await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if call.terminated and (current is None or not current.cancelling()):
                    raise call.termination() from None
                raise
        if call.live is not None:
            call.live.on_terminate(response.close)
        if call.stream:
            streaming = True
            return relay_response(gateway, call, response, _relay(surface, route), plan.headers())
        return await _whole(call, surface, route, response, plan.headers())
    except BaseException as exc:
        call.fail(exc)
        raise
    finally:
        if not streaming:
            await finish_shielded(gateway, call)


COUNT_PATH = "/v1/messages/count_tokens"


async def count_tokens(gateway: Gateway, call: Call, surface: Surface) -> Response:
    """Anthropic's count_tokens on any upstream: an Anthropic upstream counts; any other is asked for a one-token
    answer and its prompt count is read (rate limited as a request, charged to no quota)."""
    await gateway.rate_limiter.hit("user_per_minute", user_identity(call.principal.user_id))
    routes = resolve_routes(gateway, call)
    plan = _Plan(gateway, call, surface, 1)

    def build(route: Route) -> tuple[str, JSON]:
        if route.provider.kind is UpstreamKind.ANTHROPIC:
            body = {k: v for k, v in surface.body.items() if k not in ("max_tokens", "stream")}
            return COUNT_PATH, {**body, "model": route.model}
        return plan.build(route)

    try:
        route, response = await open_upstream(gateway, call, routes, build, headers=call.passed_headers)
        raw = await _read_whole(route, response, call)
    finally:
        if call.held is not None:
            gateway.upstreams.release(call.held)
            call.held = None
        if call.upstream_span is not None:  # no settlement here (no quota is charged): its span ends now
            call.upstream_span.end()
    data = _parse_answer(route, raw)
    if route.provider.kind is UpstreamKind.ANTHROPIC:
        count = data.get("input_tokens")
    else:
        try:
            usage = upstream.result_of(route.provider.kind, data, call_prefix="").usage
        except (TypeError, ValueError, AttributeError, KeyError, UpstreamStreamError) as exc:
            raise UpstreamBadResponse(f"Upstream {route.provider.name} sent a malformed answer.") from exc
        count = usage.input if usage is not None else None
    if not isinstance(count, int):
        count = surface.prompt_estimate(surface.prompt_bound(gateway.settings.image_token_allowance))
    return Response(orjson.dumps({"input_tokens": count}), media_type="application/json")


def _relay(surface: Surface, route: Route, encoder: Encoder | None = None) -> Relay:
    kind = route.provider.kind
    if surface.is_native(route):
        relay = surface.native_relay()
        relay.rename_model(route.model)
        return relay
    encoder = encoder or surface.encoder()
    decoder = upstream.decoder_for(kind, call_prefix=f"call_{surface.call.request_id}_")

    async def on_complete() -> None:
        answer = surface.stream_completed(encoder)
        if answer is not None:
            await surface.answered(answer)

    return TranslatingRelay(surface.call, decoder, encoder, on_complete)


def _abandon(task: asyncio.Future[tuple[Route, UpstreamResponse]]) -> None:
    """Cancel an upstream attempt nobody waits for any more, closing its response if it had one."""
    if not task.done():
        task.cancel()
    elif not task.cancelled() and task.exception() is None:
        task.result()[1].close()


async def _whole(
    call: Call, surface: Surface, route: Route, response: UpstreamResponse, headers: dict[str, str] | None
) -> Response:
    raw = await _read_whole(route, response, call)
    data = _parse_answer(route, raw)
    call.first_token_at = time.perf_counter()
    try:
        if surface.is_native(route):
            call.set_usage(surface.native_usage(data))
            call.chunks = _completion_estimate(_answer_text(data))
            passed = surface.native_answer(raw, data, route.model)
            await surface.answered_native(data)
            return Response(passed, media_type="application/json")
        result = upstream.result_of(route.provider.kind, data, call_prefix=f"call_{call.request_id}_")
        if result.usage is not None:
            call.set_usage(result.usage.counts())
        call.chunks = _completion_estimate(ir.text_of(result.parts))
        answer = surface.render(result)
    except (TypeError, ValueError, AttributeError, KeyError, UpstreamStreamError) as exc:
        log.error("upstream_answer_malformed", upstream=route.provider.name, error_type=type(exc).__name__)
        raise UpstreamBadResponse(f"Upstream {route.provider.name} sent a malformed answer.") from exc
    await surface.answered(answer)
    return Response(orjson.dumps(answer), media_type="application/json", headers=headers)


def _answer_text(data: JSON) -> Any:
    """The text of a whole answer in any protocol (for an estimate when the upstream counts nothing)."""
    choices = data.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = choices[0].get("message")
        return message.get("content") if isinstance(message, dict) else choices[0].get("text")
    message = data.get("message")
    if isinstance(message, dict):
        return message.get("content")
    if isinstance(data.get("content"), list):
        return "".join(str(b.get("text") or "") for b in data["content"] if isinstance(b, dict))
    return data.get("response")


def _completion_estimate(text: Any) -> int:
    """Completion tokens of a whole answer when the upstream reports none: about four characters a token."""
    return max(1, len(text) // 4) if isinstance(text, str) else 1


def _json(data: JSON) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


def _same_protocol(call: Call, route: Route, raw: bytes, data: JSON) -> Response:
    """Pass the upstream's bytes through, showing the model name the client asked for (an alias)."""
    if route.model == call.model:
        return Response(raw, media_type="application/json")
    return _json({**data, "model": call.model})


# --- embeddings ------------------------------------------------------------------------------------


def _embed_body_for(call: Call, body: JSON, route: Route) -> tuple[str, JSON]:
    kind = route.provider.kind
    if kind not in EMBED_PATH:
        raise UnsupportedForUpstream(
            f"Upstream {route.upstream.name} ({kind.value}) has no embeddings API: serve `{call.model}` from an "
            "OpenAI-compatible or Ollama upstream."
        )
    path = EMBED_PATH[kind]
    try:
        if call.protocol == "openai":
            if kind is UpstreamKind.OLLAMA:
                return path, openai_embed_request_to_ollama(body, model=route.model)
            return path, {**body, "model": route.model}
        if kind is UpstreamKind.OLLAMA:
            return path, {**body, "model": route.model}
        return path, ollama_embed_request_to_openai(body, model=route.model)
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
    routes = resolve_routes(gateway, call)
    bound = quotas.embedding_bound(value)
    await (admit if gateway.tracer is None else traced_admit)(gateway, call, prompt_bound=bound, want_completion=0)
    try:
        route, response = await open_upstream(gateway, call, routes, lambda r: _embed_body_for(call, body, r))
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
    except UpstreamTooLarge as exc:
        raise UpstreamBadResponse(f"Upstream {route.provider.name} sent {exc}.") from exc
    except UpstreamUnreachable as exc:
        if call is not None and call.terminated:
            raise call.termination() from exc
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
