"""Alerts without a database: the settings, the signature, what may be shown of a URL, the backoff, and which
thresholds a budget's usage has crossed."""

from __future__ import annotations

import hashlib
import hmac
from datetime import date
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from gatehouse.alerts.service import Crossing, crossings, payload_of
from gatehouse.alerts.webhook import Webhook, sign, target_of
from gatehouse.db.base import utcnow
from gatehouse.settings import Settings, parse_thresholds


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_thresholds_are_whole_percentages_or_off() -> None:
    assert settings().alert_thresholds == (80, 100)
    assert settings(budget_alert_thresholds=" 100, 50%,80,50").budget_alert_thresholds == "50,80,100"
    assert settings(budget_alert_thresholds="off").alert_thresholds == ()
    assert parse_thresholds("none") == ()
    for bad in ("0", "101", "80,x", "80.5", "", "-5"):
        with pytest.raises(ValidationError, match="whole percentages from 1 to 100"):
            settings(budget_alert_thresholds=bad)


def test_the_webhook_url_must_be_http_and_its_message_does_not_echo_it() -> None:
    with pytest.raises(ValidationError, match="http:// or https:// URL") as refused:
        settings(alert_webhook_url="ftp://hooks.example.com/T0/secret-token")
    assert "secret-token" not in refused.value.errors()[0]["msg"]  # what `gatehouse` prints of a bad setting
    with pytest.raises(ValidationError, match="with a host"):
        settings(alert_webhook_url="https:///path")


def test_a_webhook_needs_its_secret_and_prod_a_strong_one() -> None:
    url = "https://hooks.example.com/x"
    assert any("ALERT_WEBHOOK_SECRET is not" in p for p in settings(alert_webhook_url=url).problems())
    assert settings(alert_webhook_url=url, alert_webhook_secret="short").problems() == []  # dev
    prod = {"environment": "prod", "jwt_secret": "j" * 40, "alert_webhook_url": url}
    assert any(
        "ALERT_WEBHOOK_SECRET is a default" in p for p in settings(**prod, alert_webhook_secret="secret").problems()
    )
    assert settings(**prod, alert_webhook_secret="s" * 32).problems() == []
    assert settings(environment="prod", jwt_secret="j" * 40).problems() == []  # no webhook: no secret needed


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"id":"x"}'
    expected = hmac.new(b"key", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(b"key", 1700000000, body) == f"sha256={expected}"


def test_only_scheme_and_host_of_a_url_are_shown() -> None:
    assert target_of("https://user:pw@hooks.example.com/services/T0/B0/XYZ?token=1") == "https://hooks.example.com"
    assert target_of("http://127.0.0.1:8080/x") == "http://127.0.0.1:8080"
    assert target_of("http://[::1]:9/x") == "http://[::1]:9"
    hook = Webhook.from_settings(settings(alert_webhook_url="https://h.example/secret-path", alert_webhook_secret="k"))
    assert hook is not None and "secret-path" not in repr(hook) and "k" not in repr(hook).replace("Webhook", "")


def test_waits_double_from_the_backoff_with_a_little_jitter() -> None:
    hook = Webhook(url="http://h", secret="k", timeout_seconds=1, max_attempts=5, backoff_seconds=2, max_seconds=60)
    for attempts, base in ((1, 2), (2, 4), (3, 8), (4, 16)):
        assert base <= hook.wait_after(attempts) <= base * 1.2
    assert Webhook.from_settings(settings()) is None


def usage(**values: Any) -> Any:
    row = {"scope": "g", "subject_id": 3, "name": "research", "period": "m", "start": date(2026, 12, 1)}
    row.update({f"{m}_limit": None for m in ("messages", "tokens", "spend")}, messages=0, tokens=0, spend=0)
    return SimpleNamespace(**{**row, **values})


def test_every_threshold_reached_of_every_measure_with_a_limit() -> None:
    found = list(
        crossings(
            [usage(messages=80, messages_limit=100, tokens=5000, tokens_limit=None, spend=99, spend_limit=100)],
            (80, 100),
        )
    )
    assert [(c.measure, c.threshold) for c in found] == [("messages", 80), ("spend", 80)]
    found = list(crossings([usage(tokens=1001, tokens_limit=1000)], (50, 80, 100)))
    assert [c.threshold for c in found] == [50, 80, 100]
    # Exactly at the boundary counts; a hair below does not; a limit of 0 never alerts.
    assert [c.threshold for c in crossings([usage(tokens=799, tokens_limit=1000)], (80,))] == []
    assert list(crossings([usage(messages=5, messages_limit=0)], (80, 100))) == []
    # Exact on big amounts (a billion of the currency, in billionths).
    big = 10**18
    assert [c.threshold for c in crossings([usage(spend=big * 8 // 10, spend_limit=big)], (80,))] == [80]
    assert list(crossings([usage(spend=big * 8 // 10 - 1, spend_limit=big)], (80,))) == []


def test_the_payload_says_spend_in_the_currency() -> None:
    crossing = Crossing(
        scope="g", subject_id=3, subject_name="research", period="m", start=date(2026, 12, 1),
        measure="spend", threshold=80, used=8_500_000_000, limit=10_000_000_000,
    )  # fmt: skip
    body = orjson.loads(payload_of(crossing, at=utcnow(), timezone="Europe/Berlin", currency="EUR"))
    assert body["id"] == "g3m20261201.spend.80"
    assert (body["used"], body["limit"], body["percent"], body["currency"]) == (8.5, 10, 85.0, "EUR")
    assert body["budget"]["resets_at"] == "2026-12-31T23:00:00.000Z"  # January 1st, midnight in Berlin
    assert (body["budget"]["scope"], body["budget"]["period"]) == ("group", "month")
