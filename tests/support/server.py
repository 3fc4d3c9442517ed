"""A real Gatehouse server in its own process, for end-to-end tests with real clients."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.known_secrets import watch_log

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin-password-for-tests"
ADMIN_KEY = "gh_test_bootstrap_key_0123456789abcdef"
JWT_SECRET = "test-secret-" + "x" * 40


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class GatehouseServer:
    """A running `gatehouse serve`."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]

    @property
    def admin_key(self) -> str:
        return self.env.get("BOOTSTRAP_ADMIN_API_KEY", ADMIN_KEY)

    def client(self, key: str | None = None) -> httpx.Client:
        """An httpx client with a bearer key (the admin's by default)."""
        return httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {key or self.admin_key}"}, timeout=30)

    def log_text(self) -> str:
        """Everything the server wrote to stderr/stdout so far."""
        return self.log_path.read_text(errors="replace")


def base_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment for a test server: known bootstrap credentials, quiet, no .env file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEHOUSE_", "OPENAI_", "OLLAMA_"))}
    env.update(
        DATABASE_URL=database_url,
        DATA_DIR=str(data_dir),
        JWT_SECRET=JWT_SECRET,
        BOOTSTRAP_ADMIN_EMAIL=ADMIN_EMAIL,
        BOOTSTRAP_ADMIN_PASSWORD=ADMIN_PASSWORD,
        BOOTSTRAP_ADMIN_API_KEY=ADMIN_KEY,
        LOG_LEVEL="INFO",
        REDIS_URL="",
        PURGE_SCHEDULE="",  # no purge by the clock in the middle of a test; tests that want one set it
    )
    env.update(extra)
    return env


@contextmanager
def run_gatehouse(
    env: dict[str, str], *, workdir: Path, port: int | None = None, workers: int = 1, timeout: float = 60
) -> Iterator[GatehouseServer]:
    """Start `gatehouse serve`, wait until /readyz answers 200, stop it (SIGTERM, then kill) afterwards."""
    port = port or free_port()
    log_path = workdir / f"gatehouse-{port}.log"
    # Scanned for the suite's secrets when the session ends (tests/support/known_secrets.py).
    watch_log(log_path)
    if env.get("LOG_FILE"):
        watch_log(workdir / env["LOG_FILE"])  # an absolute LOG_FILE stays as it is
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gatehouse",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=env,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = GatehouseServer(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path, env=env)
    try:
        _wait_ready(server, timeout)
        yield server
    finally:
        stop(process)


def _wait_ready(server: GatehouseServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"gatehouse exited with {server.process.returncode}:\n{server.log_text()[-4000:]}")
        try:
            if httpx.get(server.url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"gatehouse not ready after {timeout} s:\n{server.log_text()[-4000:]}")


def stop(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """Graceful stop, then a kill if it hangs."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
