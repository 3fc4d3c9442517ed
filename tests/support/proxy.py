"""A TCP proxy in front of a server that can go silent: bytes stop flowing and nobody closes a socket, as when a
network path to Redis is cut (a blackhole), which costs a client its timeouts rather than a quick refusal."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SilentProxy:
    """Forwards to host:port until `silent` is set; then every connection, old or new, hears nothing."""

    host: str
    port: int
    silent: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)
    _relays: set[asyncio.Task[Any]] = field(default_factory=set)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if self.silent.is_set():
                    continue  # swallowed: the other side waits for an answer that never comes
                writer.write(data)
                await writer.drain()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if (task := asyncio.current_task()) is not None:
            self._relays.add(task)
            task.add_done_callback(self._relays.discard)
        self._writers.append(client_writer)
        if self.silent.is_set():
            with contextlib.suppress(ConnectionError, OSError):
                await client_reader.read()  # accepted, never answered (until the client gives up)
            return
        try:
            server_reader, server_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            client_writer.close()
            return
        self._writers.append(server_writer)
        await asyncio.gather(self._pump(client_reader, server_writer), self._pump(server_reader, client_writer))

    async def close_all(self) -> None:
        """Close every connection made so far, and wait until their relays have ended."""
        for writer in self._writers:
            writer.close()
        self._writers.clear()
        if self._relays:
            await asyncio.wait(list(self._relays), timeout=5)


@contextlib.asynccontextmanager
async def silent_proxy(redis_url: str) -> AsyncIterator[SilentProxy]:
    """A SilentProxy in front of the Redis at `redis_url` (redis://host:port/db), on a free local port."""
    address, _, database = redis_url.split("//", 1)[1].partition("/")
    host, _, port = address.rpartition(":")
    proxy = SilentProxy(host, int(port))
    server = await asyncio.start_server(proxy._relay, "127.0.0.1", 0)
    proxy.url = f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/{database or '0'}"
    try:
        yield proxy
    finally:
        server.close()
        await proxy.close_all()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await server.wait_closed()
