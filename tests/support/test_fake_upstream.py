"""Checks the fake upstream against the official openai/ollama clients and raw HTTP."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import ollama
import openai
import orjson
import pytest

from tests.support.fake_upstream import (
    MODELS,
    FakeUpstream,
    fake_embedding,
    last_user_text,
    prompt_token_count,
    reply_text,
    reply_tokens,
    run_fake_upstream,
)

API_KEY = "sk-fake-test"
# typed loosely so the same list satisfies both the openai and ollama client signatures
MESSAGES: list[Any] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the gateway"},
]
PROMPT_TOKENS = prompt_token_count(MESSAGES)  # 3 + 5 words + 2 * 4


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    """One fake upstream (no API key) shared by the module."""
    with run_fake_upstream() as up:
        yield up


@pytest.fixture
def up(upstream: FakeUpstream) -> FakeUpstream:
    """The shared upstream with counters and request log cleared."""
    upstream.reset()
    return upstream


@pytest.fixture
def oai(upstream: FakeUpstream) -> openai.OpenAI:
    """OpenAI client without retries, so error cases stay fast."""
    return openai.OpenAI(base_url=upstream.url + "/v1", api_key="unused", max_retries=0, timeout=5.0)


@pytest.fixture
def oll(upstream: FakeUpstream) -> ollama.Client:
    """Ollama client pointed at the fake upstream."""
    return ollama.Client(host=upstream.url, timeout=5.0)


def _http(up: FakeUpstream, timeout: float = 5.0) -> httpx.Client:
    return httpx.Client(base_url=up.url, timeout=timeout, trust_env=False)


def _sse_events(lines: list[str]) -> list[str]:
    return [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]


def _drain_lines(client: httpx.Client, path: str, body: dict[str, Any], sink: list[str]) -> None:
    """Stream a POST response into `sink` line by line (keeping what arrived before any error)."""
    with client.stream("POST", path, json=body) as r:
        for line in r.iter_lines():
            sink.append(line)


def _drain_openai_stream(stream: Iterable[Any], sink: list[str]) -> None:
    """Collect the content deltas of an openai chat stream into `sink`."""
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            sink.append(chunk.choices[0].delta.content)


# ---- OpenAI protocol ---------------------------------------------------------------------------


def test_prompt_token_formula() -> None:
    assert PROMPT_TOKENS == 3 + 5 + 8
    parts = [{"role": "user", "content": [{"type": "text", "text": "a b"}, {"type": "image_url"}]}]
    assert prompt_token_count(parts) == 2 + 4


def test_openai_models_list(oai: openai.OpenAI) -> None:
    ids = [m.id for m in oai.models.list()]
    assert ids == list(MODELS)
    assert oai.models.retrieve("fake-chat").owned_by == "fake"


def test_openai_chat_non_stream(up: FakeUpstream, oai: openai.OpenAI) -> None:
    resp = oai.chat.completions.create(model="fake-chat", messages=MESSAGES)
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == reply_text(MESSAGES, 8)
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (PROMPT_TOKENS, 8)
    assert resp.usage.total_tokens == PROMPT_TOKENS + 8

    capped = oai.chat.completions.create(
        model="fake-chat",
        messages=MESSAGES,
        max_completion_tokens=3,
    )
    assert capped.choices[0].finish_reason == "length"
    assert capped.choices[0].message.content == reply_text(MESSAGES, 3)
    assert capped.usage is not None
    assert capped.usage.completion_tokens == 3


def test_openai_chat_stream_with_usage(up: FakeUpstream, oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="fake-chat",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=5,
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply_text(MESSAGES, 5)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["length"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (PROMPT_TOKENS, 5)
    assert all(c.usage is None for c in chunks[:-1])


def test_openai_raw_stream_wire_format(up: FakeUpstream) -> None:
    body = {
        "model": "fake-chat",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with _http(up) as client, client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    assert raw.endswith("data: [DONE]\n\n")
    events = _sse_events(raw.split("\n"))
    chunks = [orjson.loads(e) for e in events[:-1]]
    # every chunk but the last carries an explicit "usage": null, as OpenAI does
    assert all("usage" in c and c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["usage"]["completion_tokens"] == 8
    expected = reply_tokens(last_user_text(MESSAGES), 8)
    assert [c["choices"][0]["delta"] for c in chunks[1:9]] == [{"content": t} for t in expected]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[9]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}

    # without include_usage there is no usage key at all and no usage chunk
    body.pop("stream_options")
    with _http(up) as client:
        raw = client.post("/v1/chat/completions", json=body).text
    chunks = [orjson.loads(e) for e in _sse_events(raw.split("\n"))[:-1]]
    assert len(chunks) == 1 + 8 + 1
    assert all("usage" not in c for c in chunks)


def test_openai_embeddings(up: FakeUpstream, oai: openai.OpenAI) -> None:
    # The openai client asks for base64 by default and decodes it; floats are requested explicitly.
    for fmt in ("float", None):
        kwargs: dict[str, Any] = {"encoding_format": fmt} if fmt else {}
        resp = oai.embeddings.create(model="fake-embed", input=["hello world", "bye"], **kwargs)
        assert [d.index for d in resp.data] == [0, 1]
        for d, text in zip(resp.data, ["hello world", "bye"], strict=True):
            assert d.embedding == pytest.approx(fake_embedding(text), abs=1e-6)
            assert len(d.embedding) == 8
        assert (resp.usage.prompt_tokens, resp.usage.total_tokens) == (3, 3)
    single = oai.embeddings.create(model="fake-embed", input="hello world", encoding_format="float")
    assert single.data[0].embedding == fake_embedding("hello world")
    tokens = oai.embeddings.create(model="fake-embed", input=[[1, 2, 3]], encoding_format="float")
    assert tokens.usage.prompt_tokens == 3
    assert up.stats()["embed_requests"] == 4


def test_openai_unknown_model_and_error(up: FakeUpstream, oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as nf:
        oai.chat.completions.create(model="nope", messages=MESSAGES)
    assert nf.value.status_code == 404
    assert nf.value.code == "model_not_found"
    assert "model 'nope' not found" in nf.value.message
    with pytest.raises(openai.InternalServerError) as err:
        oai.chat.completions.create(model="fake-error", messages=MESSAGES, stream=True)
    assert err.value.status_code == 500


# ---- Ollama protocol ---------------------------------------------------------------------------


def test_ollama_list_and_version(up: FakeUpstream, oll: ollama.Client) -> None:
    listed = oll.list()
    assert [m.model for m in listed.models] == list(MODELS)
    first = listed.models[0]
    assert first.details is not None
    assert first.details.family == "fake"
    assert first.digest is not None
    assert len(first.digest) == 64
    with _http(up) as client:
        assert client.get("/api/version").json() == {"version": "0.5.0"}
        assert client.get("/api/tags").json()["models"][0]["name"] == "fake-chat"


def test_ollama_chat_stream_and_non_stream(up: FakeUpstream, oll: ollama.Client) -> None:
    parts = list(oll.chat(model="fake-chat", messages=MESSAGES, stream=True))
    assert [p.done for p in parts] == [False] * 8 + [True]
    assert "".join(p.message.content or "" for p in parts) == reply_text(MESSAGES, 8)
    last = parts[-1]
    assert last.done_reason == "stop"
    assert (last.prompt_eval_count, last.eval_count) == (PROMPT_TOKENS, 8)
    assert last.total_duration is not None
    assert last.total_duration > 0

    whole = oll.chat(model="fake-chat", messages=MESSAGES, stream=False, options={"num_predict": 4})
    assert whole.done
    assert whole.done_reason == "length"
    assert whole.message.content == reply_text(MESSAGES, 4)
    assert (whole.prompt_eval_count, whole.eval_count) == (PROMPT_TOKENS, 4)


def test_ollama_streams_by_default(up: FakeUpstream) -> None:
    with _http(up) as client:
        r = client.post("/api/chat", json={"model": "fake-chat", "messages": MESSAGES})
    assert r.headers["content-type"] == "application/x-ndjson"
    lines = [orjson.loads(line) for line in r.text.splitlines()]
    assert len(lines) == 9
    assert lines[-1]["done"] is True
    assert lines[-1]["eval_count"] == 8


def test_ollama_embed(up: FakeUpstream, oll: ollama.Client) -> None:
    resp = oll.embed(model="fake-embed", input=["hello world", "bye"])
    assert [list(e) for e in resp.embeddings] == [fake_embedding("hello world"), fake_embedding("bye")]
    assert resp.prompt_eval_count == 3
    assert oll.embed(model="fake-embed", input="bye").embeddings[0] == fake_embedding("bye")


def test_ollama_unknown_model_and_error(up: FakeUpstream, oll: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as nf:
        oll.chat(model="nope", messages=MESSAGES, stream=False)
    assert nf.value.status_code == 404
    assert nf.value.error == 'model "nope" not found, try pulling it first'
    with pytest.raises(ollama.ResponseError) as err:
        list(oll.chat(model="fake-error", messages=MESSAGES, stream=True))
    assert err.value.status_code == 500


# ---- failure modes -----------------------------------------------------------------------------


def test_midfail_breaks_streams(up: FakeUpstream, oai: openai.OpenAI) -> None:
    received: list[str] = []
    stream = oai.chat.completions.create(
        model="fake-midfail",
        messages=MESSAGES,
        stream=True,
    )
    with pytest.raises((httpx.RemoteProtocolError, openai.APIError)):
        _drain_openai_stream(stream, received)
    assert "".join(received) == reply_text(MESSAGES, 3)

    lines: list[str] = []
    with _http(up) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            _drain_lines(client, "/api/chat", {"model": "fake-midfail", "messages": MESSAGES}, lines)
        assert len(lines) == 3
        assert all('"done":true' not in line for line in lines)
        # non-stream requests are cut off too
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/v1/chat/completions", json={"model": "fake-midfail", "messages": MESSAGES})
    stats = up.stats()
    assert stats["aborted"] == 3
    assert stats["completion_tokens_served"] == 6


def test_nousage_reports_no_usage(up: FakeUpstream, oai: openai.OpenAI, oll: ollama.Client) -> None:
    resp = oai.chat.completions.create(model="fake-nousage", messages=MESSAGES)
    assert resp.usage is None
    assert resp.choices[0].message.content == reply_text(MESSAGES, 8)
    chunks = list(
        oai.chat.completions.create(
            model="fake-nousage",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)  # no trailing usage-only chunk
    final = oll.chat(model="fake-nousage", messages=MESSAGES, stream=False)
    assert final.done
    assert final.prompt_eval_count is None
    assert final.eval_count is None


def test_stats_count_served_tokens(up: FakeUpstream, oai: openai.OpenAI, oll: ollama.Client) -> None:
    oai.chat.completions.create(model="fake-chat", messages=MESSAGES)
    list(oai.chat.completions.create(model="fake-chat", messages=MESSAGES, stream=True, max_tokens=5))
    list(oll.chat(model="fake-chat", messages=MESSAGES, stream=True, options={"num_predict": 2}))
    stats = up.stats()
    assert stats["completion_tokens_served"] == 8 + 5 + 2
    assert stats["prompt_tokens"] == 3 * PROMPT_TOKENS
    assert stats["requests"] == stats["chat_requests"] == 3
    assert stats["disconnects"] == 0
    assert stats["in_flight"] == 0

    logged = up.requests()
    assert [r["path"] for r in logged] == ["/v1/chat/completions", "/v1/chat/completions", "/api/chat"]
    assert logged[1]["body"]["max_tokens"] == 5
    assert "authorization" not in logged[0]["headers"]
    assert logged[0]["headers"]["content-type"] == "application/json"


def test_slow_model_paces_tokens(up: FakeUpstream) -> None:
    body = {"model": "fake-slow", "messages": MESSAGES, "stream": True, "max_tokens": 3}
    started = time.perf_counter()
    with _http(up) as client:
        client.post("/v1/chat/completions", json=body).raise_for_status()
    assert time.perf_counter() - started >= 0.14


def test_client_disconnect_mid_stream_is_counted(up: FakeUpstream) -> None:
    body = {"model": "fake-long", "messages": MESSAGES, "stream": True}
    with _http(up) as client, client.stream("POST", "/v1/chat/completions", json=body) as r:
        seen = 0
        for line in r.iter_lines():
            if line.startswith("data: "):
                seen += 1
            if seen == 5:
                break  # leaving the block closes the connection mid-stream
    stats = up.wait_for_stats(lambda s: s["disconnects"] == 1 and s["in_flight"] == 0)
    assert 4 <= stats["completion_tokens_served"] < 200
    time.sleep(0.05)
    assert up.stats()["disconnects"] == 1  # counted exactly once


def test_hang_never_answers_and_counts_disconnect(up: FakeUpstream) -> None:
    with _http(up, timeout=0.3) as client, pytest.raises(httpx.ReadTimeout):
        client.post("/api/chat", json={"model": "fake-hang", "messages": MESSAGES, "stream": False})
    stats = up.wait_for_stats(lambda s: s["disconnects"] == 1 and s["in_flight"] == 0)
    assert stats["completion_tokens_served"] == 0


# ---- auth and process lifecycle ----------------------------------------------------------------


def test_api_key_enforced_and_clean_sigterm_exit() -> None:
    with run_fake_upstream(api_key=API_KEY, tokens=4) as up:
        bad = openai.OpenAI(base_url=up.url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        good = openai.OpenAI(base_url=up.url + "/v1", api_key=API_KEY, max_retries=0)
        resp = good.chat.completions.create(model="fake-chat", messages=MESSAGES)
        assert resp.usage is not None
        assert resp.usage.completion_tokens == 4

        with pytest.raises(ollama.ResponseError) as denied:
            ollama.Client(host=up.url).list()
        assert denied.value.status_code == 401
        assert denied.value.error == "unauthorized"
        authed = ollama.Client(host=up.url, headers={"Authorization": f"Bearer {API_KEY}"})
        assert len(authed.list().models) == len(MODELS)

        assert up.stats()["requests"] == 4  # control endpoints need no key and are not counted
        up.process.send_signal(signal.SIGTERM)
        assert up.process.wait(timeout=10) == 0


def test_sigint_exits_cleanly_with_request_in_flight() -> None:
    with run_fake_upstream(latency=30) as up:
        outcome: list[object] = []

        def call() -> None:
            try:
                with _http(up, timeout=10) as client:
                    r = client.post("/v1/chat/completions", json={"model": "fake-chat", "messages": MESSAGES})
                    outcome.append(r.status_code)
            except httpx.HTTPError as exc:
                outcome.append(exc)

        worker = threading.Thread(target=call)
        worker.start()
        up.wait_for_stats(lambda s: s["in_flight"] == 1)
        started = time.perf_counter()
        # A request stuck in --latency must not keep the process alive past the grace period.
        up.process.send_signal(signal.SIGINT)
        assert up.process.wait(timeout=10) == 0
        assert time.perf_counter() - started < 5
        worker.join(timeout=10)
        # uvicorn cancels the stuck request at the end of the grace period and answers it with a 500
        assert not worker.is_alive()
        assert len(outcome) == 1
        assert outcome[0] == 500 or isinstance(outcome[0], httpx.HTTPError)
