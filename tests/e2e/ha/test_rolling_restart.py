"""A rolling restart of the local HA topology under steady mixed load fails no request and loses no usage.

Three replicas behind HAProxy on PostgreSQL + Redis; clients on every surface through the proxy (the official
openai, anthropic and ollama packages for the short answers, streamed or not; raw httpx for the long streams, whose
last event is checked exactly); `scripts/local-ha.sh roll` restarts each replica in turn with a SIGTERM. Every short
request gets its whole answer; a long stream either finishes or, when it outlasts its replica's
SHUTDOWN_DEADLINE_SECONDS, ends with `shutdown_deadline` in its surface's shape; the usage the database recorded
equals the fake upstream's ledger of what it generated, and nothing stays reserved."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest

from tests.e2e.ha.conftest import OLD_UPSTREAM_KEY, REPLICAS, Topology, local_ha
from tests.e2e.ha.surfaces import SHUTDOWN_CODE, SURFACES, StreamResult, query, stream
from tests.support.fake_upstream import run_fake_upstream

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
SHORT, LONG = "fake-chat", "fake-long"  # 8 tokens (0.4 s) and 200 tokens (10 s) at TOKEN_DELAY
TOKEN_DELAY = 0.05
DRAIN_SECONDS = 3  # HAProxy's checks: inter 1s fall 2, out within (2 + 1) x 1 s
DEADLINE_SECONDS = 4  # well under a long stream: every replica holds some when it stops
SHORT_CLIENTS = 6
LONG_CLIENTS = 6
SHORT_KINDS = ("chat", "chat-stream", "responses", "responses-stream", "messages-stream", "ollama-stream")


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    """The local HA topology with shutdown settings short enough for a test, over an upstream of its own."""
    workdir = tmp_path_factory.mktemp("local-ha-roll")
    with (
        run_fake_upstream(api_key=OLD_UPSTREAM_KEY, token_delay=TOKEN_DELAY) as upstream,
        local_ha(
            workdir,
            upstream,
            SHUTDOWN_DRAIN_SECONDS=str(DRAIN_SECONDS),
            SHUTDOWN_DEADLINE_SECONDS=str(DEADLINE_SECONDS),
            HA_STOP_TIMEOUT=str(DRAIN_SECONDS + DEADLINE_SECONDS + 20),
        ) as topology,
    ):
        yield topology


@dataclass(frozen=True)
class Short:
    """One short request and how it went."""

    kind: str
    error: str | None


def _messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


class ShortClients:
    """The official SDKs through the proxy, no retries: a failure the gateway causes shows."""

    def __init__(self, topology: Topology) -> None:
        key, url = topology.admin_key, topology.proxy_url
        self.openai = openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)
        self.anthropic = anthropic.AsyncAnthropic(base_url=url, api_key=key, max_retries=0, timeout=60)
        self.ollama = ollama.AsyncClient(host=url, headers={"authorization": f"Bearer {key}"}, timeout=60)
        calls = (self.chat, self.chat_stream, self.responses, self.responses_stream, self.messages_stream)
        self.kinds: dict[str, Callable[[str], Awaitable[None]]] = dict(
            zip(SHORT_KINDS, (*calls, self.ollama_stream), strict=True)
        )

    async def chat(self, text: str) -> None:
        completion = await self.openai.chat.completions.create(model=SHORT, messages=_messages(text))  # type: ignore[arg-type]
        assert completion.choices[0].finish_reason == "stop" and completion.choices[0].message.content

    async def chat_stream(self, text: str) -> None:
        chunks = await self.openai.chat.completions.create(model=SHORT, messages=_messages(text), stream=True)  # type: ignore[arg-type]
        finish = [c.choices[0].finish_reason async for c in chunks if c.choices]
        assert finish[-1] == "stop", finish

    async def responses(self, text: str) -> None:
        response = await self.openai.responses.create(model=SHORT, input=text)
        assert response.status == "completed" and response.output_text

    async def responses_stream(self, text: str) -> None:
        events = await self.openai.responses.create(model=SHORT, input=text, stream=True)
        kinds = [event.type async for event in events]
        assert kinds[-1] == "response.completed", kinds[-3:]

    async def messages_stream(self, text: str) -> None:
        events = await self.anthropic.messages.create(
            model=SHORT,
            max_tokens=100,
            messages=_messages(text),  # type: ignore[arg-type]
            stream=True,
        )
        kinds = [event.type async for event in events]
        assert kinds[-1] == "message_stop", kinds[-3:]

    async def ollama_stream(self, text: str) -> None:
        parts = [part async for part in await self.ollama.chat(model=SHORT, messages=_messages(text), stream=True)]
        assert parts[-1].done and parts[-1].done_reason == "stop", parts[-1]

    async def one(self, kind: str, text: str) -> Short:
        try:
            await self.kinds[kind](text)
        except Exception as exc:  # every failure counts, whatever its kind
            return Short(kind, f"{type(exc).__name__}: {exc}")
        return Short(kind, None)

    async def close(self) -> None:
        await self.openai.close()
        await self.anthropic.close()


async def _load(topology: Topology, stop: asyncio.Event) -> tuple[list[Short], list[StreamResult]]:
    shorts: list[Short] = []
    longs: list[StreamResult] = []
    clients = ShortClients(topology)
    kinds = list(clients.kinds)
    headers = {"authorization": f"Bearer {topology.admin_key}"}
    raw = httpx.AsyncClient(base_url=topology.proxy_url, headers=headers, timeout=60, trust_env=False)

    async def short_client(number: int) -> None:
        n = number
        while not stop.is_set():
            shorts.append(await clients.one(kinds[n % len(kinds)], f"short {number} {n}"))
            n += 1
            await asyncio.sleep(0.05)

    async def long_client(number: int) -> None:
        n = number
        while not stop.is_set():
            longs.append(await stream(raw, SURFACES[n % len(SURFACES)], LONG, f"long {number} {n}"))
            n += 1

    try:
        await asyncio.gather(
            *(short_client(n) for n in range(SHORT_CLIENTS)), *(long_client(n) for n in range(LONG_CLIENTS))
        )
    finally:
        await clients.close()
        await raw.aclose()
    return shorts, longs


def _recorded(topology: Topology) -> dict[str, Any]:
    """Per model and outcome, the request-log rows and their tokens; and what is still reserved."""
    rows = query(
        topology.database_url,
        "SELECT model, coalesce(error_code, ''), count(*), sum(prompt_tokens), sum(completion_tokens) "
        "FROM request_log GROUP BY model, coalesce(error_code, '')",
    )
    counters = query(topology.database_url, "SELECT sum(tokens), sum(reserved_tokens) FROM usage_counter")
    reservations = query(topology.database_url, "SELECT count(*) FROM quota_reservation")
    return {
        "rows": {(model, code): (int(n), int(p), int(c)) for model, code, n, p, c in rows},
        "counted": int(counters[0][0] or 0),
        "reserved": int(counters[0][1] or 0),
        "reservations": int(reservations[0][0]),
    }


def _settled(topology: Topology, answers: int) -> dict[str, Any]:
    """What the database holds once every answer's request-log row is in (they are written in batches)."""
    deadline = time.monotonic() + 20
    while True:
        recorded = _recorded(topology)
        logged = sum(n for n, _, _ in recorded["rows"].values())
        if (logged >= answers and recorded["reservations"] == 0) or time.monotonic() > deadline:
            return recorded
        time.sleep(0.2)


async def test_rolling_restart_under_mixed_load_fails_nothing_and_loses_no_usage(topology: Topology) -> None:
    upstream = topology.upstream
    before = topology.replica_ids()
    upstream.reset()
    stop = asyncio.Event()
    started = time.monotonic()
    load = asyncio.create_task(_load(topology, stop))
    try:
        await asyncio.sleep(3)  # every client under way, long streams on every replica
        rolled = await asyncio.to_thread(topology.script, "roll", timeout=300)
        await asyncio.sleep(2)
    finally:
        stop.set()
        shorts, longs = await load
    seconds = time.monotonic() - started
    assert "rolled 3 replicas" in rolled.stderr, rolled.stderr

    # Every replica is a new process, and serves.
    topology.forget_replica_ids()
    after = topology.replica_ids()
    assert all(after[name] != before[name] for name in REPLICAS), (before, after)

    failed = [s for s in shorts if s.error is not None]
    ended = [r for r in longs if r.ended_by_shutdown]
    broken = [r for r in longs if not r.finished and not r.ended_by_shutdown]
    finished = [r for r in longs if r.finished]
    ledger = await asyncio.to_thread(upstream.ledger)
    answers = sum(entry["answers"] for entry in ledger.values())
    recorded = await asyncio.to_thread(_settled, topology, answers)
    print(  # the report's figures
        f"roll: {seconds:.1f} s, {len(shorts)} short requests ({dict(Counter(s.kind for s in shorts))}), "
        f"{len(failed)} failed; {len(longs)} long streams: {len(finished)} finished, {len(ended)} ended at the "
        f"deadline ({dict(Counter(r.surface for r in ended))}), {len(broken)} broken; ledger {ledger}; "
        f"recorded {recorded}"
    )
    assert failed == [], f"{len(failed)} of {len(shorts)} short requests failed: {failed[:10]}"
    assert broken == [], f"{len(broken)} long streams failed otherwise: {broken[:5]}"
    assert {s.kind for s in shorts} == set(SHORT_KINDS), Counter(s.kind for s in shorts)
    assert ended, "no stream outlasted a replica's deadline: the test proved nothing about the deadline"
    assert {r.surface for r in finished} | {r.surface for r in ended} == set(SURFACES)

    # Every request reached the upstream exactly once: nothing was lost, nothing sent twice.
    short_ledger, long_ledger = ledger[SHORT], ledger[LONG]
    assert short_ledger["answers"] == len(shorts) and short_ledger["cut_short"] == 0, short_ledger
    assert long_ledger["answers"] == len(longs), long_ledger
    # Exactly the streams the clients saw ended at the deadline were cut short; the others finished.
    assert long_ledger["cut_short"] == len(ended), long_ledger
    assert long_ledger["finished"] == len(finished), long_ledger

    # Usage: the finished answers exactly as the upstream counted them; the cut ones what reached their clients.
    rows = recorded["rows"]
    assert set(rows) == {(SHORT, ""), (LONG, ""), (LONG, SHUTDOWN_CODE)}, rows
    assert rows[(SHORT, "")] == (
        short_ledger["answers"],
        short_ledger["finished_prompt_tokens"],
        short_ledger["finished_completion_tokens"],
    )
    assert rows[(LONG, "")] == (
        long_ledger["finished"],
        long_ledger["finished_prompt_tokens"],
        long_ledger["finished_completion_tokens"],
    )
    cut_rows, _, cut_completion = rows[(LONG, SHUTDOWN_CODE)]
    received = sum(r.chunks for r in ended)
    assert cut_rows == len(ended)
    # An OpenAI chat stream's first chunk (the role, empty) counts as one; a token per stream may have left the
    # upstream without reaching its client when the stream was ended.
    assert received <= cut_completion <= received + len(ended), (received, cut_completion)
    produced = long_ledger["cut_short_completion_tokens"]
    assert received <= produced <= received + len(ended), (received, produced)
    # Nothing stays reserved, and the day's counters hold exactly what the request log holds.
    assert recorded["reserved"] == 0 and recorded["reservations"] == 0, recorded
    assert recorded["counted"] == sum(p + c for _, p, c in rows.values()), recorded
