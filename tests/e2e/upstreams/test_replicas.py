"""Upstream changes made on one replica are in force on the other within a second (PostgreSQL + Redis)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.conftest import UPSTREAM_KEY, two_replicas
from tests.support.fake_upstream import FakeUpstream, run_fake_upstream
from tests.support.server import GatehouseServer

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
CHAT = {"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def primary() -> Iterator[FakeUpstream]:
    with run_fake_upstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, primary: FakeUpstream, fake_upstream: FakeUpstream
) -> Iterator[tuple[GatehouseServer, GatehouseServer]]:
    workdir: Path = tmp_path_factory.mktemp("upstream-replicas")
    config = workdir / "gatehouse.yaml"
    served = {"models": ["fake-chat"], "discover": False}
    config.write_text(
        yaml.safe_dump(
            {
                "upstreams": [
                    {"name": "primary", "kind": "openai", "base_url": primary.url, **served},
                    {
                        "name": "backup",
                        "kind": "openai",
                        "base_url": fake_upstream.url,
                        "api_key": UPSTREAM_KEY,
                        **served,
                    },
                ]
            }
        )
    )
    with two_replicas(workdir, GATEHOUSE_CONFIG=str(config)) as pair:
        yield pair


def _within(check: Callable[[], bool], seconds: float = 1.0) -> float:
    started = time.perf_counter()
    while not check():
        assert time.perf_counter() - started < seconds, f"not within {seconds} s"
        time.sleep(0.01)
    return time.perf_counter() - started


def _view(client: httpx.Client, name: str) -> dict[str, Any]:
    return next((u for u in client.get("/admin/upstreams").json() if u["name"] == name), {})


def test_an_override_on_one_replica_stops_traffic_on_the_other(
    replicas: tuple[GatehouseServer, GatehouseServer], primary: FakeUpstream
) -> None:
    a, b = replicas
    with a.client() as on_a, b.client() as on_b:
        upstream_id = _view(on_a, "primary")["id"]
        assert on_b.post("/v1/chat/completions", json=CHAT).status_code == 200
        put = on_a.put(f"/admin/upstreams/{upstream_id}/override", json={"state": "down", "reason": "maintenance"})
        assert put.status_code == 200
        waited = _within(lambda: _view(on_b, "primary")["state"] == "down")
        before = primary.stats()["chat_requests"]
        for _ in range(5):
            assert on_b.post("/v1/chat/completions", json=CHAT).status_code == 200
        assert primary.stats()["chat_requests"] == before, "replica B sends nothing to it"
        assert on_a.delete(f"/admin/upstreams/{upstream_id}/override").status_code == 200
        _within(lambda: _view(on_b, "primary")["state"] == "up")
        assert on_b.post("/v1/chat/completions", json=CHAT).status_code == 200
        assert primary.stats()["chat_requests"] == before + 1
    assert waited < 1.0


def test_an_upstream_provisioned_on_one_replica_serves_on_the_other(
    replicas: tuple[GatehouseServer, GatehouseServer], fake_upstream: FakeUpstream
) -> None:
    a, b = replicas
    with a.client() as on_a, b.client() as on_b:
        body = {"name": "third", "kind": "ollama", "base_url": fake_upstream.url, "api_key": UPSTREAM_KEY}
        created = on_a.post("/admin/upstreams", json=body)
        assert created.status_code == 201, created.text
        _within(lambda: "fake-embed" in _view(on_b, "third").get("served_models", []), 2.0)
        models = {m["id"]: m["owned_by"] for m in on_b.get("/v1/models").json()["data"]}
        assert "third" in models["fake-embed"]
        assert on_a.delete(f"/admin/upstreams/{created.json()['id']}").status_code == 204
        _within(lambda: all(u["name"] != "third" for u in on_b.get("/admin/upstreams").json()))
        _within(lambda: "third" not in on_b.get("/v1/models").json()["data"][0]["owned_by"])
