"""`gatehouse serve --workers 2`: whichever worker answers /metrics, the counters are the sum over both."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import fresh_database
from tests.support.server import GatehouseServer, base_env, run_gatehouse
from tests.support.services import flush_redis_prefix, redis_server, unique_redis_prefix

pytestmark = pytest.mark.redis

REQUESTS = 20
SCRAPES = 8
COUNT = "gatehouse_http_request_duration_seconds_count"


def _readyz_count(server: GatehouseServer) -> float:
    """The count of /readyz 200s in one scrape (a new connection: any worker may answer)."""
    with server.client() as client:
        response = client.get("/metrics")
    assert response.status_code == 200, response.text
    return sum(
        sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == COUNT and sample.labels.get("route") == "/readyz" and sample.labels["status"] == "200"
    )


def test_counters_add_up_across_two_workers(tmp_path: Path) -> None:
    prefix = unique_redis_prefix()
    try:
        with fresh_database("sqlite", tmp_path) as database_url:
            env = base_env(database_url, tmp_path / "data", REDIS_URL=redis_server(), REDIS_PREFIX=prefix)
            env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # `serve` makes a fresh one
            with run_gatehouse(env, workdir=tmp_path, workers=2) as server:
                before = _readyz_count(server)  # run_gatehouse polled /readyz until it answered
                for _ in range(REQUESTS):  # a new connection each: the requests spread over the workers
                    assert httpx.get(server.url + "/readyz", timeout=10).status_code == 200
                counts = [_readyz_count(server) for _ in range(SCRAPES)]
                assert all(count >= before + REQUESTS for count in counts), (before, counts)
                assert len(set(counts)) == 1, counts  # the same sum, whichever worker answered
            assert "Traceback" not in server.log_text()
    finally:
        flush_redis_prefix(redis_server(), prefix)
