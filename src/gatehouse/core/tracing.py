"""OpenTelemetry tracing: optional, off by default (OTEL_ENABLED).

Off, the process holds `None` where a tracer would be: the hot path tests `if tracer is not None` at the few
points that open a span (authentication, admission, the upstream call, settlement), and no module of
OpenTelemetry's SDK or exporter is imported. On, `start_tracing` imports core/otel.py, which builds the SDK's
tracer from its own standard environment variables (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME,
OTEL_TRACES_SAMPLER...). This module names what the rest of Gatehouse calls, so only core/otel.py knows the SDK.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

from starlette.types import ASGIApp

from gatehouse.core.logging import add_processor, remove_processor

# What an attribute may hold (OpenTelemetry's AttributeValue, without importing it).
AttributeValue = str | bool | int | float | Sequence[str] | Sequence[bool] | Sequence[int] | Sequence[float]
Attributes = Mapping[str, AttributeValue]


class TracingUnavailable(RuntimeError):
    """OTEL_ENABLED is true but the OpenTelemetry SDK is not installed."""


class Span(Protocol):
    """An open span: attributes and events may be added until it ends."""

    def set_attribute(self, key: str, value: AttributeValue) -> None: ...

    def add_event(self, name: str, attributes: Attributes | None = None, timestamp: int | None = None) -> None: ...


class ClientSpan(Protocol):
    """The span of one call to an upstream, and the headers that carry it there (W3C traceparent, tracestate)."""

    headers: dict[str, str]
    started: float  # time.perf_counter() when the call was sent

    def set_attribute(self, key: str, value: AttributeValue) -> None: ...

    def add_event(self, name: str, attributes: Attributes | None = None, timestamp: int | None = None) -> None: ...

    def end(self, error_type: str | None = None) -> None:
        """End the span; `error_type` (an error code, an HTTP status) marks it failed."""


class Tracer(Protocol):
    """What Gatehouse asks of tracing when it is on (core/otel.py's OtelTracer)."""

    def span(self, name: str, attributes: Attributes | None = None) -> AbstractContextManager[Span]:
        """An internal span, a child of the current one and current for its block; an error escaping it marks it
        failed with the error's code (never its message: it may quote a request)."""

    def client_span(self, name: str, attributes: Attributes) -> ClientSpan:
        """A client span, a child of the current one, not made current (it ends when the upstream's answer does)."""

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """The pure-ASGI wrapper that opens each HTTP request's server span (the client's traceparent its parent)."""

    def log_processor(self) -> Any:
        """A structlog processor that adds the current trace_id and span_id to a log line."""

    def shutdown(self) -> None:
        """Export what is still buffered, then stop."""


@contextmanager
def tracing(tracer: Tracer | None) -> Iterator[None]:
    """While the app runs: trace and span ids on log lines; at its end, the spans still buffered exported."""
    if tracer is None:
        yield
        return
    processor = tracer.log_processor()
    add_processor(processor)
    try:
        yield
    finally:
        remove_processor(processor)
        tracer.shutdown()


def tracing_wanted(enabled: bool) -> bool:
    """OTEL_ENABLED, unless the SDK's own standard switch OTEL_SDK_DISABLED says true."""
    return enabled and os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() != "true"


def start_tracing(*, service_version: str) -> Tracer:
    """The SDK's tracer exporting over OTLP/HTTP, configured by the standard OTEL_* environment variables."""
    try:
        from gatehouse.core import otel
    except ImportError as exc:  # the optional extra is not installed
        raise TracingUnavailable(
            f"OTEL_ENABLED is true but OpenTelemetry's SDK cannot be imported ({exc.name}): install Gatehouse with its "
            "`otel` extra (pip install 'gatehouse[otel]'), or set OTEL_ENABLED=false."
        ) from exc
    return otel.OtelTracer.from_environment(service_version=service_version)
