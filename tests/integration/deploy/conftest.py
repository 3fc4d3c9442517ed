"""One real Gatehouse server per backend for the deployment checks, shared by this package's modules (starting
one is the slow part): the demo model, JOB_TOKEN from a file as the Kubernetes Secret mounts it, backups on."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import BACKENDS, fresh_database
from tests.support.server import GatehouseServer, base_env, run_gatehouse
from tests.support.services import flush_redis_prefix, redis_server, unique_redis_prefix


@dataclass
class DeployServer:
    """The running server and the files it was given."""

    server: GatehouseServer
    job_token_file: Path
    backup_dir: Path


@pytest.fixture(scope="package", params=BACKENDS)
def deployed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployServer]:
    """SQLite alone, or PostgreSQL with Redis (the HA shape)."""
    backend = str(request.param)
    workdir = tmp_path_factory.mktemp(f"deploy-{backend}")
    token_file = workdir / "secrets" / "job_token"
    token_file.parent.mkdir()
    token_file.write_text(secrets.token_urlsafe(32) + "\n")
    backup_dir = workdir / "backups"
    extra: dict[str, str] = {}
    prefix = unique_redis_prefix()
    if backend == "postgres":
        extra = {"REDIS_URL": redis_server(), "REDIS_PREFIX": prefix}
    with fresh_database(backend, workdir) as database_url:
        env = base_env(
            database_url,
            workdir / "data",
            DEMO_UPSTREAM="true",
            JOB_TOKEN_FILE=str(token_file),
            BACKUP_DIR=str(backup_dir),
            **extra,
        )
        with run_gatehouse(env, workdir=workdir) as running:
            yield DeployServer(running, token_file, backup_dir)
    if extra:
        flush_redis_prefix(extra["REDIS_URL"], prefix)


@pytest.fixture
def server(deployed: DeployServer) -> GatehouseServer:
    return deployed.server
