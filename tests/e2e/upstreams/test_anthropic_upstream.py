"""An anthropic upstream: its models are discovered from Anthropic's paged model list (with each model's output
cap and context length), with x-api-key and anthropic-version, and a wrong key is reported as such."""

from __future__ import annotations

import pytest

from gatehouse.upstreams.config import UpstreamConfig, UpstreamKind
from gatehouse.upstreams.providers import HttpProvider, UpstreamUnreachable
from tests.e2e.conftest import UPSTREAM_KEY
from tests.support.fake_upstream import MODELS, FakeUpstream


def _provider(url: str, key: str) -> HttpProvider:
    config = UpstreamConfig(name="claude", kind=UpstreamKind.ANTHROPIC, base_url=url + "/v1", api_key=key)
    return HttpProvider(config, connect_timeout=2, read_timeout=5)


async def test_models_are_discovered_page_by_page(fake_upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gatehouse.upstreams.providers.ANTHROPIC_PAGE", "3")  # several pages of the fake's list
    provider = _provider(fake_upstream.url, UPSTREAM_KEY)
    await provider.start()
    try:
        names = await provider.list_models()
    finally:
        await provider.close()
    assert sorted(names) == sorted(MODELS) and len(MODELS) > 3
    assert provider.model_limits["fake-chat"] == (1024, 4096)  # max_tokens, max_input_tokens


async def test_a_wrong_key_is_named(fake_upstream: FakeUpstream) -> None:
    provider = _provider(fake_upstream.url, "wrong")
    await provider.start()
    try:
        with pytest.raises(UpstreamUnreachable, match="refused Gatehouse's credentials"):
            await provider.list_models()
    finally:
        await provider.close()
