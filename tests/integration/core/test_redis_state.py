"""The shared Redis state: one failure marks Redis down (metric, log, live feed, listeners), a probe brings it back
up when Redis answers; the bus holds its signals back meanwhile and sends them then; the live feed buffers and
never raises. Real Redis servers, stopped and started again (a throwaway one of the test's own)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from gatehouse.core.bus import RedisEventBus
from gatehouse.core.feed import EventFeed
from gatehouse.core.feed_redis import RedisEventFeed
from gatehouse.core.redis_state import RESTORED, UNAVAILABLE, RedisState
from tests.support.proxy import silent_proxy
from tests.support.services import ThrowawayServer, start_throwaway_redis

pytestmark = pytest.mark.redis
WAIT = 10.0  # seconds; generous, a slow machine is not a failure


@pytest.fixture
def own_redis() -> Iterator[ThrowawayServer]:
    """A redis-server this test may stop (never the shared one)."""
    server = start_throwaway_redis()
    try:
        yield server
    finally:
        server.stop()


def redis_up_gauge() -> float | None:
    return REGISTRY.get_sample_value("gatehouse_redis_up")


async def eventually(check: Any, seconds: float = WAIT) -> None:
    async with asyncio.timeout(seconds):
        while not check():
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def state_of(url: str, **kwargs: Any) -> AsyncIterator[RedisState]:
    state = RedisState(url, **kwargs)
    await state.start()
    try:
        yield state
    finally:
        await state.close()


async def test_a_failure_marks_redis_down_until_the_probe_hears_it(own_redis: ThrowawayServer) -> None:
    feed = EventFeed(replica="r")
    heard: list[bool] = []
    async with state_of(own_redis.url, probe_seconds=0.2) as state:
        state.announce_on(feed)
        state.subscribe(heard.append)
        assert state.up and redis_up_gauge() == 1
        own_redis.stop()
        state.failed(ConnectionError("refused"), by="test")
        state.failed(ConnectionError("again"), by="test")  # once per outage
        assert not state.up and heard == [False] and redis_up_gauge() == 0
        assert state.down_since is not None and state.error == "ConnectionError: refused"
        await asyncio.sleep(0.6)  # a few probes fail meanwhile
        assert not state.up and state.error != "ConnectionError: refused"
        assert not await state.wait_up(0.1)
        restarted = start_throwaway_redis(own_redis.port)
        try:
            assert await state.wait_up(WAIT)
        finally:
            restarted.stop()
        assert heard == [False, True] and redis_up_gauge() == 1 and state.down_since is None
    kinds = [e.kind for e in (await feed.read("0")).events]
    assert kinds == [UNAVAILABLE, RESTORED]
    unavailable, restored = (await feed.read("0")).events
    assert unavailable.data == {"error": "ConnectionError: refused", "noticed_by": "test"}
    assert restored.data["down_seconds"] >= 0.6


async def test_a_replica_starting_while_redis_is_away_knows_it_at_once(own_redis: ThrowawayServer) -> None:
    own_redis.stop()
    started = time.perf_counter()
    async with state_of(own_redis.url) as state:
        assert time.perf_counter() - started < 2
        assert not state.up and state.error is not None


async def test_without_redis_url_it_is_always_up() -> None:
    async with state_of("") as state:
        state.failed(ConnectionError("x"), by="test")
        assert state.up and not state.configured and await state.wait_up(0)


async def test_the_bus_holds_signals_while_redis_is_down_and_sends_them_after(
    redis_url: str, redis_key_prefix: str
) -> None:
    heard: list[tuple[str, dict[str, Any]]] = []
    async with state_of(redis_url, probe_seconds=0.3) as state:
        sender = RedisEventBus(redis_url, prefix=redis_key_prefix, state=state)
        receiver = RedisEventBus(redis_url, prefix=redis_key_prefix)
        receiver.subscribe(lambda kind, data: heard.append((kind, data)))
        await sender.start()
        await receiver.start()
        try:
            # This replica found Redis unreachable (a blip): its signals wait, the other's subscription lives on.
            state.failed(ConnectionError("blip"), by="test")
            began = time.perf_counter()
            await sender.publish("key.changed", {"key_id": 1})
            await sender.publish("user.changed", {"user_id": 2})
            assert time.perf_counter() - began < 0.1  # nothing waited for Redis
            assert heard == []
            await eventually(lambda: len(heard) == 2)  # sent, in order, once the probe heard Redis
            assert heard == [("key.changed", {"key_id": 1}), ("user.changed", {"user_id": 2})]
        finally:
            await sender.close()
            await receiver.close()


async def test_a_silent_redis_drops_the_subscription_and_caches_catch_up(redis_url: str, redis_key_prefix: str) -> None:
    heard: list[str] = []
    async with silent_proxy(redis_url) as proxy, state_of(proxy.url, probe_seconds=0.2) as state:
        bus = RedisEventBus(proxy.url, prefix=redis_key_prefix, state=state)
        bus.subscribe(lambda kind, data: heard.append(kind))
        await bus.start()
        try:
            proxy.silent.set()
            state.failed(TimeoutError("no answer"), by="test")  # as the rate limiter's call would
            await asyncio.sleep(1.5)  # the quiet subscription is dropped, not trusted
            proxy.silent.clear()
            await eventually(lambda: "bus.reconnected" in heard, 5)
        finally:
            await bus.close()


async def test_the_redis_feed_buffers_outage_events_and_sends_them_when_redis_is_back(
    own_redis: ThrowawayServer, redis_key_prefix: str
) -> None:
    async with state_of(own_redis.url, probe_seconds=0.2) as state:
        feed = RedisEventFeed(own_redis.url, prefix=redis_key_prefix, replica="r", state=state)
        state.announce_on(feed)
        await feed.start()
        restarted: ThrowawayServer | None = None
        try:
            own_redis.stop()
            state.failed(ConnectionError("refused"), by="test")
            for n in range(50):  # the gateway keeps publishing: never blocks, never raises
                feed.publish("stream.started", {"n": n})
            restarted = start_throwaway_redis(own_redis.port)
            assert await state.wait_up(WAIT)

            async def kinds() -> list[str]:
                return [e.kind for e in (await feed.read("0-0")).events]

            async with asyncio.timeout(WAIT):
                while RESTORED not in await kinds():
                    await asyncio.sleep(0.05)
            seen = await kinds()
            assert seen[0] == UNAVAILABLE and seen.count("stream.started") == 50
        finally:
            await feed.close()
            if restarted is not None:
                restarted.stop()
