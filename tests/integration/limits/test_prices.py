"""The price table through the API, the CLI and GATEHOUSE_CONFIG's `prices:`: set, list, history and remove,
audited; versions in force by time; the file applied once and when its value changes; bad input named."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from argon2 import PasswordHasher
from sqlalchemy import select
from typer.testing import CliRunner, Result

from gatehouse.auth import passwords
from gatehouse.cli import app as cli
from gatehouse.cli.common import db_session
from gatehouse.limits.models import ModelPrice
from gatehouse.settings import get_settings
from tests.conftest import Harness, make_settings, running_app
from tests.support.accounts import create_member, error_of

GPT = {"input": 2.5, "output": "10", "cached_input": 1.25}  # numbers and decimal strings alike
GPT_MICROS = (2_500_000, 10_000_000, 1_250_000)


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


async def put(harness: Harness, model: str, body: dict[str, Any]) -> Any:
    response = await harness.client.put(f"/admin/prices/{model}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


# --- the API ---------------------------------------------------------------------------------------


async def test_set_list_history_and_remove_through_the_api(harness: Harness) -> None:
    set_ = await put(harness, "gpt-4o", GPT)
    assert (set_["input"], set_["output"], set_["cached_input"]) == (2.5, 10, 1.25)
    assert (set_["input_micros"], set_["output_micros"], set_["cached_input_micros"]) == GPT_MICROS
    assert set_["currency"] == "USD" and set_["source"] == "api" and set_["removed"] is False
    assert set_["created_by"] == 1  # the bootstrap admin
    pattern = await put(harness, "llama*", {"input": 0, "output": "0.000001"})
    assert pattern["pattern"] is True and pattern["cached_input"] == 0  # cached input defaults to input

    listed = (await harness.client.get("/admin/prices")).json()
    assert listed["currency"] == "USD"
    by_name = {item["model"]: item for item in listed["items"]}
    assert by_name["gpt-4o"]["priced"] is True and by_name["gpt-4o"]["current"]["id"] == set_["id"]
    assert by_name["llama*"]["pattern"] is True
    # The models clients can use that nothing prices are listed too: they cost 0.
    assert by_name["demo"] == {"model": "demo", "pattern": False, "priced": False, "current": None, "scheduled": None}

    # The same price again adds nothing; another one adds a version, audited with the price it replaces.
    assert (await put(harness, "gpt-4o", {"input": "2.50", "output": 10, "cached_input": 1.25}))["id"] == set_["id"]
    cheaper = await put(harness, "gpt-4o", {"input": 2, "output": 8})
    history = (await harness.client.get("/admin/prices/history", params={"model": "gpt-4o"})).json()
    assert [v["id"] for v in history["items"]] == [cheaper["id"], set_["id"]] and history["next_cursor"] is None

    removed = await harness.client.delete("/admin/prices/gpt-4o")
    assert removed.status_code == 200, removed.text
    assert removed.json()["removed"] is True and removed.json()["input"] is None
    listed = (await harness.client.get("/admin/prices")).json()
    assert "gpt-4o" not in {item["model"] for item in listed["items"]}
    gone = await harness.client.delete("/admin/prices/gpt-4o")
    assert gone.status_code == 404 and error_of(gone)["code"] == "price_not_found", gone.text

    # Every version, the latest to take effect first, page by page.
    first = (await harness.client.get("/admin/prices/history", params={"limit": 2})).json()
    rest = (await harness.client.get("/admin/prices/history", params={"before": first["next_cursor"]})).json()
    ids = [v["id"] for v in first["items"] + rest["items"]]
    assert ids == [removed.json()["id"], cheaper["id"], pattern["id"], set_["id"]]

    events = (await harness.client.get("/admin/audit", params={"action": "price."})).json()["items"]
    assert [(e["action"], e["target_id"]) for e in reversed(events)] == [
        ("price.set", "gpt-4o"),
        ("price.set", "llama*"),
        ("price.set", "gpt-4o"),
        ("price.removed", "gpt-4o"),
    ]
    changed = events[1]["details"]
    assert changed["before"] == {"input": "2.5", "output": "10", "cached_input": "1.25"}
    assert changed["after"] == {"input": "2", "output": "8", "cached_input": "2"}
    assert events[0]["details"]["before"] == changed["after"] and events[0]["details"]["after"] is None
    assert (await harness.client.get("/admin/audit/verify")).json()["ok"] is True


async def test_a_model_name_with_slashes_and_a_scheduled_change(harness: Harness) -> None:
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    await put(harness, "openai/gpt-4o-mini", {"input": "0.15", "output": "0.6"})
    scheduled = await put(harness, "openai/gpt-4o-mini", {"input": "0.1", "output": "0.5", "effective_from": later})
    listed = (await harness.client.get("/admin/prices")).json()
    item = next(i for i in listed["items"] if i["model"] == "openai/gpt-4o-mini")
    assert item["current"]["input"] == 0.15 and item["scheduled"]["id"] == scheduled["id"]
    removal = await harness.client.delete("/admin/prices/openai/gpt-4o-mini", params={"effective_from": later})
    assert removal.status_code == 200 and removal.json()["removed"] is True, removal.text
    # Made later for the same time, the removal cancels the scheduled price.
    listed = (await harness.client.get("/admin/prices")).json()
    item = next(i for i in listed["items"] if i["model"] == "openai/gpt-4o-mini")
    assert item["current"]["input"] == 0.15 and item["scheduled"]["id"] == removal.json()["id"]


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"input": -1, "output": 1}, 422, "validation_error", "input"),
        ({"input": 1, "output": "0.1234567"}, 422, "validation_error", "output"),
        ({"input": 1, "output": 1, "cached_input": "lots"}, 422, "validation_error", "cached_input"),
        ({"input": 1}, 422, "validation_error", "output"),
        ({"input": 1, "output": 1, "price": 3}, 422, "validation_error", "price"),
        ({"input": 1, "output": 1, "currency": "EUR"}, 400, "currency_mismatch", "currency"),
        ({"input": 1, "output": 1, "effective_from": "2020-01-01T00:00:00Z"}, 400, "effective_from_in_past", None),
        ({"input": 1, "output": 1, "effective_from": "2999-01-01T00:00:00"}, 422, "validation_error", None),
        ({"input": 1, "output": 1, "effective_from": "9999-12-31T23:00:00-05:00"}, 400, "bad_request", None),
    ],
)
async def test_bad_input_is_refused_naming_the_field(
    harness: Harness, body: dict[str, Any], status: int, code: str, param: str | None
) -> None:
    response = await harness.client.put("/admin/prices/gpt-4o", json=body)
    assert response.status_code == status, response.text
    error = error_of(response)
    assert error["code"] == code
    assert error["param"] == (param or "effective_from")
    assert (param or "effective_from") in error["message"]
    assert (await harness.client.get("/admin/prices/history")).json()["items"] == []


async def test_the_same_currency_in_lower_case_is_accepted(harness: Harness) -> None:
    assert (await put(harness, "m", {"input": 1, "output": 1, "currency": "usd"}))["currency"] == "USD"


async def test_monitors_read_and_admins_change(harness: Harness) -> None:
    monitor = await create_member(harness, "monitor")
    user = await create_member(harness)
    assert (await harness.client.get("/admin/prices", headers=harness.as_key(monitor.key))).status_code == 200
    history = await harness.client.get("/admin/prices/history", headers=harness.as_key(monitor.key))
    assert history.status_code == 200
    refused = await harness.client.put(
        "/admin/prices/m", json={"input": 1, "output": 1}, headers=harness.as_key(monitor.key)
    )
    assert refused.status_code == 403
    assert (await harness.client.get("/admin/prices", headers=harness.as_key(user.key))).status_code == 403


# --- GATEHOUSE_CONFIG's prices ---------------------------------------------------------------------


async def _versions(harness: Harness) -> list[ModelPrice]:
    async with harness.runtime.db.sessionmaker() as session:
        return list((await session.execute(select(ModelPrice).order_by(ModelPrice.id))).scalars())


def write_prices(path: Path, prices: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"prices": prices}))
    return path


async def test_the_config_files_prices_are_applied_once_and_when_they_change(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "gatehouse.yaml"
    prices: dict[str, Any] = {
        "demo": {"input": 2.5, "output": 10, "cached_input": 1.25},
        "llama*": {"input": 0, "output": 0},
    }
    settings = make_settings(database_url, tmp_path, gatehouse_config=write_prices(path, prices))
    async with running_app(settings) as harness:
        first = await _versions(harness)
        assert [(v.model, v.source, v.created_by) for v in first] == [
            ("demo", "config", None),
            ("llama*", "config", None),
        ]
        assert (first[0].input_micros, first[0].output_micros, first[0].cached_input_micros) == GPT_MICROS
        await put(harness, "demo", {"input": 5, "output": 20})  # an API change stands until the file's value changes
        events = (await harness.client.get("/admin/audit", params={"action": "price.set"})).json()["items"]
        assert {e["actor_label"] for e in events if e["details"]["source"] == "config"} == {"GATEHOUSE_CONFIG"}

    async with running_app(settings) as harness:  # a restart with the same file adds nothing
        assert len(await _versions(harness)) == 3
        listed = {i["model"]: i for i in (await harness.client.get("/admin/prices")).json()["items"]}
        assert listed["demo"]["current"]["input"] == 5 and listed["demo"]["current"]["source"] == "api"

    prices["demo"]["output"] = 11  # the file's value changes: applied
    del prices["llama*"]  # the file no longer prices it: removed
    write_prices(path, prices)
    async with running_app(settings) as harness:
        versions = await _versions(harness)
        assert [(v.model, v.source, v.output_micros) for v in versions[3:]] == [
            ("demo", "config", 11_000_000),
            ("llama*", "config", None),
        ]
        listed = {i["model"]: i for i in (await harness.client.get("/admin/prices")).json()["items"]}
        assert listed["demo"]["current"]["output"] == 11 and "llama*" not in listed


async def test_a_config_price_in_another_currency_stops_the_start(tmp_path: Path) -> None:
    from gatehouse.upstreams.config import ConfigError, load_config

    path = tmp_path / "gatehouse.yaml"
    path.write_text(yaml.safe_dump({"prices": {"gpt": {"input": 1, "output": 1, "currency": "EUR"}}}))
    settings = make_settings("sqlite+aiosqlite:///:memory:", tmp_path, gatehouse_config=path)
    with pytest.raises(ConfigError, match=r"prices\.gpt\.currency.*PRICE_CURRENCY"):
        load_config(settings)
    path.write_text(yaml.safe_dump({"prices": {"gpt": {"input": -1, "output": 1}}}))
    with pytest.raises(ConfigError, match=r"prices\.gpt\.input.*>= 0"):
        load_config(settings)


# --- the CLI ---------------------------------------------------------------------------------------


def gatehouse(*args: str) -> Result:
    get_settings.cache_clear()
    return CliRunner().invoke(cli, list(args))


def test_the_cli_sets_lists_shows_history_and_removes(
    monkeypatch: pytest.MonkeyPatch, database_url: str, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("COLUMNS", "200")
    assert gatehouse("db", "upgrade").exit_code == 0

    done = gatehouse("prices", "set", "gpt-4o", "--input", "2.5", "--output", "10", "--cached-input", "1.25")
    assert done.exit_code == 0, done.output
    assert "set gpt-4o: input 2.5, output 10, cached input 1.25 USD per million tokens" in done.output
    again = gatehouse("prices", "set", "gpt-4o", "--input", "2.50", "--output", "10", "--cached-input", "1.25")
    assert again.exit_code == 0 and "unchanged" in again.output
    later = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S")
    scheduled = gatehouse("prices", "set", "gpt-4o", "--input", "2", "--output", "8", "--from", later)
    assert scheduled.exit_code == 0, scheduled.output
    assert gatehouse("prices", "set", "llama*", "--input", "0", "--output", "0").exit_code == 0

    listed = gatehouse("prices", "list")
    assert listed.exit_code == 0, listed.output
    assert "gpt-4o" in listed.output and "llama*" in listed.output and "1.25" in listed.output

    removed = gatehouse("prices", "remove", "llama*")
    assert removed.exit_code == 0 and "removed the price of llama*" in removed.output
    history = gatehouse("prices", "history", "gpt-4o")
    assert history.exit_code == 0 and history.output.count("gpt-4o") == 2, history.output
    assert "cli/config" in history.output
    tail = gatehouse("audit", "tail", "--action", "price.")
    assert tail.exit_code == 0 and tail.output.count("price.set") == 3 and "price.removed" in tail.output

    for args, says in [
        (("prices", "set", "m", "--input", "-1", "--output", "1"), "--input must be >= 0"),
        (("prices", "set", "m", "--input", "1", "--output", "0.1234567"), "--output must have at most 6 decimal"),
        (("prices", "set", "m", "--input", "1", "--output", "1", "--from", "soon"), "--from must be an ISO 8601"),
    ]:
        refused = gatehouse(*args)
        assert refused.exit_code == 2 and says in refused.output, refused.output
    for args, says in [
        (("prices", "set", "m", "--input", "1", "--output", "1", "--currency", "EUR"), "Prices are in USD"),
        (("prices", "set", "m", "--input", "1", "--output", "1", "--from", "2020-01-01"), "in the past"),
        (("prices", "remove", "llama*"), "No price for `llama*`"),
    ]:
        refused = gatehouse(*args)
        assert refused.exit_code == 1 and says in refused.output, refused.output

    async def audited() -> list[tuple[str, str | None, str | None]]:
        from gatehouse.audit.service import AuditFilter, list_events

        async with db_session(get_settings()) as session:
            events = await list_events(session, where=AuditFilter(action="price."), limit=100)
            return [(e.action, e.target_id, e.actor_label) for e in reversed(events)]

    get_settings.cache_clear()
    assert asyncio.run(audited()) == [
        ("price.set", "gpt-4o", "cli"),
        ("price.set", "gpt-4o", "cli"),
        ("price.set", "llama*", "cli"),
        ("price.removed", "llama*", "cli"),
    ]
