"""The Redis event bus: publishing fails fast, and the listener recovers (announcing Signal.RECONNECTED) from a
closed, killed, silent or never-opened connection."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as redis

from gatehouse.core import bus as bus_module
from gatehouse.core.bus import RedisEventBus, Signal

pytestmark = pytest.mark.redis
EVENT_WAIT = 15.0  # seconds; generous, a slow machine is not a failure


class Recorder:
    """A bus handler (and a stand-in logger) that keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.logged: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        self.events.append((kind, data))

    def __getattr__(self, level: str) -> Any:
        def record(event: str, **fields: Any) -> None:
            self.logged.append((level, event, fields))

        return record

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]

    async def wait_for(self, kind: str, count: int = 1) -> None:
        async with asyncio.timeout(EVENT_WAIT):
            while self.kinds().count(kind) < count:
                await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def started(url: str, prefix: str, **kwargs: Any) -> AsyncIterator[tuple[RedisEventBus, Recorder]]:
    bus = RedisEventBus(url, prefix=prefix, **kwargs)
    recorder = Recorder()
    bus.subscribe(recorder)
    await bus.start()
    try:
        yield bus, recorder
    finally:
        await bus.close()


async def delivered_across(sender: RedisEventBus, receiver: Recorder, kind: str) -> None:
    """An event published by `sender` reaches `receiver` (retried: a fresh subscription may still be settling)."""
    async with asyncio.timeout(EVENT_WAIT):
        while kind not in receiver.kinds():
            await sender.publish(kind, {"n": 1})
            await asyncio.sleep(0.1)


async def kill_client(url: str, name: str) -> None:
    """Close a client's connection from the server side, as a Redis restart or a proxy timeout would."""
    admin = redis.Redis.from_url(url, decode_responses=True)
    try:
        async with asyncio.timeout(EVENT_WAIT):
            while True:
                ids = [c["id"] for c in await admin.client_list() if c.get("name") == name]
                if ids:
                    for client_id in ids:
                        await admin.client_kill_filter(_id=client_id)
                    return
                await asyncio.sleep(0.05)
    finally:
        await admin.aclose()


async def test_events_cross_between_buses(redis_url: str, redis_key_prefix: str) -> None:
    async with (
        started(redis_url, redis_key_prefix) as (one, heard_by_one),
        started(redis_url, redis_key_prefix) as (_, heard_by_two),
    ):
        await one.publish("key.changed", {"key_id": 7})
        assert ("key.changed", {"key_id": 7}) in heard_by_one.events  # delivered locally before returning
        await heard_by_two.wait_for("key.changed")
        assert heard_by_one.kinds().count("key.changed") == 1  # its own echo is skipped
        assert Signal.RECONNECTED not in heard_by_one.kinds() + heard_by_two.kinds()


async def test_publish_to_a_silent_redis_gives_up_quickly(
    redis_key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server that accepts connections and never answers: a blackholed Redis, as seen from the client.
    accepted: list[asyncio.StreamWriter] = []

    async def swallow(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    recorder = Recorder()
    monkeypatch.setattr(bus_module, "log", recorder)
    bus = RedisEventBus(f"redis://127.0.0.1:{port}/0", prefix=redis_key_prefix)
    heard = Recorder()
    bus.subscribe(heard)
    try:
        began = time.monotonic()
        await bus.publish("key.changed", {"key_id": 1})
        took = time.monotonic() - began
    finally:
        await bus.close()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
    assert took < 3.5, f"publish took {took:.1f} s"
    assert heard.events == [("key.changed", {"key_id": 1})]  # this replica still acted at once
    assert ("error", "bus_publish_failed") in [(level, event) for level, event, _ in recorder.logged]


async def test_publish_with_redis_down_returns_and_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    with contextlib.closing(__import__("socket").socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: nothing listens there
    recorder = Recorder()
    monkeypatch.setattr(bus_module, "log", recorder)
    bus = RedisEventBus(f"redis://127.0.0.1:{port}/0", prefix="unused:")
    try:
        began = time.monotonic()
        await bus.publish("user.changed", {"user_id": 1})
        assert time.monotonic() - began < 3.5
    finally:
        await bus.close()
    assert "bus_publish_failed" in [event for _, event, _ in recorder.logged]


@pytest.mark.parametrize("how", ["pool_disconnect", "server_kill"])
async def test_listener_recovers_and_announces_reconnected(redis_url: str, redis_key_prefix: str, how: str) -> None:
    async with (
        started(redis_url, redis_key_prefix) as (listener, heard),
        started(redis_url, redis_key_prefix) as (sender, _),
    ):
        await delivered_across(sender, heard, "before")
        if how == "pool_disconnect":
            await listener._listener.connection_pool.disconnect()
            await listener._redis.connection_pool.disconnect()
        else:
            await kill_client(redis_url, f"gatehouse-bus-{listener.origin}")
        await heard.wait_for(Signal.RECONNECTED)
        await delivered_across(sender, heard, "after")
        # And it still publishes after its own connections were dropped.
        heard_by_sender = Recorder()
        sender.subscribe(heard_by_sender)
        await delivered_across(listener, heard_by_sender, "from-listener")


async def test_a_silent_connection_is_noticed_and_replaced(redis_url: str, redis_key_prefix: str) -> None:
    # A proxy in front of Redis that can go silent: bytes stop flowing, but no side closes its socket.
    host, port = redis_url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    silent = asyncio.Event()
    links: list[asyncio.StreamWriter] = []

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, born_silent: bool) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if silent.is_set() and not born_silent:
                    continue  # the old connection is blackholed
                writer.write(data)
                await writer.drain()

    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(host, int(port))
        links.extend([client_writer, server_writer])
        born_silent = silent.is_set()  # connections made after the failure work again
        await asyncio.gather(
            pump(client_reader, server_writer, born_silent), pump(server_reader, client_writer, born_silent)
        )

    proxy = await asyncio.start_server(relay, "127.0.0.1", 0)
    proxy_url = f"redis://127.0.0.1:{proxy.sockets[0].getsockname()[1]}/0"
    try:
        async with (
            started(proxy_url, redis_key_prefix, heartbeat_seconds=0.5) as (_, heard),
            started(redis_url, redis_key_prefix) as (sender, _),
        ):
            await delivered_across(sender, heard, "before")
            silent.set()
            await heard.wait_for(Signal.RECONNECTED)
            await delivered_across(sender, heard, "after")
    finally:
        for writer in links:
            writer.close()
        proxy.close()
        await proxy.wait_closed()


async def test_first_subscription_after_a_failed_start_announces_reconnected(
    redis_url: str, redis_key_prefix: str
) -> None:
    bus = RedisEventBus(redis_url, prefix=redis_key_prefix)
    heard = Recorder()
    bus.subscribe(heard)
    real_pubsub: Callable[..., Any] = bus._listener.pubsub
    attempts = 0

    def down_at_first(**kwargs: Any) -> Any:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise redis.ConnectionError("Redis is not up yet")
        return real_pubsub(**kwargs)

    bus._listener.pubsub = down_at_first  # type: ignore[method-assign]
    try:
        await bus.start()
        await heard.wait_for(Signal.RECONNECTED)
        assert attempts >= 2
    finally:
        await bus.close()
