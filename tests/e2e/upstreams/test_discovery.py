"""Upstreams from the env shortcuts: models discovered from /api/tags and /v1/models, kept fresh."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_settings, running_app
from tests.e2e.conftest import UPSTREAM_KEY
from tests.support.fake_upstream import MODELS, FakeUpstream
from tests.support.server import free_port

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("shortcut", ["ollama", "openai"])
async def test_env_shortcut_discovers_models(
    database_url: str, tmp_path: Path, fake_upstream: FakeUpstream, shortcut: str
) -> None:
    settings = make_settings(
        database_url, tmp_path, **{f"{shortcut}_base_url": fake_upstream.url, f"{shortcut}_api_key": UPSTREAM_KEY}
    )
    async with running_app(settings) as harness:
        models = (await harness.client.get("/v1/models")).json()["data"]
        assert {m["id"] for m in models} == set(MODELS)
        assert {m["owned_by"] for m in models} == {shortcut}
        reply = await harness.client.post(
            "/api/chat", json={"model": "fake-chat", "messages": MESSAGES, "stream": False}
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["done"] is True
        assert "demo" not in {m["id"] for m in models}, "the demo is only there when nothing is configured"


async def test_upstream_down_at_startup_does_not_block_and_is_picked_up_later(
    database_url: str, tmp_path: Path
) -> None:
    from tests.support.fake_upstream import run_fake_upstream

    port = free_port()
    settings = make_settings(
        database_url, tmp_path, ollama_base_url=f"http://127.0.0.1:{port}", upstream_connect_timeout=0.5
    )
    async with running_app(settings) as harness:
        assert (await harness.client.get("/readyz")).status_code == 200
        assert (await harness.client.get("/v1/models")).json()["data"] == []
        missing = await harness.client.post("/v1/chat/completions", json={"model": "fake-chat", "messages": MESSAGES})
        assert missing.status_code == 404
        with run_fake_upstream(port=port):
            await harness.runtime.upstreams.refresh()
            models = {m["id"] for m in (await harness.client.get("/v1/models")).json()["data"]}
            assert "fake-chat" in models
            ok = await harness.client.post("/v1/chat/completions", json={"model": "fake-chat", "messages": MESSAGES})
            assert ok.status_code == 200, ok.text
        down = await harness.client.post("/v1/chat/completions", json={"model": "fake-chat", "messages": MESSAGES})
        assert down.status_code == 502
        assert down.json()["error"]["code"] == "upstream_unreachable"


async def test_bad_config_file_names_the_field(tmp_path: Path) -> None:
    from gatehouse.upstreams.config import ConfigError, load_config

    config = tmp_path / "gatehouse.yaml"
    config.write_text("upstreams:\n  - name: x\n    kind: mystery\n    base_url: http://h\n")
    settings = make_settings("sqlite+aiosqlite:///:memory:", tmp_path, gatehouse_config=config)
    with pytest.raises(ConfigError, match=r"upstreams\.0\.kind"):
        load_config(settings)
    config.write_text("models:\n  m: {upstream: nowhere, model: x}\n")
    with pytest.raises(ConfigError, match="unknown upstream 'nowhere'"):
        load_config(settings)
