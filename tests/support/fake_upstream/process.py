"""The fake upstream as a process: its command line, and run_fake_upstream() to start one from a test."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .app import FakeUpstreamApp
from .content import DEFAULT_TOKENS
from .core import QuietExpectedErrors

# --------------------------------------------------------------------------------------------------
# Process entry point
# --------------------------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Fake OpenAI/Ollama/Anthropic upstream for Gatehouse tests and benchmarks.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on the READY line)")
    p.add_argument(
        "--api-key", default=None, help="require 'Authorization: Bearer KEY' or 'x-api-key: KEY' on /v1 and /api"
    )
    p.add_argument("--token-delay", type=float, default=0.0, help="seconds before each token, every model")
    p.add_argument("--tokens", type=int, default=DEFAULT_TOKENS, help="default completion length")
    p.add_argument("--latency", type=float, default=0.0, help="seconds before a generation response starts")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fake upstream until SIGTERM/SIGINT; prints `READY <port>` once listening."""
    import uvicorn  # imported here so `from tests.support.fake_upstream import ...` stays light

    args = _parse_args(argv)
    app = FakeUpstreamApp(api_key=args.api_key, token_delay=args.token_delay, tokens=args.tokens, latency=args.latency)
    # Bind ourselves so port 0 resolves to a real port we can announce before serving.
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.create_server((args.host, args.port), family=family, backlog=4096)
    port = sock.getsockname()[1]

    class _Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                sys.stdout.write(f"READY {port}\n")
                sys.stdout.flush()

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn re-raises the captured signal after a graceful shutdown, which turns SIGTERM
            # into exit status -15; we only want the graceful shutdown and then a clean exit 0.
            # The handlers are deliberately never restored: the process ends right after serving,
            # and a second SIGTERM/SIGINT arriving during teardown must not kill it with -15 either.
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self.handle_exit)
            yield

    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        log_level="warning",
        access_log=False,
        server_header=False,
        date_header=False,
        backlog=4096,
        # Long keep-alive: a short one races with pooled clients reusing an idle connection just as
        # we close it, which would make gateway tests flaky for reasons unrelated to the gateway.
        timeout_keep_alive=75,
        # fake-hang / fake-long requests must not hold up shutdown for long.
        timeout_graceful_shutdown=1,
    )
    # Config() (re)configures logging, so the filter must be attached afterwards.
    logging.getLogger("uvicorn.error").addFilter(QuietExpectedErrors())
    _Server(config).run(sockets=[sock])
    return 0


# --------------------------------------------------------------------------------------------------
# Test helper
# --------------------------------------------------------------------------------------------------


@dataclass
class FakeUpstream:
    """Handle on a running fake upstream subprocess."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    _client: httpx.Client = field(repr=False)

    def stats(self) -> dict[str, int]:
        """Current counters from GET /_stats."""
        r = self._client.get("/_stats")
        r.raise_for_status()
        result: dict[str, int] = r.json()
        return result

    def ledger(self) -> dict[str, dict[str, int]]:
        """Per model, the generations counted by the upstream (GET /_ledger)."""
        r = self._client.get("/_ledger")
        r.raise_for_status()
        result: dict[str, dict[str, int]] = r.json()
        return result

    def requests(self) -> list[dict[str, Any]]:
        """The last request bodies logged by the upstream (GET /_requests)."""
        r = self._client.get("/_requests")
        r.raise_for_status()
        result: list[dict[str, Any]] = r.json()
        return result

    def reset(self) -> None:
        """Clear counters and the request log (POST /_reset)."""
        self._client.post("/_reset").raise_for_status()

    def fail(self, mode: str) -> None:
        """Answer every request normally (`ok`), with a 500 (`error`), or never (`hang`)."""
        self._client.post(f"/_fail/{mode}").raise_for_status()

    def set_keys(self, *keys: str) -> None:
        """Accept exactly these API keys from now on (POST /_control/keys): a provider's key rotation."""
        self._client.post("/_control/keys", json={"keys": list(keys)}).raise_for_status()

    def wait_for_stats(self, predicate: Callable[[dict[str, int]], bool], timeout: float = 5.0) -> dict[str, int]:
        """Poll /_stats until predicate(stats) holds; raise TimeoutError with the last stats otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.stats()
            if predicate(current):
                return current
            if time.monotonic() >= deadline:
                raise TimeoutError(f"fake upstream stats never matched: {current}")
            time.sleep(0.02)


def _read_ready_line(proc: subprocess.Popen[bytes], timeout: float) -> int:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    # select + os.read rather than readline() so a silent child cannot block us past the timeout.
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"fake upstream did not print READY within {timeout} s (got {buf!r})")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            raise RuntimeError(f"fake upstream exited before READY (status {proc.wait()}, output {buf!r})")
        buf += chunk
    line = buf.split(b"\n", 1)[0].decode().strip()
    word, _, port = line.partition(" ")
    if word != "READY" or not port.isdigit():
        raise RuntimeError(f"unexpected first line from fake upstream: {line!r}")
    return int(port)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@contextlib.contextmanager
def run_fake_upstream(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str | None = None,
    token_delay: float | None = None,
    tokens: int | None = None,
    latency: float | None = None,
    ready_timeout: float = 15.0,
) -> Iterator[FakeUpstream]:
    """Start the fake upstream in a subprocess, yield a FakeUpstream, and stop it on exit."""
    # The package's folder as the script: its __main__ imports the package from the repository root.
    cmd = [sys.executable, str(Path(__file__).resolve().parent), "--host", host, "--port", str(port)]
    if api_key is not None:
        cmd += ["--api-key", api_key]
    if token_delay is not None:
        cmd += ["--token-delay", str(token_delay)]
    if tokens is not None:
        cmd += ["--tokens", str(tokens)]
    if latency is not None:
        cmd += ["--latency", str(latency)]
    # stderr is inherited so crashes show up in the test output; stdout carries only READY.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, bufsize=0)
    try:
        real_port = _read_ready_line(proc, ready_timeout)
        url_host = f"[{host}]" if ":" in host else host
        url = f"http://{url_host}:{real_port}"
        # trust_env=False: a proxy configured in the environment must not intercept loopback calls.
        with httpx.Client(base_url=url, timeout=10.0, trust_env=False) as client:
            yield FakeUpstream(url=url, port=real_port, process=proc, _client=client)
    finally:
        _stop(proc)
