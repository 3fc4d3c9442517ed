"""The fault matrix's servers: one fake upstream of its own (its ledger counts only this package's answers), a TLS
server with a certificate nobody trusts, a closed port, a `.invalid` host, and one Gatehouse per backend routing a
model alias to each (surface kind x fault), alone and with a healthy second upstream behind it."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import BACKENDS, fresh_database
from tests.support.fake_upstream import FakeUpstream, run_fake_upstream
from tests.support.server import GatehouseServer, base_env, run_gatehouse
from tests.support.tls_server import make_certificates, serve_http

UPSTREAM_KEY = "faults-upstream-key"
# The upstream kinds a client surface is served by natively (the Responses API by an upstream marked `responses`).
KINDS = ("openai", "ollama", "anthropic", "responses")
# Faults the network makes (an upstream of their own per kind) and those the fake upstream acts (a model of its own).
NETWORK_FAULTS = ("refused", "dns", "tls")
MODEL_FAULTS = {
    "500": "fake-error",
    "429": "fake-429",
    "hang": "fake-hang",
    "hang-mid": "fake-hang-mid",
    "reset": "fake-reset",
    "badjson": "fake-badjson",
    "badframe": "fake-badframe",
    "huge": "fake-huge",
}
FAULTS = (*NETWORK_FAULTS, *MODEL_FAULTS)
# The gateway's bounds, lowered so that the matrix runs in seconds: a hung upstream is given up after
# READ_TIMEOUT, an answer (or one stream line) larger than MAX_ANSWER_BYTES is refused (fake-huge sends 3 MiB).
READ_TIMEOUT = 2.0
MAX_ANSWER_BYTES = 1024 * 1024


def alias(kind: str, fault: str, *, failover: bool = False) -> str:
    """The model name a client uses to reach `fault` through an upstream of `kind` (with a healthy second one)."""
    return f"{'fo-' if failover else ''}{kind}-{fault}"


def _upstream(name: str, kind: str, url: str) -> dict[str, object]:
    entry: dict[str, object] = {
        "name": name,
        "kind": "openai" if kind == "responses" else kind,
        "base_url": url,
        "api_key": UPSTREAM_KEY,
        "discover": False,
        "read_timeout": READ_TIMEOUT,
        "connect_timeout": 2.0,
    }
    if kind == "responses":
        entry["responses"] = True
    return entry


def write_faults_config(path: Path, fake_url: str, broken: dict[str, str]) -> Path:
    """A GATEHOUSE_CONFIG with, per kind, the fake (`f-<kind>`), the fake again as the first choice of the failover
    aliases (`x-<kind>`), a healthy second upstream on it (`b-<kind>`) and one broken upstream per network fault
    (`<fault>-<kind>`, at `broken[fault]`); an alias per kind and fault, alone and failing over."""
    upstreams: list[dict[str, object]] = []
    models: dict[str, object] = {}
    for kind in KINDS:
        upstreams += [_upstream(f"{name}-{kind}", kind, fake_url) for name in ("f", "x", "b")]
        backup = {"upstream": f"b-{kind}", "model": "fake-chat"}
        for fault in FAULTS:
            if fault in NETWORK_FAULTS:
                upstreams.append(_upstream(f"{fault}-{kind}", kind, broken[fault]))
                target = first = {"upstream": f"{fault}-{kind}", "model": "fake-chat"}
            else:
                target = {"upstream": f"f-{kind}", "model": MODEL_FAULTS[fault]}
                first = {"upstream": f"x-{kind}", "model": MODEL_FAULTS[fault]}
            models[alias(kind, fault)] = target
            models[alias(kind, fault, failover=True)] = [first, backup]
        models[alias(kind, "ok")] = {"upstream": f"f-{kind}", "model": "fake-chat"}
        models[alias(kind, "flood")] = {"upstream": f"f-{kind}", "model": "fake-flood"}
        models[alias(kind, "long")] = {"upstream": f"f-{kind}", "model": "fake-long"}
    path.write_text(yaml.safe_dump({"upstreams": upstreams, "models": models}))
    return path


@pytest.fixture(scope="package")
def faults_upstream() -> Iterator[FakeUpstream]:
    """This package's own fake upstream."""
    with run_fake_upstream(api_key=UPSTREAM_KEY) as upstream:
        yield upstream


@pytest.fixture(scope="package")
def broken_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Base URLs that fail on the network: a closed port, a name under `.invalid` (RFC 2606: never resolves), and
    https to a server whose certificate comes from a CA nobody trusts."""
    certificates = make_certificates(tmp_path_factory.mktemp("untrusted-ca"), valid_days=30)
    with socket.socket() as sock:  # bound, never listening: connections to it are refused
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
        with serve_http(certificates=certificates) as tls_url:
            yield {
                "refused": f"http://127.0.0.1:{closed}",
                "dns": "http://gatehouse-fault-matrix.invalid:8080",
                "tls": tls_url,
            }


@pytest.fixture(scope="package", params=BACKENDS)
def faults_server(
    request: pytest.FixtureRequest,
    faults_upstream: FakeUpstream,
    broken_urls: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatehouseServer]:
    """One Gatehouse per backend for the whole matrix. The broken upstreams and the failover aliases' first choices
    are overridden `up`: requests meet the fault itself, and a failover alias tries its first choice first however
    often it failed before (failed requests would make it `degraded`, routed after the healthy second one; the
    probes and that ordering are what the health tests cover)."""
    backend = str(request.param)
    workdir = tmp_path_factory.mktemp(f"faults-{backend}")
    with fresh_database(backend, workdir) as database_url:
        config = write_faults_config(workdir / "gatehouse.yaml", faults_upstream.url, broken_urls)
        env = base_env(
            database_url,
            workdir / "data",
            GATEHOUSE_CONFIG=str(config),
            UPSTREAM_READ_TIMEOUT=str(READ_TIMEOUT),
            UPSTREAM_MAX_ANSWER_BYTES=str(MAX_ANSWER_BYTES),
            UPSTREAM_PROBE_SECONDS="3600",
            MODEL_REFRESH_SECONDS="3600",
            UPSTREAM_BREAKER_FAILURES="0",
            REQUEST_LOG_FLUSH_SECONDS="0.1",
            RATE_LIMIT_PER_MINUTE="1000000",
        )
        with run_gatehouse(env, workdir=workdir) as server:
            with server.client() as admin:
                for upstream in admin.get("/admin/upstreams").json():
                    if upstream["name"].split("-")[0] in (*NETWORK_FAULTS, "x"):
                        response = admin.put(
                            f"/admin/upstreams/{upstream['id']}/override",
                            json={"state": "up", "reason": "fault matrix: let requests meet the fault"},
                        )
                        assert response.status_code == 200, response.text
            yield server


def get_metrics(server: GatehouseServer) -> str:
    """The server's /metrics text."""
    return httpx.get(server.url + "/metrics", headers={"authorization": f"Bearer {server.admin_key}"}).text
