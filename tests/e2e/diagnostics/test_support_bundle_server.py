"""`gatehouse support-bundle --url --key` against a real server (SQLite and PostgreSQL): its readiness, health
detail and metrics, the replicas table naming it, its own LOG_FILE lines (found again with `gatehouse logs`), and
none of its secrets anywhere in the ZIP."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from typer.testing import CliRunner, Result

from gatehouse.cli import app
from gatehouse.settings import get_settings
from tests.conftest import fresh_database
from tests.support.server import ADMIN_KEY, ADMIN_PASSWORD, JWT_SECRET, GatehouseServer, base_env, run_gatehouse

METRICS_TOKEN = "e2e-metrics-token-for-the-bundle"


@pytest.fixture(scope="module")
def server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatehouseServer]:
    """A server on a fresh database of `backend`, keeping LOG_FILE."""
    workdir = tmp_path_factory.mktemp(f"bundle-{backend}")
    with fresh_database(backend, workdir) as database_url:
        env = base_env(database_url, workdir / "data", LOG_FILE=str(workdir / "logs" / "gatehouse.log"))
        env["METRICS_TOKEN"] = METRICS_TOKEN
        with run_gatehouse(env, workdir=workdir) as running:
            yield running


def gatehouse(monkeypatch: pytest.MonkeyPatch, server: GatehouseServer, *args: str) -> Result:
    """The CLI in this process, with the server's settings (as an operator runs it on the server's host)."""
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, list(args))
    finally:
        get_settings.cache_clear()


def test_bundle_from_a_running_server(server: GatehouseServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    with server.client() as client:
        request_id = client.get("/v1/models").headers["x-request-id"]
        assert client.get("/admin/users", headers={"authorization": "Bearer gh_wrong"}).status_code == 401
    bundle = tmp_path / "bundle.zip"
    result = gatehouse(
        monkeypatch, server, "support-bundle", "-o", str(bundle), "--url", server.url, "--key", ADMIN_KEY
    )
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(bundle) as archive:
        members = {name: archive.read(name).decode() for name in archive.namelist()}
    assert set(members) == {
        "manifest.json",
        "config.json",
        "doctor.json",
        "health.json",
        "database.json",
        "db-stats.json",
        "metrics.txt",
        "logs/gatehouse.log",
    }, result.stderr
    for name, text in members.items():
        for secret in (ADMIN_KEY, ADMIN_PASSWORD, JWT_SECRET, METRICS_TOKEN):
            assert secret not in text, f"{name} holds a secret"

    health = orjson.loads(members["health.json"])
    assert health["source"] == "server"
    assert health["readyz"]["status_code"] == 200 and health["readyz"]["body"]["status"] == "ready"
    assert health["admin_health"]["status_code"] == 200 and health["admin_health"]["body"]["database"]["status"] == "ok"
    assert "# TYPE gatehouse_" in members["metrics.txt"]
    replicas = orjson.loads(members["database.json"])["replicas"]
    assert [(r["pid"], r["live"]) for r in replicas] == [(server.process.pid, True)]
    manifest = orjson.loads(members["manifest.json"])
    assert manifest["server_url"] == server.url and manifest["missing"] == []

    lines = [orjson.loads(text) for text in members["logs/gatehouse.log"].splitlines()]
    mine = [line for line in lines if line.get("request_id") == request_id]
    assert [(line["event"], line["path"], line["status"]) for line in mine] == [("request", "/v1/models", 200)]
    assert mine[0]["client_ip"] == "127.0.0.x"

    # The same line through `gatehouse logs`, from the server's own LOG_FILE.
    found = gatehouse(monkeypatch, server, "logs", "--request-id", request_id, "--json")
    assert found.exit_code == 0, found.output
    assert [orjson.loads(text)["status"] for text in found.stdout.splitlines()] == [200]
    refused = gatehouse(monkeypatch, server, "logs", "--since", "10m", "--event", "request", "--grep", '"status":401')
    assert len(refused.stdout.splitlines()) == 1


def test_a_key_without_the_role_is_named(
    server: GatehouseServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle.zip"
    result = gatehouse(
        monkeypatch, server, "support-bundle", "-o", str(bundle), "--url", server.url, "--key", "gh_nope"
    )
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(bundle) as archive:
        health = orjson.loads(archive.read("health.json"))
        assert "metrics.txt" in archive.namelist()  # METRICS_TOKEN opens /metrics without the key
    assert health["admin_health"]["status_code"] == 401 and "monitor" in health["admin_health"]["note"]
    assert httpx.get(server.url + "/readyz").status_code == 200
