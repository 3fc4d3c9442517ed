"""GET /metrics: Prometheus' text format, every family after traffic, and who may read it (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.conftest import Harness, make_settings, running_app

CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hello"}]}
METRICS_TOKEN = "metrics-token-for-tests-0123456789"
# Family name (as the parser names it: a counter without its _total) -> whether traffic must give it samples.
FAMILIES = {
    "gatehouse_http_request_duration_seconds": True,
    "gatehouse_upstream_request_duration_seconds": True,
    "gatehouse_upstream_ttft_seconds": True,
    "gatehouse_tokens": True,
    "gatehouse_active_streams": True,
    "gatehouse_event_loop_tasks": True,
    "gatehouse_stream_duration_seconds": True,
    "quota_blocks": True,
    "rate_limit_hits": False,
    "sse_pings": True,
    "gatehouse_db_statement_duration_seconds": True,
    "gatehouse_upstream_state": True,
    "gatehouse_build_info": True,
}


def _families(text: str) -> dict[str, list[Sample]]:
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def _value(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


async def _user_key(harness: Harness, **quota: int) -> str:
    email = f"metrics-{os.urandom(3).hex()}@example.com"
    user = (await harness.client.post("/admin/users", json={"email": email})).json()
    if quota:
        assert (await harness.client.patch(f"/admin/users/{user['id']}", json=quota)).status_code == 200
    created = await harness.client.post(f"/admin/users/{user['id']}/keys", json={"name": "k"})
    assert created.status_code == 201, created.text
    key: str = created.json()["key"]
    return key


async def test_metrics_carry_every_family_after_traffic(harness: Harness) -> None:
    client = harness.client
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    streamed = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert streamed.status_code == 200 and "[DONE]" in streamed.text
    embedded = await client.post("/v1/embeddings", json={"model": "demo-embed", "input": "hello"})
    assert embedded.status_code == 200, embedded.text
    assert (await client.get("/no/such/route")).status_code == 404
    limited = await _user_key(harness, messages_per_day=0)
    refused = await client.post("/v1/chat/completions", json=CHAT, headers=harness.as_key(limited))
    assert refused.status_code == 429, refused.text
    user_id = (await client.get("/me")).json()["id"]
    assert (await client.get(f"/admin/users/{user_id}")).status_code == 200

    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    families = _families(response.text)
    missing = set(FAMILIES) - set(families)
    assert not missing, missing
    empty = {name for name, needs_samples in FAMILIES.items() if needs_samples and not families[name]}
    assert not empty, empty

    http = families["gatehouse_http_request_duration_seconds"]
    count = "gatehouse_http_request_duration_seconds_count"
    assert _value(http, count, route="/v1/chat/completions", method="POST", status="200") >= 2
    assert _value(http, count, route="unmatched", method="GET", status="404") >= 1
    # Route templates, never raw paths: no series carries a concrete id.
    assert _value(http, count, route="/admin/users/{user_id}", method="GET", status="200") >= 1
    assert not [s for s in http if s.labels.get("route", "").endswith(f"/{user_id}")]

    upstream = families["gatehouse_upstream_request_duration_seconds"]
    assert _value(upstream, "gatehouse_upstream_request_duration_seconds_count", model="demo") >= 2
    assert _value(upstream, "gatehouse_upstream_request_duration_seconds_count", model="demo-embed") >= 1
    assert _value(families["gatehouse_upstream_ttft_seconds"], "gatehouse_upstream_ttft_seconds_count") >= 1
    tokens = families["gatehouse_tokens"]
    assert _value(tokens, "gatehouse_tokens_total", model="demo", direction="in") > 0
    assert _value(tokens, "gatehouse_tokens_total", model="demo", direction="out") > 0
    assert _value(tokens, "gatehouse_tokens_total", model="demo-embed", direction="in") > 0
    streams = families["gatehouse_stream_duration_seconds"]
    assert _value(streams, "gatehouse_stream_duration_seconds_count", endpoint="chat") >= 1
    assert _value(families["quota_blocks"], "quota_blocks_total", kind="messages") >= 1
    db = families["gatehouse_db_statement_duration_seconds"]
    assert _value(db, "gatehouse_db_statement_duration_seconds_count", kind="SELECT") > 0
    assert _value(db, "gatehouse_db_statement_duration_seconds_count", kind="UPDATE") > 0
    state = families["gatehouse_upstream_state"]
    assert _value(state, "gatehouse_upstream_state", state="up") >= 1
    assert _value(families["gatehouse_build_info"], "gatehouse_build_info") >= 1


async def test_metrics_need_a_monitor_or_the_metrics_token(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, metrics_token=METRICS_TOKEN)
    async with running_app(settings) as harness:
        user_key = await _user_key(harness)
        transport = httpx.ASGITransport(app=harness.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gatehouse.test") as anonymous:
            denied = await anonymous.get("/metrics")
            assert denied.status_code == 401 and denied.json()["error"]["code"] == "missing_api_key"
            wrong = await anonymous.get("/metrics", headers={"authorization": "Bearer not-the-metrics-token"})
            assert wrong.status_code == 401
            scraper = await anonymous.get("/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"})
            assert scraper.status_code == 200 and "gatehouse_http_request_duration_seconds" in scraper.text
            forbidden = await anonymous.get("/metrics", headers={"authorization": f"Bearer {user_key}"})
            assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
        assert (await harness.client.get("/metrics")).status_code == 200  # the admin's key


async def test_without_a_metrics_token_no_bearer_but_a_monitor_key_gets_in(harness: Harness) -> None:
    transport = httpx.ASGITransport(app=harness.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gatehouse.test") as anonymous:
        # An empty METRICS_TOKEN is never a valid bearer.
        assert (await anonymous.get("/metrics", headers={"authorization": "Bearer "})).status_code == 401
    monitor = (await harness.client.post("/admin/users", json={"email": "mon@example.com", "role": "monitor"})).json()
    key = (await harness.client.post(f"/admin/users/{monitor['id']}/keys", json={"name": "k"})).json()["key"]
    assert (await harness.client.get("/metrics", headers=harness.as_key(key))).status_code == 200
