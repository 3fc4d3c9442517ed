"""The blocklist on a real server: the client address is the one uvicorn resolves, so behind a trusted proxy
(FORWARDED_ALLOW_IPS) the X-Forwarded-For client is refused while the probes answer; from an untrusted peer the
header counts for nothing, so a blocked client cannot dodge the list, nor can anyone frame another address."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.server import base_env, run_gatehouse

REASON = "scraping the console, ticket 99"


def test_blocked_behind_a_trusted_proxy_and_not_spoofable(tmp_path: Path) -> None:
    env = base_env(f"sqlite+aiosqlite:///{tmp_path}/gatehouse.db", tmp_path / "data", FORWARDED_ALLOW_IPS="127.0.0.1")
    via_proxy = {"x-forwarded-for": "203.0.113.5"}
    with run_gatehouse(env, workdir=tmp_path) as server, server.client() as admin:
        added = admin.post("/admin/blocklist", json={"network": "203.0.113.0/24", "reason": REASON})
        assert added.status_code == 201, added.text

        refused = admin.get("/v1/models", headers=via_proxy)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "ip_blocked" and REASON not in refused.text
        ollama = admin.post("/api/chat", headers=via_proxy, json={"model": "demo", "messages": []})
        assert ollama.status_code == 403 and "administrator" in ollama.json()["error"]
        assert admin.get("/healthz", headers=via_proxy).status_code == 200
        assert admin.get("/readyz", headers=via_proxy).status_code == 200
        assert admin.get("/v1/models", headers={"x-forwarded-for": "198.51.100.1"}).status_code == 200

        lines = [json.loads(line) for line in server.log_text().splitlines() if line.startswith("{")]
        access = [line for line in lines if line.get("event") == "request" and line.get("status") == 403]
        assert {line["client_ip"] for line in access} == {"203.0.113.5"}
        metrics = admin.get("/metrics").text
        assert "gatehouse_ip_blocked_requests_total 2.0" in metrics

    # Served straight to clients (no proxy trusted): X-Forwarded-For is whatever a client wrote, and ignored.
    env["FORWARDED_ALLOW_IPS"] = "10.255.255.1"
    with run_gatehouse(env, workdir=tmp_path) as server, server.client() as admin:
        assert admin.get("/v1/models", headers=via_proxy).status_code == 200
        assert admin.get("/admin/blocklist").json()[0]["network"] == "203.0.113.0/24"  # loaded at start
