"""The processes `make bench` measures: the fake upstream itself (direct), Gatehouse on SQLite, Gatehouse on
PostgreSQL + Redis, and LiteLLM's proxy. Each can be started (timed from spawn to its readiness URL
answering 200), asked for the PIDs of its process tree, and stopped."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procstat

ROOT = Path(__file__).resolve().parents[1]
LITELLM_VENV = ROOT / ".tools" / "litellm"
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
REDIS_URL = "redis://127.0.0.1:6379/0"
MODELS = ("bench-fast", "bench-slow", "bench-embed")
UPSTREAM_POOL = 4096  # upstream connections a gateway may open (Gatehouse's default is 256, LiteLLM's 500)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(
    port: int, method: str, path: str, body: Any = None, key: str | None = None, timeout: float = 10.0
) -> tuple[int, Any]:
    """One request to 127.0.0.1:port; (status, parsed JSON body or raw text)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(raw)
    except ValueError:
        return resp.status, raw.decode(errors="replace")


def ready_once(port: int, path: str) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", path)
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def psql(sql: str, database: str = "postgres") -> str:
    out = subprocess.run(
        ["psql", "-X", "-q", "-A", "-t", "-h", PG["host"], "-p", str(PG["port"]), "-U", PG["user"], "-d", database],
        input=sql,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


@dataclass
class Target:
    """A server process the benchmark talks to."""

    name: str
    label: str
    run_dir: Path
    port: int = field(default_factory=free_port)
    key: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    ready_path: str = "/health"
    chat_path: str = "/v1/chat/completions"
    embed_path: str = "/v1/embeddings"
    # The translated client surfaces (Responses, Anthropic Messages) where the target serves them; None: the
    # scenarios that need them skip this target.
    responses_path: str | None = None
    messages_path: str | None = None
    note: str = ""

    # to be provided by subclasses
    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    @property
    def log_path(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    def spawn(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            self.command(),
            env=self.env(),
            cwd=self.run_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def start(self, timeout: float = 180.0) -> float:
        """Spawn and poll the readiness URL every 5 ms; seconds from spawn to the first 200."""
        started = time.perf_counter()
        self.spawn()
        assert self.proc is not None
        while time.perf_counter() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
            if ready_once(self.port, self.ready_path):
                return time.perf_counter() - started
            time.sleep(0.005)
        self.stop()
        raise RuntimeError(f"{self.name} not ready within {timeout:.0f} s; see {self.log_path}")

    def pids(self) -> list[int]:
        return procstat.tree(self.proc.pid) if self.proc is not None else []

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the session we started it in: this target only
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None

    def prepare(self) -> None:
        """One-time setup before the rounds (databases, users, keys)."""

    def cleanup(self) -> None:
        """Undo prepare()."""


@dataclass
class FakeUpstream(Target):
    """The fake upstream; as a target it is 'direct' (no gateway, no auth)."""

    options: list[str] = field(default_factory=list)

    def command(self) -> list[str]:
        return [sys.executable, str(ROOT / "bench" / "fakeup.py"), "--port", str(self.port), *self.options]


@dataclass
class Floor(Target):
    """bench/floor.py: a bare relay (uvicorn + aiohttp, no features), what the stack costs before any feature."""

    upstream_port: int = 0

    def command(self) -> list[str]:
        return [
            sys.executable,
            str(ROOT / "bench" / "floor.py"),
            "--port",
            str(self.port),
            "--upstream",
            f"http://127.0.0.1:{self.upstream_port}",
        ]


@dataclass
class Gatehouse(Target):
    """`gatehouse serve`, one worker, on SQLite or on PostgreSQL + Redis, every feature on."""

    upstream_port: int = 0
    backend: str = "sqlite"  # or "pg"
    admin_key: str = field(default_factory=lambda: "gh_benchadmin_" + secrets.token_urlsafe(24))
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    db_name: str = ""
    redis_prefix: str = ""
    ready_path: str = "/readyz"
    responses_path: str | None = "/v1/responses"
    messages_path: str | None = "/v1/messages"

    def __post_init__(self) -> None:
        tag = f"{os.getpid()}_{secrets.token_hex(3)}"
        self.db_name = f"gh_bench_{tag}"
        self.redis_prefix = f"ghbench{tag}:"

    @property
    def database_url(self) -> str:
        if self.backend == "pg":
            return f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{self.db_name}"
        return f"sqlite:///{self.run_dir / 'gh.db'}"

    def command(self) -> list[str]:
        exe = ROOT / ".venv" / "bin" / "gatehouse"
        if not exe.exists():
            exe = Path(sys.executable).with_name("gatehouse")
        return [str(exe), "serve", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "REDIS_", "OPENAI_", "OLLAMA_"))}
        env |= {
            "ENVIRONMENT": "prod",
            "DATABASE_URL": self.database_url,
            "DATA_DIR": str(self.run_dir),
            "GATEHOUSE_CONFIG": str(self.run_dir / "gatehouse.yaml"),
            "DEMO_UPSTREAM": "false",
            "JWT_SECRET": self.jwt_secret,
            "BOOTSTRAP_ADMIN_EMAIL": "admin@example.com",
            "BOOTSTRAP_ADMIN_PASSWORD": secrets.token_urlsafe(18),
            "BOOTSTRAP_ADMIN_API_KEY": self.admin_key,
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "json",
            # Limits and quotas stay on (checked, reserved, settled on every request), they just never bind.
            "RATE_LIMIT_PER_MINUTE": "1000000000",
            "DEFAULT_MESSAGES_PER_DAY": "1000000000",
            "DEFAULT_TOKENS_PER_DAY": "1000000000000",
        }
        if self.backend == "pg":
            env |= {"REDIS_URL": REDIS_URL, "REDIS_PREFIX": self.redis_prefix}
        else:
            env.pop("REDIS_URL", None)
        return env

    def prepare(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = {
            "upstreams": [
                {
                    "name": "bench",
                    "kind": "openai",
                    "base_url": f"http://127.0.0.1:{self.upstream_port}",
                    "models": list(MODELS),
                    "max_connections": UPSTREAM_POOL,  # 1,000 concurrent streams need 1,000 upstream connections
                }
            ]
        }
        (self.run_dir / "gatehouse.yaml").write_text(json.dumps(config, indent=2))  # JSON is YAML
        if self.backend == "pg":
            psql(f'CREATE DATABASE "{self.db_name}"')
        # First start: migrate and bootstrap; then a regular user with an API key, through the admin API.
        self.start()
        try:
            status, user = http_json(
                self.port,
                "POST",
                "/admin/users",
                {"email": "bench@example.com", "role": "user", "display_name": "bench"},
                key=self.admin_key,
            )
            if status != 201:
                raise RuntimeError(f"{self.name}: creating the bench user answered {status}: {user}")
            status, created = http_json(
                self.port, "POST", f"/admin/users/{user['id']}/keys", {"name": "bench"}, key=self.admin_key
            )
            if status not in (200, 201):
                raise RuntimeError(f"{self.name}: creating the bench key answered {status}: {created}")
            self.key = created["key"]
        finally:
            self.stop()

    def cleanup(self) -> None:
        if self.backend != "pg":
            return
        try:
            psql(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        except subprocess.CalledProcessError as exc:
            print(f"bench: could not drop {self.db_name}: {exc.stderr}", file=sys.stderr)
        try:
            import redis

            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(match=self.redis_prefix + "*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()
        except Exception as exc:
            print(f"bench: could not clear Redis keys {self.redis_prefix}*: {exc}", file=sys.stderr)


def litellm_version() -> str:
    python = LITELLM_VENV / "bin" / "python"
    if not python.exists():
        return "not installed"
    out = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or "unknown"


def ensure_litellm(uv: str) -> str:
    """LiteLLM's proxy in its own virtual environment (installed once, newest that installs); its version."""
    if not (LITELLM_VENV / "bin" / "litellm").exists():
        print(f"bench: installing litellm[proxy] into {LITELLM_VENV} (once)", file=sys.stderr, flush=True)
        subprocess.run([uv, "venv", "--quiet", "--python", "3.11", str(LITELLM_VENV)], check=True)
        subprocess.run(
            [uv, "pip", "install", "--quiet", "--python", str(LITELLM_VENV / "bin" / "python"), "litellm[proxy]"],
            check=True,
        )
    return litellm_version()


@dataclass
class LiteLLM(Target):
    """LiteLLM's proxy, one worker, with the master key only or with PostgreSQL-backed virtual keys."""

    upstream_port: int = 0
    use_db: bool = False
    master_key: str = field(default_factory=lambda: "sk-bench-" + secrets.token_urlsafe(24))
    db_name: str = ""
    ready_path: str = "/health/readiness"

    def __post_init__(self) -> None:
        self.db_name = f"litellm_bench_{os.getpid()}_{secrets.token_hex(3)}"
        self.note = "PostgreSQL virtual key" if self.use_db else "master key only, no database"

    def command(self) -> list[str]:
        return [
            str(LITELLM_VENV / "bin" / "litellm"),
            "--config",
            str(self.run_dir / "litellm.yaml"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--num_workers",
            "1",
        ]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_", "OPENAI_"))}
        # Offline here: use the cost map shipped in the package rather than fetching it from GitHub.
        env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
        # Its upstream pool as large as Gatehouse's (max_connections below): the default 500 per host would
        # queue half of the 1,000 concurrent streams.
        env["AIOHTTP_CONNECTOR_LIMIT"] = env["AIOHTTP_CONNECTOR_LIMIT_PER_HOST"] = str(UPSTREAM_POOL)
        env.pop("VIRTUAL_ENV", None)
        env["PATH"] = f"{LITELLM_VENV / 'bin'}:{env.get('PATH', '')}"
        if self.use_db:
            env["DATABASE_URL"] = f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{self.db_name}"
        return env

    def prepare(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        models = [
            {
                "model_name": m,
                "litellm_params": {
                    "model": f"openai/{m}",
                    "api_base": f"http://127.0.0.1:{self.upstream_port}/v1",
                    "api_key": "sk-dummy",
                },
            }
            for m in MODELS
        ]
        general: dict[str, Any] = {"master_key": self.master_key}
        if self.use_db:
            general["database_url"] = self.env()["DATABASE_URL"]
        config = {"model_list": models, "general_settings": general}
        (self.run_dir / "litellm.yaml").write_text(json.dumps(config, indent=2))
        if not self.use_db:
            self.key = self.master_key
            return
        probe = subprocess.run(
            [str(LITELLM_VENV / "bin" / "python"), "-c", "import prisma"], capture_output=True, text=True
        )
        if probe.returncode != 0:
            raise RuntimeError(
                "--litellm-db: LiteLLM's database layer needs the `prisma` package and its generated client in "
                f"{LITELLM_VENV} (`pip install prisma`, then `prisma generate` with LiteLLM's schema, which "
                "downloads Prisma's engines); run without --litellm-db for the master key only"
            )
        psql(f'CREATE DATABASE "{self.db_name}"')
        self.start(timeout=600)  # the first start applies its migrations
        try:
            status, created = http_json(
                self.port, "POST", "/key/generate", {"models": list(MODELS)}, key=self.master_key, timeout=60
            )
            if status != 200:
                raise RuntimeError(f"litellm: /key/generate answered {status}: {created}")
            self.key = created["key"]
        finally:
            self.stop()

    def cleanup(self) -> None:
        if self.use_db:
            try:
                psql(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            except subprocess.CalledProcessError as exc:
                print(f"bench: could not drop {self.db_name}: {exc.stderr}", file=sys.stderr)


def which_uv() -> str:
    return os.environ.get("UV") or shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
