"""Budget alerts on SQLite and PostgreSQL: a threshold crossed raises one signed webhook, one feed event and one
count, whatever the number of checks and replicas; deliveries retry with backoff and end delivered or failed, as
recorded; a delivery its sender left behind is taken over; the test webhook; the API and the CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from argon2 import PasswordHasher
from prometheus_client import REGISTRY
from sqlalchemy import select, update
from typer.testing import CliRunner

from gatehouse.alerts.models import AlertDelivery, BudgetAlert
from gatehouse.alerts.watcher import AlertWatcher
from gatehouse.audit.models import AuditEvent
from gatehouse.auth import passwords
from gatehouse.auth.models import ApiKey, Group
from gatehouse.cli import app as cli
from gatehouse.db.base import utcnow
from gatehouse.limits.budgets import period_end, period_start
from gatehouse.limits.models import BudgetCounter, UsageCounter
from gatehouse.settings import Settings, get_settings
from tests.conftest import Harness, make_settings, running_app
from tests.support.accounts import create_member, error_of
from tests.support.known_secrets import remember, watch_log
from tests.support.webhook_receiver import WebhookReceiver, verify, webhook_receiver

SECRET = remember("alert-webhook-secret-for-tests-0123456789", "ALERT_WEBHOOK_SECRET")
HOOK_PATH = "/hooks/T0001/" + remember("secret-path-token-42", "the alert webhook URL's secret path")
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as started:
        yield started


def alert_settings(database_url: str, tmp_path: Path, receiver: WebhookReceiver | None, **extra: Any) -> Settings:
    """Checks every 0.1 s; a webhook to the receiver with short timeouts and backoff, at most 3 attempts."""
    log_file = tmp_path / "gatehouse.log"
    watch_log(log_file)
    values: dict[str, Any] = {
        "budget_alert_check_seconds": 0.1,
        "alert_webhook_timeout_seconds": 0.5,
        "alert_webhook_backoff_seconds": 0.2,
        "alert_webhook_max_attempts": 3,
        "log_file": log_file,
    }
    if receiver is not None:
        values.update(alert_webhook_url=receiver.url + HOOK_PATH, alert_webhook_secret=SECRET)
    values.update(extra)
    return make_settings(database_url, tmp_path, **values)


@asynccontextmanager
async def alerting(
    database_url: str, tmp_path: Path, receiver: WebhookReceiver | None, **extra: Any
) -> AsyncIterator[Harness]:
    async with running_app(alert_settings(database_url, tmp_path, receiver, **extra)) as harness:
        yield harness


def watcher_of(harness: Harness) -> AlertWatcher:
    return harness.runtime.components.get(AlertWatcher)


def today(harness: Harness) -> date:
    return period_start(harness.settings.quota_timezone, "d")


def this_month(harness: Harness) -> date:
    return period_start(harness.settings.quota_timezone, "m")


def alerts_counted(scope: str, measure: str, threshold: int) -> float:
    labels = {"scope": scope, "measure": measure, "threshold": str(threshold)}
    return REGISTRY.get_sample_value("gatehouse_budget_alerts_total", labels) or 0.0


async def feed_events(harness: Harness) -> list[dict[str, Any]]:
    response = await harness.client.get(
        "/admin/events", params={"follow": "false", "last_event_id": "0", "kinds": "budget.threshold"}
    )
    assert response.status_code == 200, response.text
    return [orjson.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]


async def set_counter(harness: Harness, key: str, **usage: int) -> None:
    """The counter of a budget's current period (`key`: scope, subject id, period, as in `g3m`) holding this settled
    usage, as a settlement leaves it."""
    scope, period = key[0], key[-1]
    start = today(harness) if period == "d" else this_month(harness)
    counter_key = f"{key}{start:%Y%m%d}"
    async with harness.runtime.db.sessionmaker() as session, session.begin():
        row = await session.get(BudgetCounter, counter_key)
        if row is None:
            session.add(
                BudgetCounter(
                    key=counter_key,
                    scope=scope,
                    subject_id=int(key[1:-1]),
                    period=period,
                    start=start,
                    **{"messages": 0, "tokens": 0, "cost_nanos": 0, "reserved_tokens": 0, "reserved_cost": 0, **usage},
                )
            )
        else:
            for name, value in usage.items():
                setattr(row, name, value)


async def deliveries(harness: Harness) -> list[AlertDelivery]:
    async with harness.runtime.db.sessionmaker() as session:
        return list((await session.execute(select(AlertDelivery).order_by(AlertDelivery.id))).scalars())


async def delivery_settled(harness: Harness, seconds: float = 15.0) -> AlertDelivery:
    """The one delivery, once it is no longer pending."""
    for _ in range(int(seconds / 0.05)):
        found = await deliveries(harness)
        if found and found[0].status != "pending":
            assert len(found) == 1
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"the delivery is still pending: {found}")


# --- crossing thresholds -----------------------------------------------------------------------------------------


async def test_a_user_crossing_80_then_100_percent_sends_one_signed_webhook_each(
    database_url: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    async with alerting(database_url, tmp_path, receiver) as harness:
        member = await create_member(harness)
        assert (
            await harness.client.patch(f"/admin/users/{member.id}", json={"messages_per_day": 5})
        ).status_code == 200
        before = alerts_counted("user", "messages", 80), alerts_counted("user", "messages", 100)
        for _ in range(4):  # 4 of 5 messages: 80%
            chat = await harness.client.post("/v1/chat/completions", json=CHAT, headers=harness.as_key(member.key))
            assert chat.status_code == 200, chat.text

        first = (await receiver.wait_for(1))[0]
        assert first.path == HOOK_PATH
        assert verify(first, SECRET)
        assert first.headers["x-gatehouse-event"] == "budget.threshold"
        assert first.headers["content-type"] == "application/json"
        day = today(harness)
        assert first.json() == {
            "id": f"u{member.id}d{day:%Y%m%d}.messages.80",
            "type": "budget.threshold",
            "created_at": first.json()["created_at"],
            "budget": {
                "key": f"u{member.id}d{day:%Y%m%d}",
                "scope": "user",
                "subject_id": member.id,
                "subject_name": member.email,
                "period": "day",
                "start": day.isoformat(),
                "resets_at": period_end("UTC", "d", day).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "timezone": "UTC",
            },
            "measure": "messages",
            "threshold": 80,
            "used": 4,
            "limit": 5,
            "percent": 80.0,
            "currency": None,
        }
        # Signed with another secret, or with the body changed, it does not verify.
        assert not verify(first, SECRET + "x")
        assert not verify(type(first)(first.path, first.headers, first.body + b" ", first.at), SECRET)

        chat = await harness.client.post("/v1/chat/completions", json=CHAT, headers=harness.as_key(member.key))
        assert chat.status_code == 200
        second = (await receiver.wait_for(2))[1]
        assert verify(second, SECRET)
        assert (second.json()["threshold"], second.json()["used"], second.json()["percent"]) == (100, 5, 100.0)

        # More checks find nothing new: no third webhook.
        watcher = watcher_of(harness)
        assert await watcher.check() == [] and await watcher.check() == []
        await asyncio.sleep(0.3)
        assert len(receiver.received) == 2

        listed = (await harness.client.get("/admin/alerts")).json()
        assert listed["settings"] == {"thresholds": [80, 100], "check_seconds": 0.1, "webhook": receiver.url}
        assert [item["threshold"] for item in listed["items"]] == [100, 80]
        for item, request in zip(listed["items"], reversed(receiver.received), strict=True):
            assert item["event_id"] == request.json()["id"]
            assert item["budget"]["subject_name"] == member.email
            (delivery,) = item["deliveries"]
            assert (delivery["status"], delivery["attempts"], delivery["last_status"]) == ("delivered", 1, 200)
            assert delivery["target"] == receiver.url and delivery["delivered_at"] is not None

        events = await feed_events(harness)
        assert [(e["data"]["threshold"], e["data"]["budget"]["subject_id"]) for e in events] == [
            (80, member.id),
            (100, member.id),
        ]
        assert events[0]["data"]["alert_id"] == listed["items"][1]["id"]
        after = alerts_counted("user", "messages", 80), alerts_counted("user", "messages", 100)
        assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
        metrics = (await harness.client.get("/metrics")).text
        assert 'gatehouse_budget_alerts_total{measure="messages",scope="user",threshold="80"}' in metrics

        await watcher.refresh_gauge()
        percent = REGISTRY.get_sample_value(
            "gatehouse_budget_max_used_percent", {"scope": "user", "measure": "messages"}
        )
        assert percent == 100.0

    # The log says what happened, and never the secret or the URL's path.
    log = (tmp_path / "gatehouse.log").read_text()
    assert '"budget_alert"' in log and '"alert_delivered"' in log
    assert SECRET not in log and "secret-path-token" not in log


async def test_spend_and_key_budgets_and_a_second_replica_alert_once(
    database_url: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    async with (
        alerting(database_url, tmp_path / "one", receiver) as one,
        alerting(database_url, tmp_path / "two", receiver) as two,
    ):
        assert watcher_of(one).replica != watcher_of(two).replica
        member = await create_member(one)
        group = (await one.client.post("/admin/groups", json={"name": "research"})).json()
        async with one.runtime.db.sessionmaker() as session, session.begin():
            await session.execute(update(Group).where(Group.id == group["id"]).values(spend_per_month_nanos=10 * 10**9))
            await session.execute(update(ApiKey).where(ApiKey.id == member.key_id).values(tokens_per_day=1000))
        await set_counter(one, f"g{group['id']}m", cost_nanos=8_500_000_000)  # 8.5 of 10 USD: 85%
        await set_counter(one, f"k{member.key_id}d", tokens=999)  # 99.9%: 80 only

        received = await receiver.wait_for(2)
        await asyncio.sleep(0.5)  # both replicas check every 0.1 s meanwhile
        for watcher in (watcher_of(one), watcher_of(two)):
            assert await watcher.check() == []
        assert len(receiver.received) == 2
        by_scope = {request.json()["budget"]["scope"]: request.json() for request in received}
        assert all(verify(request, SECRET) for request in received)
        spend = by_scope["group"]
        assert (spend["measure"], spend["threshold"], spend["used"], spend["limit"]) == ("spend", 80, 8.5, 10)
        assert (spend["percent"], spend["currency"], spend["budget"]["subject_name"]) == (85.0, "USD", "research")
        assert (spend["budget"]["period"], spend["budget"]["start"]) == ("month", this_month(one).isoformat())
        tokens = by_scope["key"]
        assert (tokens["measure"], tokens["threshold"], tokens["used"], tokens["percent"]) == ("tokens", 80, 999, 99.9)
        assert tokens["budget"]["subject_name"] == "test"  # the key's name

        await set_counter(one, f"k{member.key_id}d", tokens=1000)  # 100%: once more, from one replica or the other
        third = (await receiver.wait_for(3))[2]
        assert third.json()["threshold"] == 100
        await asyncio.sleep(0.5)
        assert len(receiver.received) == 3
        async with one.runtime.db.sessionmaker() as session:
            alerts = list((await session.execute(select(BudgetAlert))).scalars())
        assert len(alerts) == 3
        assert {alert.replica for alert in alerts} <= {watcher_of(one).replica, watcher_of(two).replica}
        # Each feed event comes from the replica that recorded the alert; a monitor sees every replica's events.
        assert len(await feed_events(one)) + len(await feed_events(two)) == 3


async def test_no_alert_below_the_threshold_nor_for_a_zero_limit(
    database_url: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    async with alerting(database_url, tmp_path, receiver, budget_alert_thresholds="50") as harness:
        member = await create_member(harness)
        async with harness.runtime.db.sessionmaker() as session, session.begin():
            await session.execute(
                update(ApiKey).where(ApiKey.id == member.key_id).values(tokens_per_day=1000, messages_per_day=0)
            )
        await set_counter(harness, f"k{member.key_id}d", tokens=499, messages=3)
        assert await watcher_of(harness).check() == []
        await set_counter(harness, f"k{member.key_id}d", tokens=500)
        assert len(await watcher_of(harness).check()) <= 1  # the background check may have been first
        request = (await receiver.wait_for(1))[0]
        assert (request.json()["measure"], request.json()["threshold"]) == ("tokens", 50)
        await asyncio.sleep(0.3)
        assert len(receiver.received) == 1


# --- delivery --------------------------------------------------------------------------------------------------


async def test_a_receiver_failing_twice_is_retried_with_backoff_and_the_delivery_recorded(
    database_url: str, tmp_path: Path
) -> None:
    with webhook_receiver(answers=[503, 500]) as receiver:
        async with alerting(database_url, tmp_path, receiver) as harness:
            member = await create_member(harness)
            async with harness.runtime.db.sessionmaker() as session, session.begin():
                await session.execute(update(ApiKey).where(ApiKey.id == member.key_id).values(messages_per_day=10))
            await set_counter(harness, f"k{member.key_id}d", messages=8)

            attempts = await receiver.wait_for(3)
            delivery = await delivery_settled(harness)
            assert (delivery.status, delivery.attempts, delivery.last_status) == ("delivered", 3, 200)
            assert delivery.last_error == "HTTP 500: receiver says no"  # the failure before the success
            assert delivery.delivered_at is not None and delivery.next_attempt_at is None
            # The same body every time, each attempt signed anew; waits of at least 0.2 s, then 0.4 s.
            assert len({request.body for request in attempts}) == 1
            assert all(verify(request, SECRET) for request in attempts)
            assert attempts[1].at - attempts[0].at >= 0.2
            assert attempts[2].at - attempts[1].at >= 0.4
            await asyncio.sleep(0.3)
            assert len(receiver.received) == 3
            listed = (await harness.client.get("/admin/alerts", params={"delivery": "delivered"})).json()
            assert listed["items"][0]["deliveries"][0]["attempts"] == 3
            assert (await harness.client.get("/admin/alerts", params={"delivery": "failed"})).json()["items"] == []


async def test_a_receiver_that_never_answers_ends_failed_after_the_bounded_attempts(
    database_url: str, tmp_path: Path
) -> None:
    with webhook_receiver(then="hang") as receiver:
        async with alerting(database_url, tmp_path, receiver) as harness:
            member = await create_member(harness)
            async with harness.runtime.db.sessionmaker() as session, session.begin():
                await session.execute(update(ApiKey).where(ApiKey.id == member.key_id).values(tokens_per_day=100))
            await set_counter(harness, f"k{member.key_id}d", tokens=100)  # 80 and 100 at once: two alerts

            await receiver.wait_for(6)
            settled = []
            for _ in range(300):
                settled = [d for d in await deliveries(harness) if d.status != "pending"]
                if len(settled) == 2:
                    break
                await asyncio.sleep(0.05)
            assert [(d.status, d.attempts, d.last_status) for d in settled] == [("failed", 3, None)] * 2
            assert all(d.last_error == "no answer within 0.5 s" and d.delivered_at is None for d in settled)
            await asyncio.sleep(0.5)
            assert len(receiver.received) == 6
            failed = (await harness.client.get("/admin/alerts", params={"delivery": "failed"})).json()["items"]
            assert sorted(item["threshold"] for item in failed) == [80, 100]


async def test_a_delivery_left_by_a_replica_that_went_away_is_taken_over(
    database_url: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    async with alerting(database_url, tmp_path, receiver, budget_alert_check_seconds=0) as harness:
        now = utcnow()
        async with harness.runtime.db.sessionmaker() as session, session.begin():
            alert = BudgetAlert(
                scope="g",
                subject_id=1,
                period="m",
                start=this_month(harness),
                measure="tokens",
                threshold=80,
                used=80,
                limit=100,
                subject_name="gone",
                replica="gone",
                created_at=now,
                payload='{"id": "left"}',
            )
            session.add(alert)
            await session.flush()
            session.add(
                AlertDelivery(
                    alert_id=alert.id,
                    target=receiver.url,
                    status="pending",
                    attempts=1,
                    created_at=now,
                    next_attempt_at=now,
                    claimed_by="gone",
                    lease_until=now - timedelta(seconds=1),
                )
            )
        watcher = watcher_of(harness)
        await watcher.check()
        await watcher.wait_for_deliveries()
        (request,) = receiver.received
        assert request.body == b'{"id": "left"}' and verify(request, SECRET)
        (delivery,) = await deliveries(harness)
        assert (delivery.status, delivery.attempts, delivery.claimed_by) == ("delivered", 2, watcher.replica)


async def test_a_delivery_given_up_when_taken_over_too_late(
    database_url: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    async with alerting(database_url, tmp_path, receiver, budget_alert_check_seconds=0) as harness:
        long_ago = utcnow() - timedelta(hours=2)  # past ALERT_WEBHOOK_MAX_SECONDS (an hour)
        async with harness.runtime.db.sessionmaker() as session, session.begin():
            alert = BudgetAlert(
                scope="u",
                subject_id=1,
                period="d",
                start=today(harness),
                measure="tokens",
                threshold=80,
                used=80,
                limit=100,
                subject_name="x",
                replica="gone",
                created_at=long_ago,
                payload="{}",
            )
            session.add(alert)
            await session.flush()
            session.add(
                AlertDelivery(
                    alert_id=alert.id,
                    target=receiver.url,
                    status="pending",
                    attempts=2,
                    created_at=long_ago,
                    next_attempt_at=long_ago,
                    claimed_by="gone",
                    lease_until=long_ago,
                    last_error="HTTP 502",
                )
            )
        watcher = watcher_of(harness)
        await watcher.check()
        await watcher.wait_for_deliveries()
        assert receiver.received == []
        (delivery,) = await deliveries(harness)
        assert (delivery.status, delivery.attempts, delivery.last_error) == ("failed", 2, "HTTP 502")


async def test_without_a_webhook_alerts_are_recorded_and_announced(database_url: str, tmp_path: Path) -> None:
    async with alerting(database_url, tmp_path, None) as harness:
        member = await create_member(harness)
        async with harness.runtime.db.sessionmaker() as session, session.begin():
            await session.execute(update(ApiKey).where(ApiKey.id == member.key_id).values(messages_per_day=10))
        await set_counter(harness, f"k{member.key_id}d", messages=9)
        for _ in range(100):
            if await feed_events(harness):
                break
            await asyncio.sleep(0.05)
        (event,) = await feed_events(harness)
        assert event["data"]["budget"]["scope"] == "key" and event["data"]["threshold"] == 80
        listed = (await harness.client.get("/admin/alerts")).json()
        assert listed["settings"]["webhook"] is None
        assert listed["items"][0]["deliveries"] == []


# --- the test webhook, the API and the CLI -------------------------------------------------------------------------


async def test_the_test_webhook_is_signed_audited_and_for_admins(
    database_url: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    async with alerting(database_url, tmp_path, receiver) as harness:
        sent = await harness.client.post("/admin/alerts/test")
        assert sent.status_code == 200, sent.text
        answer = sent.json()
        assert (answer["delivered"], answer["status_code"], answer["error"]) == (True, 200, None)
        assert answer["target"] == receiver.url
        (request,) = receiver.received
        assert verify(request, SECRET) and request.headers["x-gatehouse-event"] == "alert.test"
        assert request.json()["type"] == "alert.test" and request.json()["id"] == answer["event_id"]

        async with harness.runtime.db.sessionmaker() as session:
            (event,) = (
                await session.execute(select(AuditEvent).where(AuditEvent.action == "alert.webhook_tested"))
            ).scalars()
        assert (event.target_type, event.target_id, event.actor_id) == ("webhook", receiver.url, 1)
        assert orjson.loads(event.details)["delivered"] is True

        monitor = await create_member(harness, "monitor")
        assert (await harness.client.post("/admin/alerts/test", headers=harness.as_key(monitor.key))).status_code == 403
        assert (await harness.client.get("/admin/alerts", headers=harness.as_key(monitor.key))).status_code == 200


async def test_a_failed_test_webhook_says_why(database_url: str, tmp_path: Path) -> None:
    with webhook_receiver(then=401) as receiver:
        async with alerting(database_url, tmp_path, receiver) as harness:
            answer = (await harness.client.post("/admin/alerts/test")).json()
            assert (answer["delivered"], answer["status_code"]) == (False, 401)
            assert answer["error"] == "HTTP 401: receiver says no"


async def test_the_test_webhook_without_a_url_is_refused(harness: Harness) -> None:
    refused = await harness.client.post("/admin/alerts/test")
    assert refused.status_code == 409
    assert error_of(refused)["code"] == "alert_webhook_not_configured"
    assert "ALERT_WEBHOOK_URL" in error_of(refused)["message"]


async def test_the_alerts_page_pages(database_url: str, tmp_path: Path) -> None:
    async with alerting(database_url, tmp_path, None) as harness:
        member = await create_member(harness)
        async with harness.runtime.db.sessionmaker() as session, session.begin():
            await session.execute(
                update(ApiKey).where(ApiKey.id == member.key_id).values(messages_per_day=10, tokens_per_day=10)
            )
        await set_counter(harness, f"k{member.key_id}d", messages=10, tokens=10)  # 4 alerts
        await watcher_of(harness).check()
        first = (await harness.client.get("/admin/alerts", params={"limit": 3})).json()
        assert len(first["items"]) == 3 and first["next_cursor"] == first["items"][-1]["id"]
        rest = (await harness.client.get("/admin/alerts", params={"limit": 3, "before": first["next_cursor"]})).json()
        assert len(rest["items"]) == 1 and rest["next_cursor"] is None


def gatehouse(*args: str) -> Any:
    get_settings.cache_clear()
    return CliRunner().invoke(cli, list(args))


async def test_the_cli_lists_alerts_and_sends_a_test(
    monkeypatch: pytest.MonkeyPatch, database_url: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    async with alerting(database_url, tmp_path, receiver) as harness:
        member = await create_member(harness)
        async with harness.runtime.db.sessionmaker() as session, session.begin():
            await session.execute(update(ApiKey).where(ApiKey.id == member.key_id).values(messages_per_day=10))
            session.add(UsageCounter(user_id=member.id, day=today(harness), messages=0, tokens=0))
        await set_counter(harness, f"k{member.key_id}d", messages=8)
        await receiver.wait_for(1)
        await delivery_settled(harness)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("ALERT_WEBHOOK_URL", receiver.url + HOOK_PATH)
    monkeypatch.setenv("ALERT_WEBHOOK_SECRET", SECRET)
    listed = await asyncio.to_thread(gatehouse, "alerts", "list")
    assert listed.exit_code == 0, listed.output
    assert f"webhook: {receiver.url}" in listed.output and "secret-path" not in listed.output
    assert f"key {member.key_id} (test)" in listed.output
    assert "80%" in listed.output and "8 / 10 (80%)" in listed.output and "delivered after 1 attempt" in listed.output
    assert (
        "no budget alert yet" in (await asyncio.to_thread(gatehouse, "alerts", "list", "--delivery", "failed")).output
    )
    assert (await asyncio.to_thread(gatehouse, "alerts", "list", "--delivery", "lost")).exit_code == 2

    tested = await asyncio.to_thread(gatehouse, "alerts", "test")
    assert tested.exit_code == 0, tested.output
    assert f"delivered to {receiver.url}: HTTP 200" in tested.output
    assert verify(receiver.received[-1], SECRET) and receiver.received[-1].json()["type"] == "alert.test"

    monkeypatch.delenv("ALERT_WEBHOOK_URL")
    refused = await asyncio.to_thread(gatehouse, "alerts", "test")
    assert refused.exit_code == 1 and "ALERT_WEBHOOK_URL is not set" in refused.output


def runbook_snippet(language: str) -> str:
    """The RUNBOOK "Budget alerts" code block in `language`."""
    section = (Path(__file__).resolve().parents[3] / "RUNBOOK.md").read_text().split("## Budget alerts\n", 1)[1]
    return section.split("## ", 1)[0].split(f"```{language}\n", 1)[1].split("```", 1)[0]


async def test_the_runbook_verifies_a_webhook_as_documented(
    database_url: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    async with alerting(database_url, tmp_path, receiver) as harness:
        assert (await harness.client.post("/admin/alerts/test")).json()["delivered"] is True
    (request,) = receiver.received
    timestamp, signature = request.headers["x-gatehouse-timestamp"], request.headers["x-gatehouse-signature"]

    namespace: dict[str, Any] = {}
    exec(runbook_snippet("python"), namespace)  # the documented code, as a receiver would run it
    assert namespace["verified"](SECRET, request.body, timestamp, signature)
    assert not namespace["verified"](SECRET, request.body + b"\n", timestamp, signature)
    assert not namespace["verified"](SECRET, request.body, str(int(timestamp) - 600), signature)

    (tmp_path / "body.json").write_bytes(request.body)
    env = {"PATH": os.environ["PATH"], "TIMESTAMP": timestamp, "ALERT_WEBHOOK_SECRET": SECRET}
    shell = subprocess.run(
        ["sh", "-c", runbook_snippet("sh")], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    assert shell.stdout.strip() == signature
