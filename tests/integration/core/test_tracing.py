"""OpenTelemetry tracing (OTEL_ENABLED), exported for real over OTLP/HTTP to an in-process receiver, in front of the
fake upstream: the span tree of a chat and of streams on every upstream kind, the client's traceparent as the
parent, the traceparent each upstream receives, trace ids in the log lines; and, off, nothing sent upstream."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.conftest import Harness, make_settings, running_app
from tests.support.fake_upstream import FakeUpstream, run_fake_upstream
from tests.support.otlp_receiver import ReceivedSpan, Receiver, run_otlp_receiver
from tests.support.server import ADMIN_KEY

PROMPT = "tell me about the weather in Lisbon"  # message contents must never reach a span
STEPS = {"gatehouse.authentication", "gatehouse.admission", "gatehouse.settlement"}


@pytest.fixture(scope="module")
def fake_upstream() -> Iterator[FakeUpstream]:
    with run_fake_upstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with run_otlp_receiver() as running:
        yield running


def write_config(path: Path, upstream_url: str) -> Path:
    """One upstream of each HTTP kind, all on the fake."""
    upstreams = [
        {"name": f"up-{kind}", "kind": kind, "base_url": upstream_url, "discover": False}
        for kind in ("openai", "ollama", "anthropic")
    ]
    models = {
        "gpt": {"upstream": "up-openai", "model": "fake-chat"},
        "llama": {"upstream": "up-ollama", "model": "fake-chat"},
        "claude": {"upstream": "up-anthropic", "model": "fake-chat"},
        "broken": {"upstream": "up-openai", "model": "fake-error"},
        "embed": {"upstream": "up-openai", "model": "fake-embed"},
    }
    path.write_text(yaml.safe_dump({"upstreams": upstreams, "models": models}))
    return path


@pytest.fixture
async def traced(
    database_url: str,
    tmp_path: Path,
    fake_upstream: FakeUpstream,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Harness]:
    """The app with tracing on, exporting to the receiver, its log lines in a file."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gatehouse-under-test")
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    receiver.clear()
    fake_upstream.reset()
    config = write_config(tmp_path / "gatehouse.yaml", fake_upstream.url)
    settings = make_settings(
        database_url, tmp_path, gatehouse_config=config, otel_enabled=True, log_file=tmp_path / "gatehouse.log"
    )
    async with running_app(settings) as running:
        yield running


def new_traceparent() -> tuple[str, str, str]:
    """(header, trace id, span id) of a sampled W3C traceparent, as a traced client sends it."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def spans_of(harness: Harness, receiver: Receiver, trace_id: str) -> list[ReceivedSpan]:
    """The trace's spans, once the app's exporter has sent all it holds."""
    assert harness.app.state.tracer.provider.force_flush(10_000)
    return [span for span in receiver.received() if span.trace_id == trace_id]


def server_span(spans: list[ReceivedSpan]) -> ReceivedSpan:
    (server,) = [span for span in spans if span.kind == "SERVER"]
    return server


def children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> dict[str, ReceivedSpan]:
    return {span.name: span for span in spans if span.parent_span_id == parent.span_id}


def sent_upstream(fake_upstream: FakeUpstream, path: str) -> dict[str, str]:
    """The headers of the last request the fake upstream received on `path`."""
    headers: dict[str, str] = [r for r in fake_upstream.requests() if r["path"] == path][-1]["headers"]
    return headers


def no_secret_in(spans: list[ReceivedSpan]) -> None:
    text = repr([(span.name, span.attributes) for span in spans])
    assert PROMPT not in text and ADMIN_KEY not in text


def chat_body(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": PROMPT}], **extra}


async def test_a_chat_is_one_trace_under_the_clients_span(
    traced: Harness, receiver: Receiver, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    traceparent, trace_id, client_span_id = new_traceparent()
    response = await traced.client.post(
        "/v1/chat/completions", json=chat_body("gpt"), headers={"traceparent": traceparent, "tracestate": "k=v"}
    )
    assert response.status_code == 200, response.text
    spans = spans_of(traced, receiver, trace_id)

    server = server_span(spans)
    assert server.parent_span_id == client_span_id  # the client's traceparent is the parent
    assert server.name == "POST /v1/chat/completions"
    assert server.attributes["http.route"] == "/v1/chat/completions"
    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["http.response.status_code"] == 200
    assert server.resource["service.name"] == "gatehouse-under-test"  # the SDK's OTEL_SERVICE_NAME
    steps = children(spans, server)
    assert set(steps) == STEPS | {"chat fake-chat"}
    upstream = steps["chat fake-chat"]
    assert upstream.kind == "CLIENT"
    assert upstream.attributes["gen_ai.operation.name"] == "chat"
    assert upstream.attributes["gen_ai.provider.name"] == "openai"
    assert upstream.attributes["gen_ai.request.model"] == "fake-chat"
    assert upstream.attributes["gen_ai.usage.input_tokens"] > 0
    assert upstream.attributes["gen_ai.usage.output_tokens"] == response.json()["usage"]["completion_tokens"]
    assert upstream.attributes["http.response.status_code"] == 200
    assert upstream.attributes["server.address"] == "127.0.0.1"
    assert upstream.attributes["url.full"] == f"{fake_upstream.url}/v1/chat/completions"
    assert "first_byte" in upstream.events
    assert not any(span.failed for span in spans)
    no_secret_in(spans)

    # The upstream was called as a child of the client span, with the client's tracestate kept.
    headers = sent_upstream(fake_upstream, "/v1/chat/completions")
    assert headers["traceparent"] == f"00-{trace_id}-{upstream.span_id}-01"
    assert headers["tracestate"] == "k=v"

    # The request's log lines carry its trace, the access line its server span.
    request_id = response.headers["x-request-id"]
    lines = [orjson.loads(line) for line in (tmp_path / "gatehouse.log").read_text().splitlines()]
    (access,) = [line for line in lines if line.get("event") == "request" and line.get("request_id") == request_id]
    assert (access["trace_id"], access["span_id"]) == (trace_id, server.span_id)


STREAMS = [  # (path, model, the upstream's path, gen_ai.provider.name): one upstream of each kind
    ("/v1/chat/completions", "gpt", "/v1/chat/completions", "openai"),
    ("/api/chat", "llama", "/api/chat", "ollama"),
    ("/v1/messages", "claude", "/v1/messages", "anthropic"),
]


async def test_streams_on_every_upstream_kind(traced: Harness, receiver: Receiver, fake_upstream: FakeUpstream) -> None:
    for path, model, upstream_path, provider in STREAMS:
        traceparent, trace_id, client_span_id = new_traceparent()
        body = chat_body(model, stream=True, max_tokens=50)
        async with traced.client.stream("POST", path, json=body, headers={"traceparent": traceparent}) as response:
            assert response.status_code == 200
            streamed = b"".join([chunk async for chunk in response.aiter_bytes()])
        assert streamed
        spans = spans_of(traced, receiver, trace_id)
        server = server_span(spans)
        assert server.parent_span_id == client_span_id, provider
        steps = children(spans, server)
        assert set(steps) == STEPS | {"chat fake-chat"}, provider
        upstream = steps["chat fake-chat"]
        assert upstream.attributes["gen_ai.provider.name"] == provider
        assert upstream.attributes["gen_ai.request.stream"] is True
        assert 0 < upstream.attributes["gen_ai.response.time_to_first_chunk"] < 10
        assert "gen_ai.first_chunk" in upstream.events
        assert upstream.attributes["gen_ai.usage.output_tokens"] > 0
        no_secret_in(spans)
        sent = sent_upstream(fake_upstream, upstream_path)["traceparent"]
        assert sent == f"00-{trace_id}-{upstream.span_id}-01", provider

    # Without a traceparent from the client, the request starts a trace of its own (and the upstream is in it).
    response = await traced.client.post("/v1/embeddings", json={"model": "embed", "input": PROMPT})
    assert response.status_code == 200, response.text
    _, trace_id, parent_id = sent_upstream(fake_upstream, "/v1/embeddings")["traceparent"].split("-")[:3]
    spans = spans_of(traced, receiver, trace_id)
    server = server_span(spans)
    assert server.parent_span_id == ""  # a root
    upstream = children(spans, server)["embeddings fake-embed"]
    assert upstream.span_id == parent_id
    assert upstream.attributes["gen_ai.operation.name"] == "embeddings"


async def test_failures_mark_their_spans(traced: Harness, receiver: Receiver) -> None:
    traceparent, trace_id, _ = new_traceparent()
    response = await traced.client.post(
        "/v1/chat/completions", json=chat_body("broken"), headers={"traceparent": traceparent}
    )
    assert response.status_code == 502
    spans = spans_of(traced, receiver, trace_id)
    server = server_span(spans)
    assert server.failed and server.attributes["error.type"] == "502"
    upstream = children(spans, server)["chat fake-error"]
    assert upstream.failed and upstream.attributes["error.type"] == "500"  # the upstream's own status

    traceparent, trace_id, _ = new_traceparent()
    refused = await traced.client.post(
        "/v1/chat/completions",
        json=chat_body("gpt"),
        headers={"traceparent": traceparent, "authorization": "Bearer gh_not_a_key"},
    )
    assert refused.status_code == 401
    spans = spans_of(traced, receiver, trace_id)
    authentication = children(spans, server_span(spans))["gatehouse.authentication"]
    assert authentication.failed and authentication.attributes["error.type"] == refused.json()["error"]["code"]
    no_secret_in(spans)


async def test_off_nothing_is_traced_or_sent_upstream(
    database_url: str, tmp_path: Path, fake_upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Off (the default), a client's traceparent is not passed on either: Gatehouse adds no header of its own to
    what it sends an upstream, which may be a third party's."""
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    fake_upstream.reset()
    config = write_config(tmp_path / "gatehouse.yaml", fake_upstream.url)
    settings = make_settings(database_url, tmp_path, gatehouse_config=config, log_file=tmp_path / "gatehouse.log")
    async with running_app(settings) as harness:
        assert harness.app.state.tracer is None and harness.runtime.gateway.tracer is None
        traceparent, _, _ = new_traceparent()
        for stream in (False, True):
            response = await harness.client.post(
                "/v1/chat/completions", json=chat_body("gpt", stream=stream), headers={"traceparent": traceparent}
            )
            assert response.status_code == 200
    for request in fake_upstream.requests():
        assert "traceparent" not in request["headers"] and "tracestate" not in request["headers"]
    lines = [orjson.loads(line) for line in (tmp_path / "gatehouse.log").read_text().splitlines()]
    assert not any("trace_id" in line for line in lines)
