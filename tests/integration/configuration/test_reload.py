"""Live reload (POST /admin/reload): an upstream key rotated through its NAME_FILE with requests in flight, an
invalid file applying nothing, restart-needed settings, and the *_PREVIOUS rotation windows; SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from gatehouse.audit.models import AuditEvent
from gatehouse.configuration.reload import Reloader
from gatehouse.core.logging import current_levels
from gatehouse.settings import Settings
from tests.conftest import Harness, make_settings, running_app
from tests.support.fake_upstream import FakeUpstream, run_fake_upstream
from tests.support.server import ADMIN_EMAIL, ADMIN_PASSWORD, JWT_SECRET

OLD_KEY = "sk-old-upstream-key-0123456789"
NEW_KEY = "sk-new-upstream-key-9876543210"
MESSAGES = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def fake_upstream() -> Iterator[FakeUpstream]:
    # Slow tokens: a streamed answer takes about a second, so requests are in flight while the key changes.
    with run_fake_upstream(api_key=OLD_KEY, token_delay=0.05) as upstream:
        yield upstream


def reloader_of(harness: Harness) -> Reloader:
    return harness.runtime.components.get(Reloader)


def reads(harness: Harness, settings: Callable[[], Settings]) -> None:
    """Point the app's reloads at `settings` (the tests' stand-in for the process's environment and .env)."""
    reloader_of(harness).reread = settings


async def reload(harness: Harness) -> dict[str, Any]:
    """This replica's outcome; a refused reload (422 reload_failed) as {"ok": False, "error", "id"}."""
    response = await harness.client.post("/admin/reload")
    if response.status_code == 422:
        error = response.json()["error"]
        assert error["code"] == "reload_failed", error
        found = re.search(r"\(reload ([0-9a-f]+): nothing was applied", error["message"])
        assert found, error["message"]
        return {"ok": False, "error": error["message"], "id": found.group(1)}
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def audited(harness: Harness, action: str) -> list[dict[str, Any]]:
    async with harness.runtime.db.sessionmaker() as session:
        rows = (await session.execute(select(AuditEvent).where(AuditEvent.action == action))).scalars().all()
    return [{**json.loads(row.details), "replica": row.target_id} for row in rows]


@pytest.fixture
async def keyed(
    database_url: str, tmp_path: Path, fake_upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Harness]:
    """The app in front of the fake upstream, its key in OPENAI_API_KEY_FILE (as a mounted secret)."""
    fake_upstream.set_keys(OLD_KEY)
    key_file = tmp_path / "openai_api_key"
    key_file.write_text(OLD_KEY + "\n")
    monkeypatch.setenv("OPENAI_API_KEY_FILE", str(key_file))

    def settings() -> Settings:
        return make_settings(database_url, tmp_path, openai_base_url=fake_upstream.url, upstream_probe_seconds=0)

    async with running_app(settings()) as harness:
        reads(harness, settings)
        yield harness


async def chat(harness: Harness, *, stream: bool) -> int:
    """One chat through the gateway; its status (a stream is read to its end, and must end with [DONE])."""
    body = {"model": "fake-chat", "messages": MESSAGES, "stream": stream}
    if not stream:
        return (await harness.client.post("/v1/chat/completions", json=body)).status_code
    async with harness.client.stream("POST", "/v1/chat/completions", json=body) as response:
        text = (await response.aread()).decode()
    assert response.status_code != 200 or "[DONE]" in text, text
    return response.status_code


async def test_a_rotated_upstream_key_is_applied_with_requests_in_flight_and_none_fails(
    keyed: Harness, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    assert await chat(keyed, stream=False) == 200
    # Streams in flight, and a steady stream of new requests, across the whole rotation.
    in_flight = [asyncio.create_task(chat(keyed, stream=True)) for _ in range(8)]
    done = asyncio.Event()

    async def steady() -> list[int]:
        statuses = []
        while not done.is_set():
            statuses.append(await chat(keyed, stream=False))
        return statuses

    traffic = [asyncio.create_task(steady()) for _ in range(3)]
    await asyncio.sleep(0.2)
    fake_upstream.set_keys(OLD_KEY, NEW_KEY)  # the provider's rotation: both keys valid for a while
    (tmp_path / "openai_api_key").write_text(NEW_KEY + "\n")
    result = await reload(keyed)
    fake_upstream.set_keys(NEW_KEY)  # the old key revoked at the provider: only the new pool may be used now
    assert result["ok"] is True, result
    assert result["changed"] == ["OPENAI_API_KEY"]
    assert result["upstreams"] == ["openai"]
    assert result["restart_needed"] == []
    statuses = await asyncio.gather(*in_flight)
    await asyncio.sleep(0.3)
    done.set()
    steady_statuses = [status for batch in await asyncio.gather(*traffic) for status in batch]
    assert statuses == [200] * 8
    assert steady_statuses and set(steady_statuses) == {200}
    assert await chat(keyed, stream=True) == 200  # new requests use the new key

    events = await audited(keyed, "config.reloaded")
    assert [e["reload_id"] for e in events] == [result["id"]]
    assert events[0]["changed"] == ["OPENAI_API_KEY"]
    assert OLD_KEY not in json.dumps(events) and NEW_KEY not in json.dumps(events)


async def test_an_invalid_config_file_applies_nothing_names_the_field_and_is_audited(
    database_url: str, tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set_keys(OLD_KEY)
    config = tmp_path / "gatehouse.yaml"
    upstream = {"name": "fake", "kind": "openai", "base_url": fake_upstream.url, "api_key": OLD_KEY}
    config.write_text(yaml.safe_dump({"upstreams": [upstream], "models": {"m": {"upstream": "fake", "model": "x"}}}))

    def settings() -> Settings:
        return make_settings(database_url, tmp_path, gatehouse_config=config, upstream_probe_seconds=0)

    async with running_app(settings()) as harness:
        reads(harness, settings)
        before = harness.runtime.upstreams.get("fake")
        # A key change and a typo in the same file: the key must not be applied either.
        upstream["api_key"] = NEW_KEY
        upstream["base_urll"] = fake_upstream.url
        config.write_text(yaml.safe_dump({"upstreams": [upstream]}))
        result = await reload(harness)
        assert result["ok"] is False
        assert "GATEHOUSE_CONFIG" in result["error"] and "upstreams.0.base_urll" in result["error"]
        assert NEW_KEY not in result["error"]
        assert harness.runtime.upstreams.get("fake") is before  # the old pool, the old key
        assert before is not None and before.config.api_key == OLD_KEY
        failed = await audited(harness, "config.reload_failed")
        assert [e["reload_id"] for e in failed] == [result["id"]]
        assert "upstreams.0.base_urll" in failed[0]["error"]
        assert await audited(harness, "config.reloaded") == []

        # An unreadable secret file: the setting is named, nothing applied.
        del upstream["base_urll"]
        config.write_text(yaml.safe_dump({"upstreams": [upstream]}))

        def broken() -> Settings:
            import os

            os.environ["JOB_TOKEN_FILE"] = str(tmp_path / "missing")
            try:
                return settings()
            finally:
                del os.environ["JOB_TOKEN_FILE"]

        reads(harness, broken)
        result = await reload(harness)
        assert result["ok"] is False and "JOB_TOKEN" in result["error"], result
        assert harness.runtime.upstreams.get("fake") is before

        # Fixed: applied, and the upstream gets a new pool with the new key.
        reads(harness, settings)
        result = await reload(harness)
        assert result["ok"] is True and result["upstreams"] == ["fake"], result
        after = harness.runtime.upstreams.get("fake")
        assert after is not None and after is not before and after.config.api_key == NEW_KEY


async def test_a_setting_that_needs_a_restart_is_named_and_left_as_it_was(database_url: str, tmp_path: Path) -> None:
    async with running_app(make_settings(database_url, tmp_path)) as harness:
        reads(
            harness,
            lambda: make_settings(database_url, tmp_path, db_pool_size=3, rate_limit_per_minute=7, log_level="DEBUG"),
        )
        result = await reload(harness)
        assert result["ok"] is True
        assert result["changed"] == ["LOG_LEVEL", "RATE_LIMIT_PER_MINUTE"]
        assert current_levels()[0] == logging.DEBUG
        assert result["restart_needed"] == ["DB_POOL_SIZE"]
        assert harness.runtime.settings.db_pool_size == 10  # as it was: the pool the process actually has
        assert harness.runtime.rate_limiter.limit_of("user_per_minute") == 7
        events = await audited(harness, "config.reloaded")
        assert events[-1]["restart_needed"] == ["DB_POOL_SIZE"]
        reads(harness, lambda: make_settings(database_url, tmp_path))  # the log level is the process's: back to INFO
        assert (await reload(harness))["changed"] == ["LOG_LEVEL", "RATE_LIMIT_PER_MINUTE"]
        assert current_levels()[0] == logging.INFO


async def test_previous_job_and_metrics_tokens_are_accepted_until_the_window_is_closed(
    database_url: str, tmp_path: Path
) -> None:
    old, new = "job-token-old-0123456789", "job-token-new-0123456789"
    metrics_old, metrics_new = "metrics-old-0123456789", "metrics-new-0123456789"
    async with running_app(make_settings(database_url, tmp_path, job_token=old, metrics_token=metrics_old)) as harness:
        client = harness.client

        async def run_with(token: str) -> int:
            response = await client.post("/admin/jobs/purge/run", headers={"x-job-token": token, "authorization": ""})
            return response.status_code

        async def metrics_with(token: str) -> int:
            return (await client.get("/metrics", headers={"authorization": f"Bearer {token}"})).status_code

        assert await run_with(old) == 200
        # The window opens: the new token is current, the old one still accepted.
        reads(
            harness,
            lambda: make_settings(
                database_url,
                tmp_path,
                job_token=new,
                job_token_previous=old,
                metrics_token=metrics_new,
                metrics_token_previous=metrics_old,
            ),
        )
        result = await reload(harness)
        assert result["changed"] == ["JOB_TOKEN", "JOB_TOKEN_PREVIOUS", "METRICS_TOKEN", "METRICS_TOKEN_PREVIOUS"]
        assert await run_with(new) == 200
        assert await run_with(old) == 200
        assert await metrics_with(metrics_new) == 200
        assert await metrics_with(metrics_old) == 200
        # The window closes: the old ones are refused.
        reads(harness, lambda: make_settings(database_url, tmp_path, job_token=new, metrics_token=metrics_new))
        await reload(harness)
        assert await run_with(new) == 200
        refused = await client.post("/admin/jobs/purge/run", headers={"x-job-token": old, "authorization": ""})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_token"
        assert await metrics_with(metrics_old) == 401
        assert await metrics_with(metrics_new) == 200


async def test_a_session_made_before_a_jwt_secret_rotation_works_in_the_window_and_not_after(
    database_url: str, tmp_path: Path
) -> None:
    new_secret = "a-brand-new-jwt-secret-of-forty-characters"
    async with running_app(make_settings(database_url, tmp_path)) as harness:
        client = harness.client
        login = await client.post(
            "/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}, headers={"authorization": ""}
        )
        assert login.status_code == 200, login.text
        old_csrf = login.json()["csrf_token"]
        cookie = login.cookies.get("gatehouse_session")
        assert cookie is not None

        async def make_key(csrf: str) -> int:
            response = await client.post(
                "/me/keys",
                json={"name": "after-rotation"},
                headers={"authorization": "", "x-csrf-token": csrf, "cookie": f"gatehouse_session={cookie}"},
            )
            return response.status_code

        reads(
            harness,
            lambda: make_settings(database_url, tmp_path, jwt_secret=new_secret, jwt_secret_previous=JWT_SECRET),
        )
        assert (await reload(harness))["changed"] == ["JWT_SECRET", "JWT_SECRET_PREVIOUS"]
        assert await make_key(old_csrf) in (200, 201)  # made with the previous secret: still good
        relogin = await client.post(
            "/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}, headers={"authorization": ""}
        )
        assert relogin.json()["csrf_token"] != old_csrf  # new ones are made with the new secret

        reads(harness, lambda: make_settings(database_url, tmp_path, jwt_secret=new_secret))
        await reload(harness)
        assert await make_key(old_csrf) == 403


async def test_two_replicas_sharing_redis_both_apply_a_reload_asked_of_one(
    database_url: str, tmp_path: Path, redis_url: str, redis_key_prefix: str
) -> None:
    def settings(**extra: Any) -> Settings:
        return make_settings(database_url, tmp_path, redis_url=redis_url, redis_prefix=redis_key_prefix, **extra)

    async with running_app(settings()) as a, running_app(settings()) as b:
        for replica in (a, b):  # each re-reads its own files: here both find the same change
            reads(replica, lambda: settings(rate_limit_per_minute=9))
        result = await reload(a)
        assert result["ok"] is True and result["replica"] == reloader_of(a).replica
        for _ in range(200):  # bounded: B reloads in the background when it hears the signal
            if result["id"] in reloader_of(b).results:
                break
            await asyncio.sleep(0.1)
        heard = reloader_of(b).results[result["id"]]
        assert heard.ok and heard.changed == ["RATE_LIMIT_PER_MINUTE"]
        assert b.runtime.rate_limiter.limit_of("user_per_minute") == 9
        events = await audited(a, "config.reloaded")
        assert {(e["replica"], e["reload_id"]) for e in events} == {
            (reloader_of(a).replica, result["id"]),
            (reloader_of(b).replica, result["id"]),
        }


async def test_the_files_upstreams_and_prices_are_added_changed_and_removed_by_a_reload(
    database_url: str, tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set_keys(OLD_KEY)
    config = tmp_path / "gatehouse.yaml"

    def write(upstreams: list[str], prices: dict[str, Any]) -> None:
        entries = [
            {"name": name, "kind": "openai", "base_url": fake_upstream.url, "api_key": OLD_KEY, "discover": False}
            for name in upstreams
        ]
        models = {"chat": {"upstream": upstreams[0], "model": "fake-chat"}}
        config.write_text(yaml.safe_dump({"upstreams": entries, "models": models, "prices": prices}))

    def settings() -> Settings:
        return make_settings(database_url, tmp_path, gatehouse_config=config, upstream_probe_seconds=0)

    write(["first"], {})
    async with running_app(settings()) as harness:
        reads(harness, settings)
        write(["second"], {"chat": {"input": "1.5", "output": "3"}})
        result = await reload(harness)
        assert result["ok"] is True and result["upstreams"] == ["first", "second"], result
        assert harness.runtime.upstreams.get("first") is None
        assert harness.runtime.upstreams.get("second") is not None
        stored = (await harness.client.get("/admin/upstreams")).json()
        assert [u["name"] for u in stored if u["source"] == "config"] == ["second"]
        answer = await harness.client.post("/v1/chat/completions", json={"model": "chat", "messages": MESSAGES})
        assert answer.status_code == 200, answer.text
        prices = {line["model"]: line for line in (await harness.client.get("/admin/prices")).json()["items"]}
        assert prices["chat"]["priced"] is True
        assert float(prices["chat"]["current"]["input"]) == 1.5


async def test_a_yaml_error_is_located_without_quoting_the_line_that_may_hold_a_key(
    database_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "gatehouse.yaml"
    config.write_text("upstreams: []\n")

    def settings() -> Settings:
        return make_settings(database_url, tmp_path, gatehouse_config=config)

    async with running_app(settings()) as harness:
        reads(harness, settings)
        config.write_text(f"upstreams:\n  - name: a\n    api_key: {NEW_KEY}: [oops\n")
        result = await reload(harness)
        assert result["ok"] is False
        assert "GATEHOUSE_CONFIG" in result["error"] and "line 3" in result["error"], result["error"]
        assert NEW_KEY not in result["error"]
        assert NEW_KEY not in json.dumps(await audited(harness, "config.reload_failed"))


async def test_after_a_redis_outage_a_replica_catches_up_only_when_its_files_changed(
    database_url: str, tmp_path: Path
) -> None:
    from gatehouse.core.bus import Signal

    async with running_app(make_settings(database_url, tmp_path)) as harness:
        reloader = reloader_of(harness)
        reads(harness, lambda: make_settings(database_url, tmp_path))
        await reloader.on_event(Signal.RECONNECTED, {})
        await reloader.close()  # waits for the catch-up
        assert await audited(harness, "config.reloaded") == []  # nothing changed: nothing done, nothing audited
        reads(harness, lambda: make_settings(database_url, tmp_path, rate_limit_per_minute=5))
        await reloader.on_event(Signal.RECONNECTED, {})
        await reloader.close()
        assert [e["changed"] for e in await audited(harness, "config.reloaded")] == [["RATE_LIMIT_PER_MINUTE"]]
        assert harness.runtime.rate_limiter.limit_of("user_per_minute") == 5


async def test_an_app_given_its_settings_in_code_keeps_them_on_reload(database_url: str, tmp_path: Path) -> None:
    """Nothing of this test process's environment leaks in: the settings were handed in, not read."""
    async with running_app(make_settings(database_url, tmp_path, rate_limit_per_minute=3)) as harness:
        result = await reload(harness)
        assert result["ok"] is True and result["changed"] == [] and result["restart_needed"] == []
        assert harness.runtime.rate_limiter.limit_of("user_per_minute") == 3
