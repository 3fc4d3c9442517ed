"""Graceful shutdown on SIGTERM, in three steps, so that a rolling restart behind a proxy fails no request:

1. drain (SHUTDOWN_DRAIN_SECONDS): /readyz answers 503 "draining" at once while everything that arrives is still
   served, with `Connection: close`, long enough for the proxy's health checks to take the replica out;
2. stop: uvicorn stops accepting connections and waits for the requests in flight;
3. deadline (SHUTDOWN_DEADLINE_SECONDS after the drain): what still runs is ended with `shutdown_deadline` (each
   stream with an error event in its protocol's shape) and settled; uvicorn's own limit comes a little later.

A second SIGTERM skips what is left of the drain. SIGINT (Ctrl+C) stays uvicorn's: it stops at once, with the
deadline still ending long streams.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from gatehouse.core.logging import get_logger

log = get_logger("gatehouse.shutdown")
# After the deadline ended what still ran: time for those requests to send their error event and settle before
# uvicorn cancels whatever is left (its timeout_graceful_shutdown is the deadline plus this).
SETTLE_SECONDS = 5.0
Message = dict[str, Any]


class Shutdown:
    """Whether this process is draining (SIGTERM received); one per process, as signals are."""

    def __init__(self) -> None:
        self.draining_since: float | None = None

    @property
    def draining(self) -> bool:
        """True from the SIGTERM on: not ready, connections closed after each answer."""
        return self.draining_since is not None

    def begin(self) -> None:
        """Start draining (idempotent)."""
        if self.draining_since is None:
            self.draining_since = time.monotonic()


SHUTDOWN = Shutdown()
Handler = Callable[[int, FrameType | None], Any]


def install(
    shutdown: Shutdown, *, drain_seconds: float, deadline_seconds: float, on_deadline: Callable[[], int]
) -> Callable[[], None]:
    """Put the drain in front of the server's own SIGTERM handler (uvicorn's, which stops accepting and waits for
    the requests in flight); `on_deadline` ends what still runs and says how many. Returns the undo."""
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):  # not under a server that handles SIGTERM: nothing to put in front of
        return lambda: None
    server_stop: Handler = previous
    loop = asyncio.get_running_loop()
    drained = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    async def shut_down() -> None:
        log.info("shutdown_draining", drain_seconds=drain_seconds, deadline_seconds=deadline_seconds)
        try:
            async with asyncio.timeout(drain_seconds):
                await drained.wait()  # a second SIGTERM ends the drain early
        except TimeoutError:
            pass
        server_stop(signal.SIGTERM, None)
        await asyncio.sleep(deadline_seconds)
        ended = on_deadline()
        if ended:
            log.warning("shutdown_deadline", ended=ended, deadline_seconds=deadline_seconds)

    def start() -> None:
        task = loop.create_task(shut_down(), name="gatehouse-shutdown")
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        # A Python signal handler runs between two bytecodes of the loop's thread: hand over to the loop.
        if shutdown.draining:
            loop.call_soon_threadsafe(drained.set)
            return
        shutdown.begin()
        loop.call_soon_threadsafe(start)

    signal.signal(signal.SIGTERM, on_sigterm)

    def undo() -> None:
        signal.signal(signal.SIGTERM, server_stop)
        for task in tasks:
            task.cancel()

    return undo


class CloseWhileDraining:
    """Pure ASGI: while draining, every answer carries `Connection: close`, so no client or proxy sends another
    request on a connection this replica is about to close."""

    def __init__(self, app: Callable[..., Any], shutdown: Shutdown = SHUTDOWN) -> None:
        self.app = app
        self.shutdown = shutdown

    async def __call__(self, scope: Message, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        """Pass through; add the header to an HTTP answer's start once draining."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and self.shutdown.draining:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)
