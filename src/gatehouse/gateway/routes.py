"""Gateway routes: OpenAI-compatible /v1 and Ollama-compatible /api. Thin: parse, relay, shape."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gatehouse import __version__
from gatehouse.auth.access import public, require
from gatehouse.auth.principal import Principal
from gatehouse.auth.roles import Role
from gatehouse.core.components import provided
from gatehouse.deps import PrincipalDep
from gatehouse.gateway import access, acting, catalog, relay
from gatehouse.gateway.acting import ViewerDep
from gatehouse.gateway.call import Call, Protocol
from gatehouse.gateway.context import Gateway
from gatehouse.gateway.errors import InvalidField, MissingField, ModelNotFound
from gatehouse.gateway.schemas import anthropic as anthropic_schema
from gatehouse.gateway.schemas import ollama as ollama_schema
from gatehouse.gateway.schemas import openai as openai_schema
from gatehouse.gateway.schemas import openapi as doc
from gatehouse.gateway.stored.routes import router as stored_router
from gatehouse.gateway.streams.registry import StreamRegistry
from gatehouse.gateway.streams.routes import router as streams_router
from gatehouse.gateway.surfaces.anthropic import MessagesSurface
from gatehouse.gateway.surfaces.ollama import GenerateSurface
from gatehouse.gateway.surfaces.openai import CompletionsSurface
from gatehouse.gateway.surfaces.responses import ResponsesSurface
from gatehouse.gateway.translate import responses as responses_codec
from gatehouse.gateway.translate.common import TranslationError, rfc3339_now
from gatehouse.gateway.validate import parse_body, require_model, require_responses_input, stream_flag
from gatehouse.upstreams.upstream import ModelInfo

router = APIRouter()
USER = [require(Role.USER)]
GatewayDep = Annotated[Gateway, provided(Gateway)]
StreamsDep = Annotated[StreamRegistry, provided(StreamRegistry)]
OLLAMA_IS_RUNNING = "Ollama is running"  # what Ollama answers at its root, and what its clients look for


async def _call(
    request: Request,
    principal: PrincipalDep,
    protocol: Protocol,
    endpoint: str,
    body: dict[str, object],
    *,
    stream: bool,
    surface: str | None = None,
) -> Call:
    call = Call(
        request_id=request.state.request_id,
        principal=principal,
        protocol=protocol,
        endpoint="embeddings" if endpoint == "embeddings" else "chat",
        model=require_model(body),
        stream=stream,
        surface=surface
        or ("embeddings" if endpoint == "embeddings" else "chat" if protocol == "openai" else "ollama_chat"),
    )
    if principal.key_surfaces is not None or principal.key_networks is not None:
        access.check_key(principal, call.surface, request.client.host if request.client else None)
    if acting.requested(request, principal):
        # A front-end's key: served as the person the request names (their rules and limits, the key's on top).
        call.principal = await acting.served_as(request, principal, body, call.surface)
    return call


# --- OpenAI-compatible ------------------------------------------------------------------------------


def _visible(gateway: Gateway, principal: Principal) -> list[ModelInfo]:
    """The models this caller may use (the model lists show no other)."""
    models = gateway.upstreams.models()
    policy = gateway.access
    if policy.unrestricted and principal.key_models is None:
        return models
    return [info for info in models if policy.may_list(principal, info.name, info.upstreams)]


def _check_model(gateway: Gateway, principal: Principal, model: str) -> None:
    """A 403 when this caller may use none of the upstreams serving `model` (which exists)."""
    routes = gateway.upstreams.all_routes(model)
    if routes and not access.permitted(gateway.access, principal, model, routes):
        raise access.refusal(gateway.access, principal, model, routes)


@router.get(
    "/v1/models",
    tags=["openai"],
    dependencies=USER,
    response_model=None,
    responses=doc.answers("openai", doc.MODEL_LIST, statuses=doc.READ_STATUSES),
)
async def openai_models(principal: ViewerDep, gateway: GatewayDep) -> dict[str, object]:
    """The models the caller may use (OpenAI's list shape)."""
    data = [
        {"id": m.name, "object": "model", "created": m.created, "owned_by": m.owned_by}
        for m in _visible(gateway, principal)
    ]
    return {"object": "list", "data": data}


@router.get(
    "/v1/models/{model:path}",
    tags=["openai"],
    dependencies=USER,
    response_model=None,
    responses=doc.answers("openai", doc.MODEL, statuses=(*doc.READ_STATUSES, 404)),
)
async def openai_model(model: str, principal: ViewerDep, gateway: GatewayDep) -> dict[str, object]:
    """One model (OpenAI's retrieve shape); 403 when the caller may not use it."""
    for info in gateway.upstreams.models():
        if info.name == model:
            _check_model(gateway, principal, model)
            return {"id": info.name, "object": "model", "created": info.created, "owned_by": info.owned_by}
    raise ModelNotFound(f"The model `{model}` does not exist here: see GET /v1/models.")


@router.post(
    "/v1/chat/completions",
    tags=["openai"],
    dependencies=USER,
    openapi_extra=doc.request_body(openai_schema.ChatCompletionRequest),
    responses=doc.answers("openai", doc.CHAT_COMPLETION, stream=doc.SSE, statuses=doc.GENERATION_STATUSES),
)
async def openai_chat(request: Request, principal: PrincipalDep, gateway: GatewayDep) -> Response:
    """OpenAI chat completions, streamed (SSE) or not, to any upstream."""
    body = parse_body(await request.body())
    openai_schema.check_chat(body)
    call = await _call(request, principal, "openai", "chat", body, stream=stream_flag(body, default=False))
    return await relay.chat(gateway, call, body)


@router.post(
    "/v1/completions",
    tags=["openai"],
    dependencies=USER,
    openapi_extra=doc.request_body(openai_schema.CompletionRequest),
    responses=doc.answers("openai", doc.COMPLETION, stream=doc.SSE, statuses=doc.GENERATION_STATUSES),
)
async def openai_completions(request: Request, principal: PrincipalDep, gateway: GatewayDep) -> Response:
    """OpenAI legacy completions (a prompt continued), streamed (SSE) or not, to any upstream."""
    body = parse_body(await request.body())
    openai_schema.check_completions(body)
    call = await _call(
        request, principal, "openai", "chat", body, stream=stream_flag(body, default=False), surface="completions"
    )
    return await relay.generate(gateway, call, CompletionsSurface(call, body))


@router.post(
    "/v1/responses",
    tags=["openai"],
    dependencies=USER,
    openapi_extra=doc.request_body(openai_schema.ResponsesRequest, openai_schema.responses_extra),
    responses=doc.answers("openai", doc.RESPONSE, stream=doc.SSE, statuses=doc.GENERATION_STATUSES),
)
async def openai_responses(request: Request, principal: PrincipalDep, gateway: GatewayDep) -> Response:
    """OpenAI Responses, streamed (typed SSE events) or not, to any upstream; stored per user unless `store` is
    false, and continued with `previous_response_id`."""
    body = parse_body(await request.body())
    openai_schema.check_responses(body)
    require_responses_input(body)
    call = await _call(
        request, principal, "openai", "chat", body, stream=stream_flag(body, default=False), surface="responses"
    )
    stored = gateway.stored_responses
    previous = body.get("previous_response_id")
    owner = call.principal  # the person a front-end's key acts for: their stored conversation
    history = await stored.conversation(owner.user_id, previous) if isinstance(previous, str) and previous else []
    try:
        items = responses_codec.input_items(body)
    except TranslationError as exc:
        raise InvalidField(str(exc), param="input") from exc

    async def store(answer: dict[str, Any], inputs: list[dict[str, Any]]) -> None:
        await stored.save(owner.user_id, owner.key_id, answer, inputs, previous or None)

    surface = ResponsesSurface(
        call, body, history=history, items=items, store=store if body.get("store") is not False else None
    )
    return await relay.generate(gateway, call, surface)


# --- Anthropic-compatible ---------------------------------------------------------------------------

ANTHROPIC_BETA = "anthropic-beta"


@router.post(
    "/v1/messages",
    tags=["anthropic"],
    dependencies=USER,
    openapi_extra=doc.request_body(anthropic_schema.MessagesRequest),
    responses=doc.answers("anthropic", doc.MESSAGE, stream=doc.SSE, statuses=doc.GENERATION_STATUSES),
)
async def anthropic_messages(request: Request, principal: PrincipalDep, gateway: GatewayDep) -> Response:
    """Anthropic Messages, streamed (SSE events) or not, to any upstream; the key in `x-api-key` or
    `Authorization: Bearer`; errors in Anthropic's shape."""
    body = parse_body(await request.body())
    anthropic_schema.check_messages(body)
    call = await _call(
        request, principal, "anthropic", "chat", body, stream=stream_flag(body, default=False), surface="messages"
    )
    beta = request.headers.get(ANTHROPIC_BETA)
    surface = MessagesSurface(call, body)
    if beta:
        call.passed_headers = {ANTHROPIC_BETA: beta}
        surface.hint(ANTHROPIC_BETA, beta)
    return await relay.generate(gateway, call, surface)


@router.post(
    "/v1/messages/count_tokens",
    tags=["anthropic"],
    dependencies=USER,
    openapi_extra=doc.request_body(anthropic_schema.CountTokensRequest),
    responses=doc.answers("anthropic", doc.TOKEN_COUNT),
)
async def anthropic_count_tokens(request: Request, principal: PrincipalDep, gateway: GatewayDep) -> Response:
    """The prompt's tokens as the model's upstream counts them: Anthropic's own count, or (other upstreams have no
    count) the prompt tokens of a one-token generation, which is not charged to any quota."""
    body = parse_body(await request.body())
    anthropic_schema.check_count_tokens(body)
    call = await _call(request, principal, "anthropic", "chat", body, stream=False, surface="count_tokens")
    return await relay.count_tokens(gateway, call, MessagesSurface(call, {**body, "max_tokens": 1, "stream": False}))


@router.post(
    "/v1/embeddings",
    tags=["openai"],
    dependencies=USER,
    openapi_extra=doc.request_body(openai_schema.EmbeddingsRequest),
    responses=doc.answers("openai", doc.EMBEDDINGS),
)
async def openai_embeddings(request: Request, principal: PrincipalDep, gateway: GatewayDep) -> Response:
    """OpenAI embeddings, to any upstream."""
    body = parse_body(await request.body())
    openai_schema.check_embeddings(body)
    call = await _call(request, principal, "openai", "embeddings", body, stream=False)
    return await relay.embeddings(gateway, call, body)


# --- Ollama-compatible ------------------------------------------------------------------------------


@router.get(
    "/api/tags",
    tags=["ollama"],
    dependencies=USER,
    response_model=None,
    responses=doc.answers("ollama", doc.OLLAMA_TAGS, statuses=doc.READ_STATUSES),
)
async def ollama_tags(principal: ViewerDep, gateway: GatewayDep) -> dict[str, object]:
    """The models the caller may use (Ollama's list shape)."""
    models = []
    for info in _visible(gateway, principal):
        modified = datetime.fromtimestamp(info.created, UTC).isoformat().replace("+00:00", "Z")
        models.append(
            {
                "name": info.name,
                "model": info.name,
                "modified_at": modified,
                "size": 0,
                "digest": catalog.digest(info.name),
                "details": {
                    "format": "",
                    "family": info.owned_by,
                    "families": None,
                    "parameter_size": "",
                    "quantization_level": "",
                },
            }
        )
    return {"models": models}


@router.get(
    "/api/version",
    tags=["ollama"],
    dependencies=[public()],
    response_model=None,
    responses=doc.answers("ollama", doc.OLLAMA_VERSION, statuses=(403, 429)),
)
async def ollama_version() -> dict[str, str]:
    """Gatehouse's version, where Ollama clients look for the server's."""
    return {"version": __version__}


@router.post(
    "/api/chat",
    tags=["ollama"],
    dependencies=USER,
    openapi_extra=doc.request_body(ollama_schema.ChatRequest),
    responses=doc.answers("ollama", doc.OLLAMA_CHAT, stream=doc.NDJSON, statuses=doc.GENERATION_STATUSES),
)
async def ollama_chat(request: Request, principal: PrincipalDep, gateway: GatewayDep) -> Response:
    """Ollama chat, NDJSON-streamed (the default) or not, to any upstream."""
    body = parse_body(await request.body())
    ollama_schema.check_chat(body)
    call = await _call(request, principal, "ollama", "chat", body, stream=stream_flag(body, default=True))
    return await relay.chat(gateway, call, body)


@router.post(
    "/api/generate",
    tags=["ollama"],
    dependencies=USER,
    openapi_extra=doc.request_body(ollama_schema.GenerateRequest),
    responses=doc.answers("ollama", doc.OLLAMA_GENERATE, stream=doc.NDJSON, statuses=doc.GENERATION_STATUSES),
)
async def ollama_generate(request: Request, principal: PrincipalDep, gateway: GatewayDep) -> Response:
    """Ollama generate (a prompt, with a system prompt and images, or a raw continuation), NDJSON-streamed (the
    default) or not, to any upstream. An empty prompt only loads the model, as Ollama answers it."""
    body = parse_body(await request.body())
    ollama_schema.check_generate(body)
    call = await _call(
        request, principal, "ollama", "chat", body, stream=stream_flag(body, default=True), surface="generate"
    )
    if not body.get("prompt") and not body.get("images"):
        relay.resolve_routes(gateway, call)
        loaded = {"model": call.model, "created_at": rfc3339_now(), "response": "", "done": True, "done_reason": "load"}
        return Response(
            orjson.dumps(loaded) + (b"\n" if call.stream else b""),
            media_type="application/x-ndjson" if call.stream else "application/json",
        )
    return await relay.generate(gateway, call, GenerateSurface(call, body))


@router.post(
    "/api/embed",
    tags=["ollama"],
    dependencies=USER,
    openapi_extra=doc.request_body(ollama_schema.EmbedRequest),
    responses=doc.answers("ollama", doc.OLLAMA_EMBED),
)
async def ollama_embed(request: Request, principal: PrincipalDep, gateway: GatewayDep) -> Response:
    """Ollama embeddings, to any upstream."""
    body = parse_body(await request.body())
    ollama_schema.check_embed(body)
    call = await _call(request, principal, "ollama", "embeddings", body, stream=False)
    return await relay.embeddings(gateway, call, body)


@router.post(
    "/api/embeddings",
    tags=["ollama"],
    dependencies=USER,
    openapi_extra=doc.request_body(ollama_schema.EmbeddingsRequest),
    responses=doc.answers("ollama", doc.OLLAMA_EMBEDDING),
)
async def ollama_embeddings(request: Request, principal: PrincipalDep, gateway: GatewayDep) -> Response:
    """Ollama's legacy embeddings ({"model", "prompt"} -> {"embedding": [...]}), to any upstream."""
    body = parse_body(await request.body())
    ollama_schema.check_embeddings(body)
    prompt = body.get("prompt") or ""
    if not prompt:  # what Ollama answers too: clients send it to check that the model loads
        require_model(body)
        return Response(b'{"embedding":[]}', media_type="application/json")
    embed = {"model": body.get("model"), "input": prompt}
    embed.update({k: body[k] for k in ("options", "keep_alive", "truncate") if k in body})
    call = await _call(request, principal, "ollama", "embeddings", embed, stream=False)
    return await relay.embeddings(gateway, call, embed, legacy=True)


@router.post(
    "/api/show",
    tags=["ollama"],
    dependencies=USER,
    response_model=None,
    openapi_extra=doc.request_body(ollama_schema.ShowRequest, ollama_schema.show_extra),
    responses=doc.answers("ollama", doc.OLLAMA_SHOW),
)
async def ollama_show(request: Request, principal: ViewerDep, gateway: GatewayDep) -> dict[str, object]:
    """A model's details (Ollama's shape): the Ollama upstream's own, else what Gatehouse knows of it; 403 when
    the caller may not use it."""
    body = parse_body(await request.body())
    ollama_schema.check_show(body)
    model = body.get("model") or body.get("name")  # `name`: older clients
    if not isinstance(model, str) or not model.strip():
        raise MissingField("Field `model` is required: a model name from GET /api/tags.", param="model")
    _check_model(gateway, principal, model)
    return await catalog.show(gateway.upstreams, model, verbose=body.get("verbose") is True)


@router.get(
    "/api/ps",
    tags=["ollama"],
    dependencies=USER,
    response_model=None,
    responses=doc.answers("ollama", doc.OLLAMA_PS, statuses=doc.READ_STATUSES),
)
async def ollama_ps(principal: ViewerDep, gateway: GatewayDep, streams: StreamsDep) -> dict[str, object]:
    """The models serving requests now, on every replica, of those the caller may use (Ollama's shape)."""
    policy = gateway.access
    restricted = not policy.unrestricted or principal.key_models is not None

    def shown(model: str) -> bool:
        routes = gateway.upstreams.all_routes(model)
        return not restricted or bool(access.permitted(policy, principal, model, routes))

    return await catalog.running(gateway.upstreams, streams, shown=shown)


router.include_router(streams_router)
router.include_router(stored_router)
