"""The HA topology the soak runs against: the fake upstream in its own process, then `scripts/local-ha.sh up` (HAProxy
and three replicas on PostgreSQL + Redis) in a directory of the soak's own, on free ports; `down --purge` at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.fake_upstream import FakeUpstream, run_fake_upstream
from tests.support.server import free_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "local-ha.sh"
GATEHOUSE = ROOT / ".venv" / "bin" / "gatehouse"
UPSTREAMS = ("soak-a", "soak-b")  # two names for the same fake upstream: one is overridden, the other carries on
MODELS = ("fake-chat", "fake-long")
REPLICAS = (1, 2, 3)


@dataclass
class Topology:
    """A running local HA topology: the proxy's URL, the script's environment, the fake upstream behind it."""

    proxy_url: str
    ha_dir: Path
    env: dict[str, str]
    upstream: FakeUpstream

    @property
    def admin_key(self) -> str:
        """The bootstrap admin's API key (a secret file the script generated)."""
        return (self.ha_dir / "secrets" / "bootstrap_admin_api_key").read_text().strip()

    @property
    def database_url(self) -> str:
        """The PostgreSQL database the script created (from its state file)."""
        for line in (self.ha_dir / "state.env").read_text().splitlines():
            if line.startswith("DATABASE_URL="):
                return line.split("=", 1)[1]
        raise RuntimeError(f"no DATABASE_URL in {self.ha_dir / 'state.env'}")

    def replica_pid(self, n: int) -> int | None:
        """Replica n's pid, from the script's pid file (None when it is not running)."""
        try:
            pid = int((self.ha_dir / "run" / f"replica-{n}.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if Path(f"/proc/{pid}").exists() else None

    def script(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """scripts/local-ha.sh with the topology's environment; raises with its output when it fails."""
        done = subprocess.run(
            ["bash", str(SCRIPT), *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"local-ha.sh {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
        return done

    def gatehouse(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """A `gatehouse` command with the replicas' settings, as an operator runs it (`eval "$(local-ha.sh env)"`)."""
        command = f'eval "$(bash {SCRIPT} env)" && exec {GATEHOUSE} "$@"'
        return subprocess.run(
            ["bash", "-c", command, "gatehouse", *args],
            env=self.env,
            cwd=self.ha_dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


def _environment(ha_dir: Path, upstream_url: str) -> dict[str, str]:
    config = {
        "upstreams": [
            {"name": name, "kind": "openai", "base_url": upstream_url, "models": list(MODELS)} for name in UPSTREAMS
        ]
    }
    config_path = ha_dir.parent / "gatehouse.yaml"
    config_path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    proxy_port, *replica_ports = _free_ports(4)
    # Not the caller's Gatehouse settings (a developer's .env or shell), only what the soak chooses.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEHOUSE_", "OPENAI_", "OLLAMA_", "ANTHROPIC_"))}
    for name in ("DATABASE_URL", "REDIS_URL", "REDIS_PREFIX", "DATA_DIR", "BACKUP_DIR"):
        env.pop(name, None)
    env.update(
        HA_DIR=str(ha_dir),
        HA_PORT=str(proxy_port),
        HA_REPLICA_PORTS=" ".join(map(str, replica_ports)),
        ENVIRONMENT="prod",
        GATEHOUSE_CONFIG=str(config_path),
        DEMO_UPSTREAM="false",
        BOOTSTRAP_ADMIN_EMAIL="soak-admin@example.com",
        LOG_LEVEL="INFO",
        # Limits stay on (checked, reserved, settled on every request); they never bind at the soak's load.
        RATE_LIMIT_PER_MINUTE="1000000",
        DEFAULT_MESSAGES_PER_DAY="1000000000",
        DEFAULT_TOKENS_PER_DAY="1000000000000",
        UPSTREAM_PROBE_SECONDS="5",
        PURGE_SCHEDULE="",  # the soak purges by hand, at a time it chooses
        BACKUP_SCHEDULE="",
    )
    return env


@contextlib.contextmanager
def running(workdir: Path, *, token_delay: float, keep: bool = False) -> Iterator[Topology]:
    """The fake upstream and `local-ha.sh up` under `workdir`; `down --purge` (database and Redis keys) after, or
    only `down` with `keep` (logs, database and Redis keys stay for a look)."""
    ha_dir = workdir / "ha"
    with run_fake_upstream(token_delay=token_delay) as upstream:
        env = _environment(ha_dir, upstream.url)
        started = subprocess.run(
            ["bash", str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=300, check=False
        )
        try:
            if started.returncode != 0:
                raise RuntimeError(f"local-ha.sh up failed:\n{started.stdout}{started.stderr}")
            lines = dict(line.split(":", 1) for line in started.stdout.splitlines() if ":" in line)
            yield Topology(proxy_url=lines["proxy"].strip(), ha_dir=ha_dir, env=env, upstream=upstream)
        finally:
            down = ["down"] if keep else ["down", "--purge"]
            subprocess.run(["bash", str(SCRIPT), *down], env=env, capture_output=True, timeout=300, check=False)
