"""The local HA topology (scripts/local-ha.sh): HAProxy in front of three replicas on PostgreSQL + Redis, routing to a
fake upstream whose key is a secret file the replicas re-read on `gatehouse reload`."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.fake_upstream import FakeUpstream, run_fake_upstream
from tests.support.known_secrets import remember, watch_log
from tests.support.server import ADMIN_KEY, base_env, free_port
from tests.support.services import (
    create_postgres_database,
    drop_postgres_database,
    flush_redis_prefix,
    redis_server,
    unique_redis_prefix,
)

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "local-ha.sh"
REPLICAS = ("r1", "r2", "r3")  # HAProxy's names for them, in the X-Gatehouse-Backend header
BACKEND_HEADER = "x-gatehouse-backend"
OLD_UPSTREAM_KEY = remember("ha-upstream-key-old-" + secrets.token_hex(8), "the HA tests' first upstream key")
OLD_JOB_TOKEN = remember("ha-job-token-old-" + secrets.token_hex(8), "the HA tests' first JOB_TOKEN")


@dataclass
class Topology:
    """A running `scripts/local-ha.sh up`: the proxy's URL, the script's environment, the fake upstream behind it."""

    proxy_url: str
    replica_urls: list[str]
    ha_dir: Path
    env: dict[str, str]
    upstream: FakeUpstream
    database_url: str = ""
    admin_key: str = ADMIN_KEY
    _ids: dict[str, str] = field(default_factory=dict)

    def script(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run scripts/local-ha.sh with the topology's environment; fail the test with its output if it fails."""
        done = subprocess.run(
            ["bash", str(SCRIPT), *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        assert done.returncode == 0, (
            f"local-ha.sh {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
        )
        return done

    def write_secret(self, name: str, value: str) -> None:
        """Replace a secret file as an operator rotating it would (a new file moved into place)."""
        path = self.ha_dir / "secrets" / name
        staging = path.with_name(f".{name}.new")
        staging.write_text(value + "\n" if value else "")
        staging.chmod(0o600)
        staging.replace(path)

    def gatehouse(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A `gatehouse` command with the replicas' settings, as an operator runs it (`eval "$(local-ha.sh env)"`)."""
        command = f'eval "$(bash {SCRIPT} env)" && exec {ROOT}/.venv/bin/gatehouse "$@"'
        done = subprocess.run(
            ["bash", "-c", command, "gatehouse", *args],
            env=self.env,
            cwd=self.ha_dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, f"gatehouse {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
        return done

    def admin(self) -> httpx.Client:
        """An httpx client to the proxy with the bootstrap admin's key."""
        return httpx.Client(
            base_url=self.proxy_url, headers={"authorization": f"Bearer {self.admin_key}"}, timeout=30, trust_env=False
        )

    def replica_ids(self) -> dict[str, str]:
        """HAProxy's name of each replica -> the replica's own id (GET /admin/health through the proxy)."""
        if len(self._ids) < len(REPLICAS):
            with self.admin() as client:
                for _ in range(30):
                    answer = client.get("/admin/health")
                    assert answer.status_code == 200, answer.text
                    self._ids[answer.headers[BACKEND_HEADER]] = answer.json()["replica"]
                    if len(self._ids) == len(REPLICAS):
                        break
        assert sorted(self._ids) == list(REPLICAS), f"not every replica answered through the proxy: {self._ids}"
        return dict(self._ids)

    def forget_replica_ids(self) -> None:
        """A restarted replica has a new id."""
        self._ids.clear()

    def wait_reloaded(self, since: datetime, setting: str, timeout: float = 15) -> dict[str, Any]:
        """The reload after `since` that every replica audited as config.reloaded with `setting` changed."""
        wanted = set(self.replica_ids().values())
        deadline = time.monotonic() + timeout
        seen: dict[str, set[str]] = {}
        audited: list[dict[str, Any]] = []
        with self.admin() as client:
            while True:
                answer = client.get("/admin/audit", params={"action": "config.reloaded", "since": since.isoformat()})
                assert answer.status_code == 200, answer.text
                seen, audited = {}, []
                for event in answer.json()["items"]:
                    details = event["details"]  # the replica is the event's target
                    audited.append({"replica": event["target_id"], **details})
                    if setting.lower() in (name.lower() for name in details.get("changed", [])):
                        seen.setdefault(details["reload_id"], set()).add(event["target_id"])
                for reload_id, replicas in seen.items():
                    if replicas >= wanted:
                        return {"id": reload_id, "replicas": replicas}
                if time.monotonic() > deadline:
                    failed = client.get("/admin/audit", params={"action": "config.reload_failed"}).json()["items"]
                    raise AssertionError(
                        f"no reload changing {setting} audited by all of {sorted(wanted)} within {timeout} s; seen "
                        f"{seen}; audited: {audited}; failures: {[e['details'] for e in failed]}"
                    )
                time.sleep(0.2)


def _free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


@contextmanager
def local_ha(workdir: Path, upstream: FakeUpstream, **settings: str) -> Iterator[Topology]:
    """`scripts/local-ha.sh up` on a fresh PostgreSQL database and a Redis key prefix of its own, routing to
    `upstream` (OpenAI protocol) whose key is OLD_UPSTREAM_KEY; `down` afterwards (HA_DIR's logs stay for the
    session's check that no secret reached a log; the tmp dir goes later). `settings` reach the replicas."""
    ha_dir = workdir / "ha"
    proxy_port, *replica_ports = _free_ports(4)
    redis_url, prefix = redis_server(), unique_redis_prefix()
    database_url = create_postgres_database("gatehouse_ha")
    env = base_env(
        database_url,
        ha_dir / "data",
        HA_DIR=str(ha_dir),
        HA_PORT=str(proxy_port),
        HA_REPLICA_PORTS=" ".join(map(str, replica_ports)),
        REDIS_URL=redis_url,
        REDIS_PREFIX=prefix,
        ENVIRONMENT="prod",
        # The upstream: the OpenAI shortcut, its key a secret file (HA_DIR/secrets/openai_api_key) written by
        # the script from this variable on the first `up`; GATEHOUSE_CONFIG's YAML has no key-file field.
        OPENAI_BASE_URL=upstream.url,
        OPENAI_API_KEY=OLD_UPSTREAM_KEY,
        JOB_TOKEN=OLD_JOB_TOKEN,
        RATE_LIMIT_PER_MINUTE="1000000",  # the load below is one key's
        UPSTREAM_PROBE_SECONDS="1",
        REQUEST_LOG_FLUSH_SECONDS="0.2",
        **{"HA_STOP_TIMEOUT": "20", **settings},
    )
    env.pop("DATA_DIR")  # the script's default, under HA_DIR
    for name in ("haproxy", "replica-1", "replica-2", "replica-3"):
        watch_log(ha_dir / "logs" / f"{name}.log")  # no secret of the suite may reach them
    started = subprocess.run(
        ["bash", str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=180, check=False
    )
    try:
        assert started.returncode == 0, f"local-ha.sh up failed:\n{started.stdout}{started.stderr}"
        lines = dict(line.split(":", 1) for line in started.stdout.splitlines() if ":" in line)
        yield Topology(
            proxy_url=lines["proxy"].strip(),
            replica_urls=[lines[f"replica {n}"].split()[0] for n in (1, 2, 3)],
            ha_dir=ha_dir,
            env=env,
            upstream=upstream,
            database_url=database_url,
        )
    finally:
        subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True, timeout=180, check=False)
        drop_postgres_database(database_url)
        flush_redis_prefix(redis_url, prefix)
    # Left for the log check at the end of the session; the rest of HA_DIR goes with the tmp dir.
    assert not (ha_dir / "run").exists(), "local-ha.sh down left its run directory"


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    """The local HA topology with a fake upstream whose streams take a little while (8 tokens, 10 ms apart), so
    some are always in flight when a key is rotated."""
    workdir = tmp_path_factory.mktemp("local-ha")
    with (
        run_fake_upstream(api_key=OLD_UPSTREAM_KEY, token_delay=0.01, tokens=8) as upstream,
        local_ha(workdir, upstream) as topology,
    ):
        yield topology
