"""What Ollama clients ask about models before they chat: `POST /api/show` (a model's details) and `GET /api/ps`
(the models in use), in the shapes of Ollama's API (https://docs.ollama.com/api, and the `ollama` package's
ShowResponse and ProcessResponse).

`show` answers with the upstream's own details when the model is served by an Ollama upstream that answers, and
otherwise with what Gatehouse knows: the model's family (its upstreams), whether it embeds, and its context length
when the upstream's model list says (under `gatehouse.context_length`, with `general.architecture: gatehouse`, as
Ollama keys it). `ps` lists the models with requests in flight on any replica (this one's alone while Redis is
away): for a gateway, the models "running" are the ones serving now; sizes are 0, as Gatehouse holds no weights.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from gatehouse.core.logging import get_logger
from gatehouse.gateway.errors import ModelNotFound
from gatehouse.gateway.streams.registry import StreamRegistry
from gatehouse.upstreams.config import UpstreamKind
from gatehouse.upstreams.providers import DEMO_EMBED_MODEL, UpstreamTimedOut, UpstreamTooLarge, UpstreamUnreachable
from gatehouse.upstreams.registry import UpstreamRegistry
from gatehouse.upstreams.upstream import Route

log = get_logger("gatehouse.gateway")
JSON = dict[str, Any]
SHOW_PATH = "/api/show"
SHOW_TIMEOUT = 5.0  # seconds for an Ollama upstream's own /api/show, before Gatehouse answers from what it knows
EMBEDDING_HINTS = ("embed", "bge-", "e5-", "minilm", "nomic-embed", "mxbai")


def digest(name: str) -> str:
    """A stable digest for a model name (Gatehouse has no weights to hash)."""
    return hashlib.sha256(name.encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _details(family: str) -> JSON:
    return {
        "parent_model": "",
        "format": "",
        "family": family,
        "families": None,
        "parameter_size": "",
        "quantization_level": "",
    }


def _context_length(routes: list[Route]) -> int | None:
    lengths = [route.upstream.provider.model_limits.get(route.model, (None, None))[1] for route in routes]
    known = [length for length in lengths if length]
    return min(known) if known else None


def _embeds(model: str, routes: list[Route]) -> bool:
    """Whether the model is an embedding model, as far as its names tell (an upstream's list says no more)."""
    names = [model.lower(), *(route.model.lower() for route in routes)]
    return any(route.model == DEMO_EMBED_MODEL for route in routes) or any(
        hint in name for name in names for hint in EMBEDDING_HINTS
    )


async def show(upstreams: UpstreamRegistry, model: str, *, verbose: bool = False) -> JSON:
    """A model's details (Ollama's /api/show); ModelNotFound when no upstream serves it."""
    routes = upstreams.all_routes(model)
    if not routes:
        raise ModelNotFound(f"model '{model}' not found: list the available ones with GET /api/tags.", param="model")
    for route in upstreams.routes(model):
        if route.upstream.provider.kind is UpstreamKind.OLLAMA:
            answer = await _upstream_show(route, verbose=verbose)
            if answer is not None:
                return answer
    family = ",".join(dict.fromkeys(route.upstream.name for route in routes))
    info: JSON = {"general.architecture": "gatehouse"}
    context = _context_length(routes)
    if context:
        info["gatehouse.context_length"] = context
    return {
        "modelfile": f"# {model}, served by Gatehouse from {family}\nFROM {model}\n",
        "parameters": "",
        "template": "",
        "details": _details(family),
        "model_info": info,
        "capabilities": ["embedding"] if _embeds(model, routes) else ["completion"],
        "modified_at": _now(),
    }


async def _upstream_show(route: Route, *, verbose: bool) -> JSON | None:
    """The Ollama upstream's own answer, or None when it has none to give in time."""
    body: JSON = {"model": route.model, **({"verbose": True} if verbose else {})}
    try:
        async with asyncio.timeout(SHOW_TIMEOUT):
            response = await route.upstream.provider.post(SHOW_PATH, body, stream=False)
            try:
                raw = await response.read()
            finally:
                response.close()
        if response.status != 200:
            return None
        data = orjson.loads(raw)
    except (TimeoutError, UpstreamTimedOut, UpstreamTooLarge, UpstreamUnreachable, orjson.JSONDecodeError) as exc:
        log.warning("upstream_show_failed", upstream=route.upstream.name, error=f"{type(exc).__name__}: {exc}")
        return None
    return data if isinstance(data, dict) else None


async def running(
    upstreams: UpstreamRegistry, streams: StreamRegistry, *, shown: Callable[[str], bool] = lambda model: True
) -> JSON:
    """The models with requests in flight (Ollama's /api/ps), of those `shown` lets the caller see."""
    in_use = sorted(model for model in {str(item["model"]) for item in await streams.all()} if shown(model))
    now = _now()
    models = []
    for name in in_use:
        routes = upstreams.all_routes(name)
        family = ",".join(dict.fromkeys(route.upstream.name for route in routes))
        entry: JSON = {
            "name": name,
            "model": name,
            "size": 0,
            "digest": digest(name),
            "details": _details(family),
            "expires_at": now,
            "size_vram": 0,
        }
        context = _context_length(routes)
        if context:
            entry["context_length"] = context
        models.append(entry)
    return {"models": models}
