"""A webhook receiver for the tests: an HTTP server on 127.0.0.1, in a thread of the test process (so that an
async test's app and a CLI command's own event loop reach it alike), recording every POST and answering as told.

`answers` are the answers to the first requests, in order: an HTTP status, or "hang" (take the request and never
answer, until the receiver closes); later requests get `then`. `verify` checks a request's signature as the
RUNBOOK tells receivers to, independently of Gatehouse's code.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

Answer = int | str


@dataclass(frozen=True)
class Received:
    """One request as the receiver got it."""

    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    at: float  # time.monotonic()

    def json(self) -> Any:
        return orjson.loads(self.body)


def verify(request: Received, secret: str) -> bool:
    """The RUNBOOK's check: HMAC-SHA256 of `<timestamp>.<body>` with the shared secret, compared in constant time."""
    timestamp = request.headers["x-gatehouse-timestamp"]
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(request.headers["x-gatehouse-signature"], f"sha256={expected}")


class WebhookReceiver:
    """Records POSTs; answers the first ones with `answers`, the rest with `then`."""

    def __init__(self, answers: Iterable[Answer] = (), then: Answer = 200) -> None:
        self.received: list[Received] = []
        self._answers = list(answers)
        self._then = then
        self._lock = threading.Lock()
        self._released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                answer = receiver._record(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                if answer == "hang":
                    receiver._released.wait(60)
                    self.close_connection = True
                    return
                reply = b"ok" if int(answer) < 300 else b"receiver says no"
                self.send_response(int(answer))
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)

    def _record(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        with self._lock:
            self.received.append(Received(path, headers, body, time.monotonic()))
            return self._answers.pop(0) if self._answers else self._then

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def close(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()

    async def wait_for(self, count: int, seconds: float = 15.0) -> list[Received]:
        """Until `count` requests have arrived (then what arrived), or fail after `seconds`."""
        deadline = time.monotonic() + seconds
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"the receiver got {len(self.received)} requests, not {count}, in {seconds} s")
            await asyncio.sleep(0.02)
        return list(self.received)


@contextmanager
def webhook_receiver(answers: Iterable[Answer] = (), then: Answer = 200) -> Iterator[WebhookReceiver]:
    """A started receiver, closed afterwards."""
    receiver = WebhookReceiver(answers, then).start()
    try:
        yield receiver
    finally:
        receiver.close()
