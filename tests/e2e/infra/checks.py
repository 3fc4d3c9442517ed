"""What every infrastructure fault must leave true afterwards: each request answered 2xx is counted once (usage
counters, request log and the fake upstream's ledger agree), nothing stays reserved, the audit chain verifies."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from tests.e2e.infra.traffic import Answer, summary, wait_until
from tests.support.fake_upstream import FakeUpstream

QUOTA = 10_000_000


@dataclass
class Account:
    user_id: int
    key: str


def new_account(admin: httpx.Client, name: str) -> Account:
    """A user with a (large) daily token quota, so that every request is reserved and settled, and a key."""
    user = admin.post("/admin/users", json={"email": f"{name}-{time.time_ns()}@example.com"})
    assert user.status_code == 201, user.text
    user_id = user.json()["id"]
    assert admin.patch(f"/admin/users/{user_id}", json={"tokens_per_day": QUOTA}).status_code == 200
    key = admin.post(f"/admin/users/{user_id}/keys", json={"name": name})
    assert key.status_code == 201, key.text
    return Account(user_id, key.json()["key"])


def usage_of(admin: httpx.Client, user_id: int) -> dict[str, Any]:
    """Today's usage row of a user (zeros when none)."""
    rows = admin.get("/admin/usage", params={"user_id": user_id})
    assert rows.status_code == 200, rows.text
    found = rows.json()
    return found[0] if found else {"messages": 0, "tokens": 0, "reserved_tokens": 0}


def logged_of(admin: httpx.Client, user_id: int) -> dict[str, Any]:
    """The request log's totals for a user (GET /admin/usage/report)."""
    report = admin.get("/admin/usage/report", params={"group_by": "user", "user_id": user_id})
    assert report.status_code == 200, report.text
    rows = report.json()["rows"]
    return rows[0] if rows else {"requests": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0}


def check_nothing_lost(
    admin: httpx.Client,
    account: Account,
    answers: list[Answer],
    upstream: FakeUpstream,
    ledger_before: dict[str, int] | None = None,
) -> None:
    """Usage, request log and the upstream's ledger (since `ledger_before`) all equal what the 2xx answers report;
    nothing held."""
    answered = [a for a in answers if a.ok]
    assert all(a.complete and a.tokens for a in answered), [a for a in answered if not a.complete][:5]
    tokens = sum(a.tokens or 0 for a in answered)
    # Settlements that failed while the database was away are retried in the background: wait for them.
    wait_until(lambda: usage_of(admin, account.user_id)["reserved_tokens"] == 0, "every reservation settled", 30)

    def flushed() -> bool:
        logged = logged_of(admin, account.user_id)
        return bool(logged["requests"] - logged["errors"] >= len(answered))

    wait_until(flushed, "the request log flushed", 30)
    usage = usage_of(admin, account.user_id)
    logged = logged_of(admin, account.user_id)
    ledger = upstream.ledger().get("fake-chat", {})
    if ledger_before:
        ledger = {name: value - ledger_before.get(name, 0) for name, value in ledger.items()}
    figures = {
        "answered_2xx": len(answered),
        "tokens_2xx": tokens,
        "usage": {k: usage[k] for k in ("messages", "tokens", "reserved_tokens")},
        "request_log": {k: logged[k] for k in ("requests", "errors", "prompt_tokens", "completion_tokens")},
        "ledger": ledger,
        "answers": summary(answers),
    }
    print("figures:", figures)
    assert usage["reserved_tokens"] == 0, figures
    assert usage["messages"] == len(answered), figures
    assert usage["tokens"] == tokens, figures
    assert logged["requests"] - logged["errors"] == len(answered), figures
    assert logged["prompt_tokens"] + logged["completion_tokens"] == tokens, figures
    assert ledger.get("finished") == len(answered), figures
    assert ledger["finished_prompt_tokens"] + ledger["finished_completion_tokens"] == tokens, figures
    assert ledger["cut_short"] == 0, figures


def check_audit_chain(admin: httpx.Client) -> None:
    verified = admin.get("/admin/audit/verify")
    assert verified.status_code == 200, verified.text
    assert verified.json()["ok"] is True, verified.json()
