"""How much a request may produce: the client's max_tokens, a model's output cap (configured, or from the model
list of OpenRouter, vLLM, LM Studio, llama.cpp), the default allowance; never more than the model's context."""

from __future__ import annotations

import pytest

from gatehouse.upstreams.config import UpstreamConfig, UpstreamKind
from gatehouse.upstreams.health import Health
from gatehouse.upstreams.providers import Provider, model_limits
from gatehouse.upstreams.upstream import Route, Upstream


@pytest.mark.parametrize(
    ("entry", "limits"),
    [
        # OpenRouter: https://openrouter.ai/docs/api-reference/list-available-models
        ({"id": "m", "context_length": 128000, "top_provider": {"max_completion_tokens": 16384}}, (16384, 128000)),
        ({"id": "m", "context_length": 8192, "top_provider": {"max_completion_tokens": None}}, (None, 8192)),
        ({"id": "m", "object": "model", "max_model_len": 32768}, (None, 32768)),  # vLLM
        ({"id": "m", "max_context_length": 4096}, (None, 4096)),  # LM Studio
        ({"id": "m", "meta": {"n_ctx_train": 2048}}, (None, 2048)),  # llama.cpp server
        ({"id": "m", "object": "model", "owned_by": "openai"}, (None, None)),  # OpenAI itself says nothing
        ({"id": "m", "max_model_len": True, "context_length": -5}, (None, None)),
    ],
)
def test_model_limits_from_a_model_list_entry(entry: dict[str, object], limits: tuple[int | None, int | None]) -> None:
    assert model_limits(entry) == limits


def _route(*, configured: int | None = None, listed: tuple[int | None, int | None] | None = None) -> Route:
    config = UpstreamConfig(name="u", kind=UpstreamKind.OPENAI, base_url="http://127.0.0.1:9")
    provider = Provider(config)
    if listed is not None:
        provider.model_limits["m"] = listed
    upstream = Upstream(config=config, provider=provider, health=Health(breaker_threshold=0, degraded_ms=1000))
    return Route(upstream, "m", configured)


@pytest.mark.parametrize(
    ("route", "requested", "expected"),
    [
        (_route(), None, 4096),  # nothing known: the default allowance
        (_route(), 100, 100),  # the client's max_tokens
        (_route(configured=256), None, 256),  # the configured output cap
        (_route(configured=256), 1000, 256),  # never more than the model can produce
        (_route(configured=256), 10, 10),
        (_route(listed=(512, 8192)), None, 512),  # the listed output cap
        (_route(listed=(None, 1024)), None, 1024),  # a context shorter than the default bounds it
        (_route(listed=(None, 32768)), None, 4096),  # a longer one does not raise it
        (_route(configured=300, listed=(512, 8192)), None, 300),  # the configuration wins
    ],
)
def test_completion_limit(route: Route, requested: int | None, expected: int) -> None:
    assert route.completion_limit(requested, 4096) == expected
