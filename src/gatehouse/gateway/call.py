"""One gateway request from admission to settlement: rate limits and the quota reservation before the
upstream is called; usage, the quota settlement and the request-log row once it ends, however it ends."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from gatehouse.auth.principal import Principal
from gatehouse.core.logging import bind_context, get_logger
from gatehouse.core.metrics import (
    GATEWAY_REQUESTS,
    STREAM_DURATION,
    TOKENS,
    UPSTREAM_REQUEST_DURATION,
    UPSTREAM_TTFT,
    child,
)
from gatehouse.core.tracing import ClientSpan
from gatehouse.errors import GatehouseError
from gatehouse.gateway.context import Gateway
from gatehouse.gateway.errors import CLIENT_DISCONNECTED, ShutdownDeadline, Terminated
from gatehouse.gateway.streams.registry import LiveStream
from gatehouse.limits.errors import QuotaBusy, QuotaExceeded
from gatehouse.limits.quotas import Reservation
from gatehouse.limits.ratelimit import key_identity, user_identity
from gatehouse.upstreams.upstream import Upstream

log = get_logger("gatehouse.gateway")
Protocol = Literal["openai", "ollama", "anthropic"]
JSON = dict[str, Any]
# Endings that are the upstream's fault (after its response head arrived).
UPSTREAM_FAILURES = frozenset({"upstream_error", "upstream_disconnected", "upstream_timeout", "upstream_bad_response"})
# An upstream's count: (prompt, completion), or (prompt, completion, cached) when it says how many of the prompt's
# tokens it read from a prompt cache (they cost the cached-input price).
UsageCounts = tuple[int, int] | tuple[int, int, int]


@dataclass
class Call:
    """One gateway request."""

    request_id: str
    principal: Principal
    protocol: Protocol
    endpoint: Literal["chat", "embeddings"]
    model: str
    stream: bool
    started: float = field(default_factory=time.perf_counter)
    started_at: float = field(default_factory=time.time)  # the wall clock: the request's price is the one then
    upstream: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # of the prompt tokens, those the upstream read from a prompt cache
    usage_reported: bool = False
    chunks: int = 0
    first_token_at: float | None = None
    status_code: int = 200
    error_code: str | None = None
    prompt_estimate: int = 0
    reservation: Reservation | None = None
    live: LiveStream | None = None  # in the stream registry from admission to settlement
    held: Upstream | None = None  # the upstream answering it, from its response head to settlement
    settled: bool = False
    # The client surface (chat, responses, messages, completions, ollama_chat, generate, embeddings), for the
    # request log and the metrics; and the client's protocol headers passed on to an upstream of its protocol.
    surface: str = ""
    passed_headers: dict[str, str] | None = None
    upstream_span: ClientSpan | None = None  # tracing on: the answering upstream's call, ended at settlement

    def set_upstream(self, name: str) -> None:
        """The upstream now being tried."""
        self.upstream = name
        if self.live is not None:
            self.live.upstream = name

    def set_usage(self, usage: UsageCounts | None) -> None:
        """Record the upstream's own count."""
        if usage is not None:
            self.prompt_tokens, self.completion_tokens = usage[0], usage[1]
            self.cached_tokens = usage[2] if len(usage) == 3 else 0
            self.usage_reported = True

    def saw_token(self) -> None:
        """A content chunk went to the client."""
        self.chunks += 1
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        if self.live is not None:
            self.live.tokens = self.chunks

    @property
    def terminated(self) -> str | None:
        """The operator's reason, when an operator ended this request."""
        return self.live.terminated_reason if self.live is not None else None

    def termination(self) -> Terminated:
        """The error a terminated request ends with: an operator's, or the shutdown deadline's."""
        reason = self.terminated or "terminated by an operator"
        if self.live is not None and self.live.ended_by_shutdown:
            return ShutdownDeadline(reason)
        return Terminated(reason)

    def fail(self, error: BaseException) -> None:
        """Remember how the request ended badly (anything but a GatehouseError is a bug: a 500)."""
        if isinstance(error, GatehouseError):
            self.status_code, self.error_code = error.status, error.code
        else:
            self.status_code, self.error_code = 500, "internal_error"

    def progress(self) -> tuple[int, int]:
        """(prompt, completion) tokens so far, as settling now would count them (the quota's checkpoints)."""
        if self.usage_reported:
            return self.prompt_tokens, self.completion_tokens
        return self.prompt_estimate, self.chunks

    def reservation_lost(self) -> None:
        """Another replica recovered this request's reservation (this one was presumed dead): stop producing."""
        if self.live is not None:
            self.live.terminate("its quota reservation was recovered after this replica missed its heartbeats")

    @property
    def produced_nothing(self) -> bool:
        """The upstream sent no output at all (a failure before the first byte, or a refusal)."""
        return self.chunks == 0 and not self.usage_reported


# --- admission -------------------------------------------------------------------------------------


async def admit(gateway: Gateway, call: Call, *, prompt_bound: int, want_completion: int) -> None:
    """Rate limits (per minute, per action), then the quota reservation; raises 429 when refused."""
    user = user_identity(call.principal.user_id)
    limiter = gateway.rate_limiter
    try:
        await limiter.hit("user_per_minute", user)
        if call.principal.key_id is not None and (call.principal.key_rate is not None or limiter.key_limited):
            await limiter.hit("key_per_minute", key_identity(call.principal.key_id), own=call.principal.key_rate)
        await limiter.hit(call.endpoint, user)
        principal = call.principal
        budgets = gateway.budgets
        version = gateway.prices.price_at(call.model, call.started_at)
        call.reservation = await gateway.quotas.reserve(
            user_id=principal.user_id,
            messages=1 if call.endpoint == "chat" else 0,
            prompt_bound=prompt_bound,
            prompt_estimate=min(call.prompt_estimate, prompt_bound) if call.prompt_estimate else prompt_bound,
            want_completion=want_completion,
            budgets=()
            if budgets.empty
            else budgets.budgets_of(principal.user_id, principal.key_id, principal.group_ids),
            price=version.price if version is not None else None,
            spend_limited=budgets.user_day_spend(principal.user_id),
        )
    except GatehouseError as exc:
        call.fail(exc)
        if isinstance(exc, QuotaExceeded | QuotaBusy):  # rate-limit refusals are announced by the limiter itself
            gateway.feed.publish(
                "quota.blocked",
                {"user_id": call.principal.user_id, "quota": exc.param, "model": call.model, "code": exc.code},
            )
        await (finish if gateway.tracer is None else traced_finish)(gateway, call)
        raise
    gateway.quotas.track(call.reservation, progress=call.progress, lost=call.reservation_lost)
    principal = call.principal
    call.live = gateway.streams.open(
        user_id=principal.user_id,
        user_email=principal.email,
        key_id=principal.key_id,
        model=call.model,
        protocol=call.protocol,
        stream=call.stream,
    )
    bind_context(stream_id=call.live.id)


# --- settlement ------------------------------------------------------------------------------------


def _usage(call: Call) -> tuple[int, int]:
    """(prompt, completion) to record: the upstream's count, else an estimate that never exceeds the grant."""
    if call.usage_reported:
        if call.error_code is not None:
            # Cut short (terminated, the client or the upstream gone): a count sent at the answer's start (Anthropic's
            # message_start says one output token) is not its end's; what was streamed counts at least.
            return call.prompt_tokens, max(call.completion_tokens, call.chunks)
        return call.prompt_tokens, call.completion_tokens
    if call.upstream is None or call.produced_nothing:
        return 0, 0
    # The upstream gave no count: a realistic prompt estimate and one token per streamed chunk stand in.
    prompt, completion = call.prompt_estimate, call.chunks
    reservation = call.reservation
    if reservation is not None and reservation.grant:
        prompt = min(prompt, reservation.prompt_bound)
        completion = min(completion, reservation.grant - prompt)
    return prompt, completion


async def finish(gateway: Gateway, call: Call) -> None:
    """Settle once: the quota (actual usage replaces the reservation) and the request-log row."""
    if call.settled:
        return
    call.settled = True
    call.prompt_tokens, call.completion_tokens = _usage(call)
    if call.live is not None:
        gateway.streams.close(
            call.live,
            status_code=call.status_code,
            error_code=call.error_code,
            usage=(call.prompt_tokens, call.completion_tokens),
        )
    if call.held is not None:
        gateway.upstreams.release(call.held)
        if call.error_code in UPSTREAM_FAILURES:  # it broke off mid-answer: the breaker counts that too
            gateway.upstreams.request_failed(call.held, call.error_code)
    principal = call.principal
    now = time.perf_counter()
    # At the price in force when the request started; None when nothing prices its model (it costs 0).
    cost = gateway.prices.cost(
        call.model, call.started_at, call.prompt_tokens, call.cached_tokens, call.completion_tokens
    )
    gateway.request_log.add(
        {
            "request_id": call.request_id,
            "user_id": principal.user_id,
            "key_id": principal.key_id,
            "endpoint": call.endpoint,
            "protocol": call.protocol,
            "surface": call.surface or call.endpoint,
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
            "cost_nanos": cost,
        }
    )
    if principal.key_id is not None:
        gateway.request_log.key_used(principal.key_id)
    _observe(call, now)
    if call.reservation is not None:
        # A request that got nothing from the upstream (it failed before its first byte) costs no message;
        # one the client walked away from still does.
        refund = call.produced_nothing and call.error_code not in (None, CLIENT_DISCONNECTED)
        await gateway.quotas.settle(
            call.reservation,
            tokens=call.prompt_tokens + call.completion_tokens,
            cost=cost or 0,
            refund_message=refund,
        )


def _observe(call: Call, now: float) -> None:
    """The call's metrics: requests by surface, upstream latency and time to first token, stream length, tokens."""
    child(GATEWAY_REQUESTS, call.surface or call.endpoint, str(call.status_code)).inc()
    if call.upstream is not None:
        child(UPSTREAM_REQUEST_DURATION, call.upstream, call.model).observe(now - call.started)
        if call.first_token_at is not None:
            child(UPSTREAM_TTFT, call.upstream, call.model).observe(call.first_token_at - call.started)
        if call.stream:
            child(STREAM_DURATION, call.surface or call.endpoint).observe(now - call.started)
    if call.prompt_tokens:
        child(TOKENS, call.model, "in").inc(call.prompt_tokens)
    if call.completion_tokens:
        child(TOKENS, call.model, "out").inc(call.completion_tokens)


async def finish_shielded(gateway: Gateway, call: Call) -> None:
    """`finish`, completed even if the request's task is being cancelled (shutdown, client gone)."""
    if call.settled:
        return
    task = asyncio.ensure_future((finish if gateway.tracer is None else traced_finish)(gateway, call))
    gateway.track(task)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("settlement_failed", request_id=call.request_id)


# --- tracing (OTEL_ENABLED) -------------------------------------------------------------------------
# Separate functions, which callers choose only when a tracer is set: off, admission and settlement run exactly
# as they would without tracing, not even through one more coroutine.


async def traced_admit(gateway: Gateway, call: Call, *, prompt_bound: int, want_completion: int) -> None:
    """`admit` in its span."""
    if gateway.tracer is None:  # callers check first; this keeps the function right on its own
        await admit(gateway, call, prompt_bound=prompt_bound, want_completion=want_completion)
        return
    with gateway.tracer.span("gatehouse.admission", {"gen_ai.request.model": call.model}):
        await admit(gateway, call, prompt_bound=prompt_bound, want_completion=want_completion)


async def traced_finish(gateway: Gateway, call: Call) -> None:
    """`finish` in its span, once the upstream call's span has ended (it ends with the answer)."""
    if call.settled or gateway.tracer is None:
        await finish(gateway, call)
        return
    if call.upstream_span is not None:
        call.prompt_tokens, call.completion_tokens = _usage(call)  # what `finish` will record (idempotent)
        _end_upstream_span(call, call.upstream_span)
    with gateway.tracer.span("gatehouse.settlement"):
        await finish(gateway, call)


def _end_upstream_span(call: Call, span: ClientSpan) -> None:
    """The upstream call's span ends with the answer: its usage (GenAI conventions) and time to first chunk."""
    span.set_attribute("gen_ai.usage.input_tokens", call.prompt_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", call.completion_tokens)
    if call.cached_tokens:
        span.set_attribute("gen_ai.usage.cache_read.input_tokens", call.cached_tokens)
    if call.first_token_at is not None:
        ttfc = call.first_token_at - span.started
        span.set_attribute("gen_ai.response.time_to_first_chunk", round(ttfc, 6))
        span.add_event(
            "gen_ai.first_chunk", timestamp=time.time_ns() - int((time.perf_counter() - call.first_token_at) * 1e9)
        )
    # Failed when the upstream broke off or answered badly (a client leaving, an operator's terminate: not its fault).
    span.end(call.error_code if call.error_code in UPSTREAM_FAILURES else None)
