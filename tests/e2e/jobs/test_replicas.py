"""Two real replicas with one purge schedule: each scheduled slot runs on exactly one of them (PostgreSQL + Redis,
and two processes sharing one SQLite file); the job token works on either."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import fresh_database
from tests.e2e.conftest import two_replicas
from tests.support.server import GatehouseServer, base_env, run_gatehouse

JOB_TOKEN = "e2e-job-token-0123456789abcdef"
SCHEDULE = {"PURGE_SCHEDULE": "every 1s", "JOB_TOKEN": JOB_TOKEN, "DEMO_UPSTREAM": "true"}


@contextmanager
def two_sqlite_processes(workdir: Path, **env: str) -> Iterator[tuple[GatehouseServer, GatehouseServer]]:
    with fresh_database("sqlite", workdir) as database_url:
        settings = base_env(database_url, workdir / "data", **env)
        with run_gatehouse(settings, workdir=workdir) as a, run_gatehouse(settings, workdir=workdir) as b:
            yield a, b


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.redis])]
)
def replicas(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatehouseServer, GatehouseServer]]:
    workdir = tmp_path_factory.mktemp(f"jobs-{request.param}")
    start = two_sqlite_processes if request.param == "sqlite" else two_replicas
    with start(workdir, **SCHEDULE) as pair:
        yield pair


def test_each_scheduled_slot_runs_on_one_replica(replicas: tuple[GatehouseServer, GatehouseServer]) -> None:
    a, _ = replicas
    with a.client() as admin:
        deadline = time.monotonic() + 20
        while True:
            runs = admin.get("/admin/jobs/runs", params={"job": "purge", "limit": 500}).json()["items"]
            # Finished ones: the newest may still be running on the other replica at this very moment.
            scheduled = [r for r in runs if r["trigger"] == "schedule" and r["status"] != "running"]
            if len(scheduled) >= 4 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        listed = admin.get("/admin/jobs").json()
    assert len(scheduled) >= 4, runs
    slots = [r["slot"] for r in scheduled]
    assert len(slots) == len(set(slots)), f"a slot ran twice: {sorted(slots)}"
    assert all(r["status"] == "ok" for r in scheduled), scheduled
    # Both replicas serve the database (and both run schedulers: which one takes a slot is a race).
    assert len(listed["replicas"]) == 2
    assert {r["replica"] for r in scheduled} <= {r["id"] for r in listed["replicas"]}


def test_the_job_token_runs_the_purge_on_either_replica(replicas: tuple[GatehouseServer, GatehouseServer]) -> None:
    for replica in replicas:
        with replica.client() as admin:
            refused = admin.post("/admin/jobs/purge/run", headers={"authorization": "", "x-job-token": JOB_TOKEN + "x"})
            assert refused.status_code == 401
            ran = admin.post("/admin/jobs/purge/run", headers={"authorization": "", "x-job-token": JOB_TOKEN})
            # A scheduled run may hold the lock at this very moment: then the answer is a clear 409.
            assert ran.status_code in (200, 409), ran.text
            if ran.status_code == 200:
                assert ran.json()["trigger"] == "token"
                assert ran.json()["status"] == "ok"
