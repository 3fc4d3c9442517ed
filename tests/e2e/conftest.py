"""End-to-end fixtures: a fake upstream process and a real Gatehouse server per database backend."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from tests.conftest import BACKENDS, fresh_database
from tests.support.fake_upstream import FakeUpstream, run_fake_upstream
from tests.support.server import GatehouseServer, base_env, run_gatehouse
from tests.support.services import flush_redis_prefix, redis_server, unique_redis_prefix

UPSTREAM_KEY = "upstream-secret-key"
FAKE_MODELS = ["chat", "embed", "slow", "error", "hang", "midfail", "nousage", "long", "floats", "think"]
# Client-facing aliases: "oa-<x>" reaches fake-<x> through the OpenAI protocol, "ol-<x>" through Ollama's.
KINDS = {"oa": "up-openai", "ol": "up-ollama"}
# ... and "an-<x>" through Anthropic's Messages API (the client surfaces are tested against all three).
ALL_KINDS = {**KINDS, "an": "up-anthropic"}
# "rp-<x>": an OpenAI-compatible upstream marked `responses: true` (Responses requests pass through to it).
PASSTHROUGH_KINDS = {"rp": "up-responses"}


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeUpstream]:
    """One fake upstream process (both protocols) for the whole session."""
    with run_fake_upstream(api_key=UPSTREAM_KEY) as upstream:
        yield upstream


def write_config(path: Path, upstream_url: str, *, output_caps: dict[str, int] | None = None) -> Path:
    """A GATEHOUSE_CONFIG with one upstream per protocol and an alias per fake behaviour (`output_caps`: the
    `max_output_tokens` of some aliases)."""
    config = {
        "upstreams": [
            {
                "name": "up-openai",
                "kind": "openai",
                "base_url": upstream_url,
                "api_key": UPSTREAM_KEY,
                "discover": False,
            },
            {
                "name": "up-ollama",
                "kind": "ollama",
                "base_url": upstream_url,
                "api_key": UPSTREAM_KEY,
                "discover": False,
            },
            {
                "name": "up-anthropic",
                "kind": "anthropic",
                "base_url": upstream_url,
                "api_key": UPSTREAM_KEY,
                "discover": False,
            },
            {
                "name": "up-responses",
                "kind": "openai",
                "base_url": upstream_url,
                "api_key": UPSTREAM_KEY,
                "discover": False,
                "responses": True,
            },
        ],
        "models": {
            f"{prefix}-{m}": {"upstream": name, "model": f"fake-{m}"}
            for prefix, name in {**ALL_KINDS, **PASSTHROUGH_KINDS}.items()
            for m in FAKE_MODELS
        },
    }
    for alias, cap in (output_caps or {}).items():
        config["models"][alias]["max_output_tokens"] = cap
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """sqlite or postgres: each e2e module runs once per backend."""
    return str(request.param)


@pytest.fixture(scope="module")
def server(
    backend: str, fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatehouseServer]:
    """A Gatehouse server on a fresh database of `backend`, routing to the fake upstream."""
    workdir = tmp_path_factory.mktemp(f"gatehouse-{backend}")
    with fresh_database(backend, workdir) as database_url:
        config = write_config(workdir / "gatehouse.yaml", fake_upstream.url)
        env = base_env(
            database_url,
            workdir / "data",
            GATEHOUSE_CONFIG=str(config),
            UPSTREAM_READ_TIMEOUT="2",
            REQUEST_LOG_FLUSH_SECONDS="0.1",
        )
        with run_gatehouse(env, workdir=workdir) as running:
            yield running


@contextmanager
def two_replicas(workdir: Path, **env: str) -> Iterator[tuple[GatehouseServer, GatehouseServer]]:
    """Replica A and replica B sharing a fresh PostgreSQL database and Redis (with a key prefix of their own)."""
    redis_url = redis_server()
    prefix = unique_redis_prefix()
    with fresh_database("postgres", workdir) as database_url:
        settings = base_env(database_url, workdir / "data", REDIS_URL=redis_url, REDIS_PREFIX=prefix, **env)
        with run_gatehouse(settings, workdir=workdir) as a, run_gatehouse(settings, workdir=workdir) as b:
            yield a, b
    flush_redis_prefix(redis_url, prefix)
