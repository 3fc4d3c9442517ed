"""Tracing with OpenTelemetry's SDK, imported only when OTEL_ENABLED is true (see core/tracing.py).

The SDK reads its own standard environment variables: where spans go (OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, _HEADERS, _TIMEOUT, _COMPRESSION), the service (OTEL_SERVICE_NAME,
OTEL_RESOURCE_ATTRIBUTES), sampling (OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG) and batching (OTEL_BSP_*).
Spans follow the semantic conventions: HTTP server spans (https://opentelemetry.io/docs/specs/semconv/http/
http-spans/) and GenAI client spans (https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/).
It imports nothing of Gatehouse (core/tracing.py, which imports it, names the Tracer protocol it implements).
Propagation is W3C Trace Context only (traceparent, tracestate): a client's baggage is not passed to upstreams.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes, AttributeValue
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SERVICE = "gatehouse"
PROPAGATOR = TraceContextTextMapPropagator()
TRACE_HEADERS = (b"traceparent", b"tracestate")
ERROR_TYPE = "error.type"


def _error_type(exc: BaseException) -> str:
    """An error's code (Gatehouse's errors have one), else its class: never its message."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) else type(exc).__qualname__


def _failed(span: trace.Span, error_type: str) -> None:
    span.set_attribute(ERROR_TYPE, error_type)
    span.set_status(StatusCode.ERROR)


class UpstreamCall:
    """The client span of one upstream call (gateway/relay.py opens it, gateway/call.py ends it at settlement)."""

    def __init__(self, span: trace.Span) -> None:
        self._span = span
        self.started = time.perf_counter()
        self.headers: dict[str, str] = {}
        PROPAGATOR.inject(self.headers, context=trace.set_span_in_context(span))
        self.ended = False

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self._span.set_attribute(key, value)

    def add_event(self, name: str, attributes: Attributes | None = None, timestamp: int | None = None) -> None:
        self._span.add_event(name, attributes, timestamp)

    def end(self, error_type: str | None = None) -> None:
        if self.ended:
            return
        self.ended = True
        if error_type is not None:
            _failed(self._span, error_type)
        self._span.end()


class ServerSpans:
    """Pure ASGI: each HTTP request in a SERVER span, its parent the client's traceparent when one is sent.
    Outermost, so the access log line (core/middleware.py) is written inside it and carries its ids."""

    def __init__(self, app: ASGIApp, tracer: trace.Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier: dict[str, str] = {}
        attributes: dict[str, AttributeValue] = {
            "http.request.method": scope["method"],
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
        }
        for name, value in scope["headers"]:
            if name in TRACE_HEADERS:
                carrier[name.decode("latin-1")] = value.decode("latin-1")
            elif name == b"user-agent":
                attributes["user_agent.original"] = value.decode("latin-1")
        if scope.get("http_version"):
            attributes["network.protocol.version"] = scope["http_version"]
        server, client = scope.get("server"), scope.get("client")
        if server:
            attributes["server.address"], attributes["server.port"] = server[0], server[1]
        if client:
            attributes["client.address"] = client[0]
        parent = PROPAGATOR.extract(carrier) if carrier else None
        span = self.tracer.start_span(scope["method"], context=parent, kind=SpanKind.SERVER, attributes=attributes)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        status: int | None = None

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except BaseException as exc:
            _failed(span, _error_type(exc))
            raise
        finally:
            route = getattr(scope.get("route"), "path", None)  # the template the router (or the fast path) matched
            if route:
                span.set_attribute("http.route", route)
                span.update_name(f"{scope['method']} {route}")
            if status is not None:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    _failed(span, str(status))
            span.end()
            otel_context.detach(token)


def _trace_ids(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog: the current span's trace_id and span_id on the line (the request's, while one is served)."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event["trace_id"] = format(span_context.trace_id, "032x")
        event["span_id"] = format(span_context.span_id, "016x")
    return event


def _resource(service_version: str) -> Resource:
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES as the SDK reads them; `gatehouse` when neither names one."""
    resource = Resource.create({SERVICE_VERSION: service_version})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: SERVICE}))
    return resource


class OtelTracer:
    """core/tracing.py's Tracer over the SDK: its own provider (not the global one, so FastAPI's built-in
    telemetry, which Gatehouse turns off, stays off), spans batched to the exporter."""

    def __init__(self, provider: TracerProvider, service_version: str) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer(SERVICE, service_version)

    @classmethod
    def from_environment(cls, *, service_version: str, exporter: SpanExporter | None = None) -> OtelTracer:
        """Sampler from OTEL_TRACES_SAMPLER (default: parent-based, always on), OTLP/HTTP exporter from
        OTEL_EXPORTER_OTLP_*, batching from OTEL_BSP_*; all read by the SDK itself."""
        provider = TracerProvider(resource=_resource(service_version))
        provider.add_span_processor(BatchSpanProcessor(exporter or OTLPSpanExporter()))
        return cls(provider, service_version)

    @contextmanager
    def span(self, name: str, attributes: Attributes | None = None) -> Iterator[trace.Span]:
        # record_exception off: an exception's message may quote the request; error.type carries its code.
        with self.tracer.start_as_current_span(
            name, attributes=attributes, record_exception=False, set_status_on_exception=False
        ) as span:
            try:
                yield span
            except BaseException as exc:
                _failed(span, _error_type(exc))
                raise

    def client_span(self, name: str, attributes: Attributes) -> UpstreamCall:
        return UpstreamCall(self.tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes))

    def middleware(self, app: ASGIApp) -> ASGIApp:
        return ServerSpans(app, self.tracer)

    def log_processor(self) -> Any:
        return _trace_ids

    def shutdown(self) -> None:
        self.provider.shutdown()
