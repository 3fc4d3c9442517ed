"""The HA topology of scripts/local-ha.sh, through its proxy: every replica serves, an upstream key and JOB_TOKEN are
rotated with `gatehouse reload` without a failed request, and a replica restarts under load without one."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.ha.conftest import BACKEND_HEADER, OLD_JOB_TOKEN, OLD_UPSTREAM_KEY, REPLICAS, Topology
from tests.support.known_secrets import remember

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
MODEL = "fake-chat"  # discovered from the fake upstream by the OPENAI_BASE_URL shortcut
CLIENTS = 8  # concurrent clients of the steady load
PAUSE = 0.05  # each client's pause between two requests: a steady load, not a flood (2 cores run all of it)


def _messages(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def test_chat_and_stream_through_the_proxy_reach_every_replica(topology: Topology) -> None:
    """The official openai client through HAProxy: chats and streams answered, by each of the three replicas."""
    ids = topology.replica_ids()
    assert len(set(ids.values())) == len(REPLICAS), f"three replicas, three ids: {ids}"
    for url in topology.replica_urls:  # the URLs `up` printed are the replicas themselves
        assert httpx.get(url + "/readyz", timeout=5, trust_env=False).status_code == 200

    client = openai.OpenAI(base_url=topology.proxy_url + "/v1", api_key=topology.admin_key, max_retries=0, timeout=30)
    chats: set[str] = set()
    for n in range(2 * len(REPLICAS)):
        raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=_messages(f"hello {n}"))
        completion = raw.parse()
        assert completion.choices[0].message.content
        assert completion.usage is not None and completion.usage.completion_tokens == 8
        chats.add(raw.headers[BACKEND_HEADER])
    streams: set[str] = set()
    for n in range(2 * len(REPLICAS)):
        raw_stream = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=_messages(f"stream {n}"), stream=True, stream_options={"include_usage": True}
        )
        stream = raw_stream.parse()
        assert isinstance(stream, openai.Stream)
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8
        streams.add(raw_stream.headers[BACKEND_HEADER])
    assert chats == set(REPLICAS)
    assert streams == set(REPLICAS)


@dataclass(frozen=True)
class Outcome:
    """One request of the steady load."""

    started: float
    stream: bool
    backend: str | None
    error: str | None


async def _request(client: openai.AsyncOpenAI, n: int, *, stream: bool) -> Outcome:
    started = time.monotonic()
    backend = None
    try:
        if stream:
            raw_stream = await client.chat.completions.with_raw_response.create(
                model=MODEL, messages=_messages(f"load {n}"), stream=True
            )
            backend = raw_stream.headers.get(BACKEND_HEADER)
            chunks = raw_stream.parse()
            assert isinstance(chunks, openai.AsyncStream)
            finish = None
            async for chunk in chunks:
                if chunk.choices and chunk.choices[0].finish_reason:
                    finish = chunk.choices[0].finish_reason
            if finish != "stop":
                return Outcome(started, stream, backend, f"stream ended with finish_reason {finish!r}")
        else:
            raw = await client.chat.completions.with_raw_response.create(model=MODEL, messages=_messages(f"load {n}"))
            backend = raw.headers.get(BACKEND_HEADER)
            completion = raw.parse()
            if not completion.choices[0].message.content:
                return Outcome(started, stream, backend, "empty answer")
    except Exception as exc:  # every failure counts, whatever its kind
        return Outcome(started, stream, backend, f"{type(exc).__name__}: {exc}")
    return Outcome(started, stream, backend, None)


async def _steady_load(topology: Topology, stop: asyncio.Event, clients: int) -> list[Outcome]:
    """`clients` concurrent clients, each sending one request after another (streamed and not, in turn) until stop."""
    outcomes: list[Outcome] = []
    # No retries: a request the gateway fails must show here, not be hidden by the SDK's second attempt.
    client = openai.AsyncOpenAI(
        base_url=topology.proxy_url + "/v1", api_key=topology.admin_key, max_retries=0, timeout=30
    )

    async def one_client(number: int) -> None:
        n = 0
        while not stop.is_set():
            outcomes.append(await _request(client, n, stream=(n + number) % 2 == 0))
            n += 1
            await asyncio.sleep(PAUSE)

    try:
        await asyncio.gather(*(one_client(number) for number in range(clients)))
    finally:
        await client.close()
    return outcomes


def _failures(outcomes: list[Outcome]) -> list[str]:
    return [f"{o.backend or '?'}: {o.error}" for o in outcomes if o.error is not None]


async def test_upstream_key_rotation_under_load_fails_no_request(topology: Topology) -> None:
    """The provider accepts old and new keys; the new key goes into the key file; `gatehouse reload`; once every
    replica audited the reload the old key is revoked: no request fails, before, during or after."""
    upstream = topology.upstream
    new_key = remember("ha-upstream-key-new-" + secrets.token_hex(8), "the HA tests' rotated upstream key")
    refused_before = upstream.stats()["unauthorized"]
    stop = asyncio.Event()
    load = asyncio.create_task(_steady_load(topology, stop, CLIENTS))
    try:
        await asyncio.sleep(1.0)
        await asyncio.to_thread(upstream.set_keys, OLD_UPSTREAM_KEY, new_key)
        topology.write_secret("openai_api_key", new_key)
        since = datetime.now(UTC) - timedelta(seconds=1)
        await asyncio.to_thread(topology.gatehouse, "reload")
        reloaded = await asyncio.to_thread(topology.wait_reloaded, since, "openai_api_key")
        await asyncio.to_thread(upstream.set_keys, new_key)
        revoked_at = time.monotonic()
        await asyncio.sleep(2.0)
    finally:
        stop.set()
        outcomes = await load

    assert reloaded["replicas"] == set(topology.replica_ids().values())
    assert _failures(outcomes) == [], f"{len(_failures(outcomes))} of {len(outcomes)} requests failed"
    after = [o for o in outcomes if o.started > revoked_at]
    # Requests sent after the old key was revoked succeeded on every replica: each uses the new key.
    assert {o.backend for o in after} == set(REPLICAS)
    assert {o.stream for o in after} == {True, False}
    assert len(after) >= 3 * CLIENTS
    # And no replica ever sent the upstream a key it did not accept at that moment.
    assert upstream.stats()["unauthorized"] == refused_before


def _job_run(topology: Topology, token: str) -> httpx.Response:
    """POST /admin/jobs/purge/run with X-Job-Token (as an external scheduler does), through the proxy."""
    return httpx.post(
        topology.proxy_url + "/admin/jobs/purge/run", headers={"x-job-token": token}, timeout=30, trust_env=False
    )


def _on_every_replica(topology: Topology, token: str, check: Callable[[httpx.Response], None]) -> None:
    """Send the token until each replica has answered it, `check`ing every answer."""
    answered: set[str] = set()
    for _ in range(6 * len(REPLICAS)):
        answer = _job_run(topology, token)
        check(answer)
        answered.add(answer.headers[BACKEND_HEADER])
        if answered == set(REPLICAS):
            return
    raise AssertionError(f"only {sorted(answered)} answered")


def _runs(answer: httpx.Response) -> None:
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "ok", answer.text
    assert answer.json()["trigger"] == "token", answer.text


def _refused(answer: httpx.Response) -> None:
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"]["code"] == "invalid_token", answer.text


def test_job_token_rotation_keeps_the_old_token_inside_the_window(topology: Topology) -> None:
    """JOB_TOKEN rotated with JOB_TOKEN_PREVIOUS: both work on every replica during the window, only the new one
    after it is closed."""
    new_token = remember("ha-job-token-new-" + secrets.token_hex(8), "the HA tests' rotated JOB_TOKEN")
    _on_every_replica(topology, OLD_JOB_TOKEN, _runs)
    _on_every_replica(topology, new_token, _refused)

    topology.write_secret("job_token", new_token)
    topology.write_secret("job_token_previous", OLD_JOB_TOKEN)
    since = datetime.now(UTC) - timedelta(seconds=1)
    topology.gatehouse("reload")
    topology.wait_reloaded(since, "job_token")
    _on_every_replica(topology, new_token, _runs)
    _on_every_replica(topology, OLD_JOB_TOKEN, _runs)

    # The window closes through the API this time (POST /admin/reload, any replica; every one reloads).
    topology.write_secret("job_token_previous", "")
    since = datetime.now(UTC) - timedelta(seconds=1)
    with topology.admin() as client:
        answer = client.post("/admin/reload")
    assert answer.status_code == 200, answer.text
    assert answer.json()["ok"] is True
    assert [name.lower() for name in answer.json()["changed"]] == ["job_token_previous"]
    topology.wait_reloaded(since, "job_token_previous")
    _on_every_replica(topology, OLD_JOB_TOKEN, _refused)
    _on_every_replica(topology, new_token, _runs)


async def test_restart_replica_under_light_load_fails_no_request(topology: Topology) -> None:
    """`local-ha.sh restart-replica 2` (drain in HAProxy, graceful stop, start, back in) while two clients send
    requests: none fails, and the restarted replica serves again, as a new process."""
    before = topology.replica_ids()["r2"]
    stop = asyncio.Event()
    load = asyncio.create_task(_steady_load(topology, stop, 2))
    try:
        await asyncio.sleep(0.5)
        restarted = await asyncio.to_thread(topology.script, "restart-replica", "2")
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        outcomes = await load
    assert "replica 2 restarted" in restarted.stderr
    assert _failures(outcomes) == [], f"{len(_failures(outcomes))} of {len(outcomes)} requests failed"
    assert {o.backend for o in outcomes} == set(REPLICAS)
    # Back in HAProxy, as a new process (a new replica id), answering through the proxy.
    topology.forget_replica_ids()
    assert topology.replica_ids()["r2"] != before
