"""Issue 19, item 3: every upstream fault on every client surface, with the official clients.

Each case ends in a clean error in the client's protocol (the client raises its own error type with Gatehouse's
message; a stream ends with the protocol's error event after what was relayed, never as a truncated success), or,
when nothing reached the client yet and a second upstream serves the same model, in a failover to it. Usage is
exact: the request log holds what the fake upstream's ledger says it produced and what the client received.
The surfaces of one fault run concurrently; one Gatehouse per backend serves the whole matrix."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import anthropic
import ollama
import openai
import pytest

from tests.e2e.faults.conftest import MODEL_FAULTS, NETWORK_FAULTS, alias
from tests.e2e.faults.probes import assert_nothing_left, logged_rows, metric
from tests.e2e.faults.surfaces import PROMPT, SURFACES, Received, StreamFailed, Surface, Truncated
from tests.support.fake_upstream import MIDFAIL_TOKENS, RETRY_AFTER_SECONDS, FakeUpstream, reply_tokens
from tests.support.server import GatehouseServer

# Faults met before the upstream's response head: nothing reached the client, a second upstream may serve it.
BEFORE_FIRST_BYTE = (*NETWORK_FAULTS, "500", "429", "hang")
# Faults met after it: the upstream started answering.
MID_ANSWER = ("hang-mid", "reset", "badjson", "badframe", "huge")
# (HTTP status, Gatehouse's error code) each fault ends with on its only upstream.
EXPECTED: dict[str, tuple[int, str]] = {
    "refused": (502, "upstream_unreachable"),
    "dns": (502, "upstream_unreachable"),
    "tls": (502, "upstream_unreachable"),
    "500": (502, "upstream_error"),
    "429": (429, "upstream_rate_limited"),
    "hang": (504, "upstream_timeout"),
    "hang-mid": (504, "upstream_timeout"),
    "reset": (502, "upstream_disconnected"),
    "badjson": (502, "upstream_bad_response"),
    "badframe": (502, "upstream_bad_response"),
    "huge": (502, "upstream_bad_response"),
}
# Anthropic's error type for each status (a stream's error event carries the type, its status being 200 already).
ANTHROPIC_TYPES = {429: "rate_limit_error", 504: "timeout_error", 502: "api_error"}
REPLY = "".join(reply_tokens(PROMPT, 8))
FIRST_TOKENS = reply_tokens(PROMPT, MIDFAIL_TOKENS)


@dataclass
class Outcome:
    surface: Surface
    model: str
    received: Received
    error: BaseException | None


def _run(server: GatehouseServer, surface: Surface, model: str) -> Outcome:
    got = Received()
    try:
        surface.call(server, model, surface.stream, got)
    except Exception as exc:  # judged below, per client
        return Outcome(surface, model, got, exc)
    return Outcome(surface, model, got, None)


def _run_all(server: GatehouseServer, fault: str, *, failover: bool) -> list[Outcome]:
    with ThreadPoolExecutor(len(SURFACES)) as pool:
        futures = [pool.submit(_run, server, s, alias(s.kind, fault, failover=failover)) for s in SURFACES]
        return [f.result() for f in futures]


def _error_problem(outcome: Outcome, status: int, code: str, upstream: str) -> str | None:
    """What is wrong with how the client saw the error (None: its own error type, with our code and message)."""
    error, surface = outcome.error, outcome.surface
    streamed_error = surface.stream and outcome.received.pieces  # the head was 200: the error came as an event
    if error is None:
        return f"succeeded with {outcome.received.text!r}"
    if isinstance(error, Truncated):
        return f"truncated success: {error}"
    message = str(error)
    if f"Upstream {upstream}" not in message:
        return f"{type(error).__name__} without Gatehouse's message: {message[:300]}"
    if surface.client == "openai":
        if isinstance(error, StreamFailed):
            return None if error.code == code and surface.name == "responses-stream" else f"stream error {error.code}"
        if not isinstance(error, openai.APIError) or getattr(error, "code", None) != code:
            return f"{type(error).__name__} code={getattr(error, 'code', None)}: {message[:200]}"
        if isinstance(error, openai.APIStatusError):
            if error.status_code != status:
                return f"status {error.status_code}"
            wanted = openai.RateLimitError if status == 429 else openai.InternalServerError
            if not isinstance(error, wanted):
                return f"{type(error).__name__} for {status}"
            if status == 429 and error.response.headers.get("retry-after") != str(RETRY_AFTER_SECONDS):
                return f"retry-after {error.response.headers.get('retry-after')}"
        elif not streamed_error and surface.stream is False:
            return f"{type(error).__name__} without a status"
        return None
    if surface.client == "anthropic":
        if not isinstance(error, anthropic.APIStatusError):
            return f"{type(error).__name__}: {message[:200]}"
        body: Any = error.body
        kind = body.get("error", {}).get("type") if isinstance(body, dict) else None
        if kind != ANTHROPIC_TYPES[status]:
            return f"anthropic error type {kind} (wanted {ANTHROPIC_TYPES[status]})"
        if error.response.status_code == 200:
            return None  # a stream's error event
        if error.status_code != status:
            return f"status {error.status_code}"
        if status == 429 and error.response.headers.get("retry-after") != str(RETRY_AFTER_SECONDS):
            return f"retry-after {error.response.headers.get('retry-after')}"
        return None
    if not isinstance(error, ollama.ResponseError):
        return f"{type(error).__name__}: {message[:200]}"
    if error.status_code not in (status, -1):  # -1: an error line of a stream
        return f"status {error.status_code}"
    return None


def _received_problem(outcome: Outcome, fault: str) -> str | None:
    """A broken stream must have relayed the answer's start, and nothing else."""
    if not outcome.surface.stream or fault not in MID_ANSWER:
        return None
    if "".join(FIRST_TOKENS).startswith(outcome.received.text) and outcome.received.text:
        return None
    return f"received {outcome.received.text!r}, wanted a prefix of {''.join(FIRST_TOKENS)!r}"


# The request log's name for each surface of the matrix, and the client protocol.
LOGGED_AS = {
    "chat": ("chat", "openai"),
    "completions": ("completions", "openai"),
    "responses": ("responses", "openai"),
    "messages": ("messages", "anthropic"),
    "ollama-chat": ("ollama_chat", "ollama"),
    "generate": ("generate", "ollama"),
    "embeddings": ("embeddings", "openai"),
    "embed": ("embeddings", "ollama"),
}


def _row_key(outcome: Outcome) -> tuple[str, str, str, bool]:
    surface, protocol = LOGGED_AS[outcome.surface.name.removesuffix("-stream")]
    return outcome.model, surface, protocol, outcome.surface.stream


def _ledger_delta(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]], model: str) -> dict[str, int]:
    old = before.get(model, {})
    return {k: v - old.get(k, 0) for k, v in after.get(model, {}).items()}


@pytest.mark.parametrize("fault", [*NETWORK_FAULTS, *MODEL_FAULTS])
def test_fault_on_the_only_upstream(faults_server: GatehouseServer, faults_upstream: FakeUpstream, fault: str) -> None:
    tasks_before = metric(faults_server, "gatehouse_event_loop_tasks")
    before = faults_upstream.ledger()
    outcomes = _run_all(faults_server, fault, failover=False)
    status, code = EXPECTED[fault]
    problems = {}
    for outcome in outcomes:
        kind = outcome.surface.kind
        upstream = f"{fault}-{kind}" if fault in NETWORK_FAULTS else f"f-{kind}"
        problem = _error_problem(outcome, status, code, upstream) or _received_problem(outcome, fault)
        if problem:
            problems[outcome.surface.name] = problem
    assert not problems, f"{fault}: {problems}"

    # Usage: the request log holds, per surface, the tokens the client received; together, what the upstream made.
    models = {o.model for o in outcomes}
    rows = logged_rows(faults_server, models, len(outcomes))
    assert len(rows) == len(outcomes)
    by_call = {(row.model, row.surface, row.protocol, row.stream): row for row in rows}
    for outcome in outcomes:
        row = by_call[_row_key(outcome)]
        # A stream's head said 200; the log records how it ended.
        assert (row.status_code, row.error_code) == (status, code), outcome.surface.name
        if fault in MID_ANSWER and outcome.surface.stream:
            assert row.completion_tokens == len(outcome.received.pieces), outcome.surface.name
        else:
            assert (row.prompt_tokens, row.completion_tokens) == (0, 0), outcome.surface.name
    if fault in MODEL_FAULTS:  # the ledger counts generations (embeddings never produce completion tokens)
        made = _ledger_delta(before, faults_upstream.ledger(), MODEL_FAULTS[fault])
        assert made.get("finished", 0) == 0
        assert sum(row.completion_tokens for row in rows) == made.get("cut_short_completion_tokens", 0)
    assert_nothing_left(faults_server, faults_upstream, tasks_before=tasks_before)


@pytest.mark.parametrize("fault", BEFORE_FIRST_BYTE)
def test_fault_fails_over_to_a_healthy_second_upstream(
    faults_server: GatehouseServer, faults_upstream: FakeUpstream, fault: str
) -> None:
    tasks_before = metric(faults_server, "gatehouse_event_loop_tasks")
    before, requests = faults_upstream.ledger(), faults_upstream.stats()["requests"]
    outcomes = _run_all(faults_server, fault, failover=True)
    # Each call met the fault first: on the fake (a second request, then, per call) or on the network.
    tries = 2 if fault in MODEL_FAULTS else 1
    assert faults_upstream.stats()["requests"] - requests == tries * len(outcomes)
    problems = {
        o.surface.name: f"{type(o.error).__name__}: {o.error}" if o.error else f"got {o.received.text!r}"
        for o in outcomes
        if o.error is not None or o.received.text.strip() != (REPLY.strip() if not o.surface.embedding else "1 vector")
    }
    assert not problems, f"{fault}: {problems}"
    rows = logged_rows(faults_server, {o.model for o in outcomes}, len(outcomes))
    assert {(row.status_code, row.error_code) for row in rows} == {(200, None)}
    assert {row.upstream.split("-")[0] for row in rows} == {"b"}, "served by the second upstream"
    made = _ledger_delta(before, faults_upstream.ledger(), "fake-chat")
    generated = [row for row in rows if row.endpoint == "chat"]  # the ledger counts generations, not embeddings
    assert sum(row.prompt_tokens for row in generated) == made["prompt_tokens"]
    assert sum(row.completion_tokens for row in generated) == made["completion_tokens"]
    embedded = [row for row in rows if row.endpoint == "embeddings"]
    assert [row.prompt_tokens for row in embedded] == [len(PROMPT.split())] * 2
    assert_nothing_left(faults_server, faults_upstream, tasks_before=tasks_before)
