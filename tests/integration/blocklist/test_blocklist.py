"""The IP blocklist through the API: add, list, remove and expire; refused on gateway, admin, console and auth
routes in each surface's error shape, never on the health probes; IPv4, IPv6 and IPv4-mapped clients; CIDR errors;
the self-lockout refusal; audit events; the purge; another replica obeying after the signal (SQLite and
PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from gatehouse.audit.models import AuditEvent
from gatehouse.blocklist import matcher
from gatehouse.blocklist.models import BlockedNetwork
from gatehouse.core.bus import Signal
from tests.conftest import Harness, make_settings, running_app
from tests.support.accounts import create_member, error_of
from tests.support.server import ADMIN_KEY

CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
REASON = "credential stuffing from this range, ticket 4711"


@asynccontextmanager
async def client_from(harness: Harness, ip: str, key: str | None = ADMIN_KEY) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose requests come from `ip`, as uvicorn would report it in scope["client"]."""
    transport = httpx.ASGITransport(app=harness.app, client=(ip, 40000))
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(transport=transport, base_url="http://gatehouse.test", headers=headers) as client:
        yield client


async def block(harness: Harness, network: str, **body: Any) -> dict[str, Any]:
    response = await harness.client.post("/admin/blocklist", json={"network": network, "reason": REASON, **body})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def blocked_count(harness: Harness) -> float:
    text = (await harness.client.get("/metrics")).text
    found = re.search(r"^gatehouse_ip_blocked_requests_total (\S+)$", text, flags=re.M)
    return float(found.group(1)) if found else 0.0


def assert_ip_blocked(response: httpx.Response, style: str = "openai") -> None:
    assert response.status_code == 403, response.text
    body = response.json()
    if style == "ollama":
        message = body["error"]
    elif style == "anthropic":
        assert body["type"] == "error" and body["error"]["type"] == "permission_error", body
        assert body["error"]["code"] == "ip_blocked"
        message = body["error"]["message"]
    else:
        assert body["error"]["code"] == "ip_blocked", body
        message = body["error"]["message"]
    assert "administrator" in message
    assert REASON not in response.text  # the reason is for operators only
    assert response.headers["x-request-id"]


async def test_a_blocked_network_is_refused_everywhere_but_the_probes(harness: Harness) -> None:
    before = await blocked_count(harness)
    entry = await block(harness, "203.0.113.0/24")
    assert entry["network"] == "203.0.113.0/24" and entry["expires_at"] is None and not entry["expired"]
    assert entry["created_by_label"] == "admin@example.com" or entry["created_by"] is not None

    async with client_from(harness, "203.0.113.9") as blocked, client_from(harness, "198.51.100.4") as other:
        assert_ip_blocked(await blocked.get("/v1/models"))
        assert_ip_blocked(await blocked.post("/v1/chat/completions", json=CHAT))  # the gateway's fast path
        assert_ip_blocked(await blocked.post("/v1/messages", json=CHAT), "anthropic")
        assert_ip_blocked(await blocked.post("/api/chat", json={**CHAT, "stream": False}), "ollama")
        assert_ip_blocked(await blocked.get("/admin/users"))
        assert_ip_blocked(await blocked.get("/"))  # what Ollama clients probe
        assert_ip_blocked(await blocked.get("/console/login"))
        signin = await blocked.post("/auth/login", json={"email": "a@example.com", "password": "x" * 12})
        assert_ip_blocked(signin)
        # Load balancers keep probing the replica.
        assert (await blocked.get("/healthz")).status_code == 200
        assert (await blocked.get("/readyz")).status_code == 200
        # Elsewhere: business as usual.
        assert (await other.get("/v1/models")).status_code == 200
        assert (await other.post("/v1/chat/completions", json=CHAT)).status_code == 200

        assert await blocked_count(harness) == before + 8

        listed = (await harness.client.get("/admin/blocklist")).json()
        assert [e["network"] for e in listed] == ["203.0.113.0/24"] and listed[0]["reason"] == REASON

        removed = await harness.client.delete(f"/admin/blocklist/{entry['id']}")
        assert removed.status_code == 200 and removed.json()["network"] == "203.0.113.0/24"
        assert (await blocked.get("/v1/models")).status_code == 200  # this replica reloaded on its own signal
        assert (await harness.client.get("/admin/blocklist")).json() == []
        gone = await harness.client.delete(f"/admin/blocklist/{entry['id']}")
        assert gone.status_code == 404 and error_of(gone)["code"] == "block_not_found"

    async with harness.runtime.db.sessionmaker() as session:
        rows = (
            await session.execute(
                select(AuditEvent).where(AuditEvent.action.startswith("blocklist.")).order_by(AuditEvent.id)
            )
        ).scalars()
        events = [
            (r.action, r.target_id, json.loads(r.details)["network"], json.loads(r.details)["reason"], r.actor_id)
            for r in rows
        ]
    admin_id = entry["created_by"]
    assert events == [
        ("blocklist.added", str(entry["id"]), "203.0.113.0/24", REASON, admin_id),
        ("blocklist.removed", str(entry["id"]), "203.0.113.0/24", REASON, admin_id),
    ]
    verified = await harness.client.get("/admin/audit/verify")
    assert verified.status_code == 200 and verified.json()["ok"], verified.text

    # Both changes went on the live feed, with who made them and never to the blocked client.
    feed = await harness.client.get(
        "/admin/events", params={"follow": "false", "last_event_id": "0", "kinds": "blocklist.changed"}
    )
    assert feed.status_code == 200, feed.text
    shown = [json.loads(line[6:]) for line in feed.text.splitlines() if line.startswith("data: ")]
    assert [
        (e["data"]["change"], e["data"]["network"], e["data"]["blocked_network_id"], e["data"]["by"]) for e in shown
    ] == [
        ("added", "203.0.113.0/24", entry["id"], "admin@example.com"),
        ("removed", "203.0.113.0/24", entry["id"], "admin@example.com"),
    ]


async def test_ipv6_single_addresses_and_ipv4_mapped_clients(harness: Harness) -> None:
    wide = await block(harness, "2001:db8::/32")
    one = await block(harness, "2001:DB8:1::0001")  # inside the /32 too: a second entry, in its normal form
    single_v4 = await block(harness, " 192.0.2.77 ")
    assert (wide["network"], one["network"], single_v4["network"]) == (
        "2001:db8::/32",
        "2001:db8:1::1/128",
        "192.0.2.77/32",
    )

    cases = {
        "2001:db8:ffff::5": True,
        "2001:db8:1::1": True,
        "2001:db9::1": False,
        "192.0.2.77": True,
        "192.0.2.78": False,
        "::ffff:192.0.2.77": True,  # a dual-stack listener reports IPv4 clients this way
    }
    for ip, refused in cases.items():
        async with client_from(harness, ip) as client:
            status = (await client.get("/v1/models")).status_code
        assert status == (403 if refused else 200), (ip, status)

    assert (await harness.client.delete(f"/admin/blocklist/{wide['id']}")).status_code == 200
    async with client_from(harness, "2001:db8:ffff::5") as client:
        assert (await client.get("/v1/models")).status_code == 200
    async with client_from(harness, "2001:db8:1::1") as client:
        assert (await client.get("/v1/models")).status_code == 403  # its own entry stays


BAD_ENTRIES: list[tuple[dict[str, Any], int, str, str]] = [
    ({"network": "203.0.113.7/24"}, 400, "invalid_network", "did you mean 203.0.113.0/24"),
    ({"network": "2001:db8::1/32"}, 400, "invalid_network", "did you mean 2001:db8::/32"),
    ({"network": "not-an-address"}, 400, "invalid_network", "not an IPv4 or IPv6 address"),
    ({"network": "10.0.0.0/33"}, 400, "invalid_network", "not an IPv4 or IPv6 address"),
    ({"network": "10.0.0.0/8", "reason": "   "}, 400, "invalid_network", "`reason` is empty"),
    ({"network": "10.0.0.0/8", "reason": None}, 422, "validation_error", "reason"),
    ({"network": "10.0.0.0/8", "minutes": 0}, 400, "invalid_expiry", "between 1 and"),
    ({"network": "10.0.0.0/8", "expires_at": "2020-01-01T00:00:00Z"}, 400, "invalid_expiry", "in the past"),
    ({"network": "10.0.0.0/8", "expires_at": "2099-01-01T00:00:00"}, 400, "invalid_expiry", "no time zone"),
    (
        {"network": "10.0.0.0/8", "minutes": 5, "expires_at": "2099-01-01T00:00:00Z"},
        400,
        "invalid_expiry",
        "not both",
    ),
]


async def test_bad_entries_are_refused_naming_the_field(harness: Harness) -> None:
    for body, status, code, says in BAD_ENTRIES:
        response = await harness.client.post("/admin/blocklist", json={"reason": REASON, **body})
        assert response.status_code == status, (body, response.text)
        error = error_of(response)
        assert error["code"] == code and says in error["message"], (body, error)
    assert (await harness.client.get("/admin/blocklist")).json() == []


async def test_a_duplicate_and_the_callers_own_network_are_refused(harness: Harness) -> None:
    await block(harness, "198.51.100.0/24")
    again = await harness.client.post("/admin/blocklist", json={"network": "198.51.100.0/24", "reason": REASON})
    assert again.status_code == 409 and error_of(again)["code"] == "already_blocked"

    # The harness's client comes from 127.0.0.1.
    mine = await harness.client.post("/admin/blocklist", json={"network": "127.0.0.0/8", "reason": REASON})
    assert mine.status_code == 409, mine.text
    error = error_of(mine)
    assert error["code"] == "blocks_caller" and "127.0.0.1" in error["message"] and '"force": true' in error["message"]
    assert (await harness.client.get("/v1/models")).status_code == 200

    forced = await block(harness, "127.0.0.0/8", force=True)
    assert_ip_blocked(await harness.client.get("/admin/blocklist"))  # as asked: locked out
    async with client_from(harness, "192.0.2.1") as elsewhere:
        assert (await elsewhere.delete(f"/admin/blocklist/{forced['id']}")).status_code == 200
    assert (await harness.client.get("/admin/blocklist")).status_code == 200


async def test_monitors_read_and_admins_change(harness: Harness) -> None:
    monitor, user = await create_member(harness, "monitor"), await create_member(harness, "user")
    entry = await block(harness, "192.0.2.0/28")
    assert (await harness.client.get("/admin/blocklist", headers=harness.as_key(monitor.key))).status_code == 200
    for key in (monitor.key, user.key):
        headers = harness.as_key(key)
        added = await harness.client.post(
            "/admin/blocklist", json={"network": "1.2.3.4", "reason": "x"}, headers=headers
        )
        assert added.status_code == 403 and error_of(added)["code"] == "forbidden"
        removed = await harness.client.delete(f"/admin/blocklist/{entry['id']}", headers=headers)
        assert removed.status_code == 403
    assert (await harness.client.get("/admin/blocklist", headers=harness.as_key(user.key))).status_code == 403


class Clock:
    """The blocklist's clock (time.time()), moved forward by hand: expiry without waiting for it."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def time(self) -> float:
        return time.time() + self.ahead


async def test_an_entry_stops_blocking_at_its_expiry_and_the_purge_removes_it(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(matcher, "time", clock)
    short = await block(harness, "192.0.2.0/24", minutes=1)
    timed = await block(harness, "198.51.100.0/24", expires_at=(datetime.now(UTC) + timedelta(hours=2)).isoformat())
    assert datetime.fromisoformat(short["expires_at"]) > datetime.now(UTC) + timedelta(seconds=50)
    async with client_from(harness, "192.0.2.10") as client, client_from(harness, "198.51.100.10") as other:
        assert (await client.get("/v1/models")).status_code == 403
        clock.ahead = 61
        assert (await client.get("/v1/models")).status_code == 200  # no reload needed: the expiry is in memory
        assert (await other.get("/v1/models")).status_code == 403  # its entry runs for two hours

    # An entry whose time has come, as the list and the purge see it (they read the database's clock).
    async with harness.runtime.db.sessionmaker() as session, session.begin():
        row = await session.get(BlockedNetwork, short["id"])
        assert row is not None
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    listed = {e["network"]: e["expired"] for e in (await harness.client.get("/admin/blocklist")).json()}
    assert listed == {"192.0.2.0/24": True, "198.51.100.0/24": False}

    run = await harness.client.post("/admin/jobs/purge/run")
    assert run.status_code == 200, run.text
    assert run.json()["counts"]["expired_blocks"] == 1
    assert [e["id"] for e in (await harness.client.get("/admin/blocklist")).json()] == [timed["id"]]
    async with harness.runtime.db.sessionmaker() as session:
        assert (await session.get(BlockedNetwork, short["id"])) is None


@pytest.mark.redis
async def test_another_replica_obeys_within_a_second(
    database_url: str, tmp_path: Path, redis_url: str, redis_key_prefix: str
) -> None:
    settings = make_settings(database_url, tmp_path, redis_url=redis_url, redis_prefix=redis_key_prefix)
    async with (
        running_app(settings) as first,
        running_app(settings) as second,
        client_from(second, "203.0.113.50") as client,
    ):
        assert (await client.get("/v1/models")).status_code == 200
        entry = await block(first, "203.0.113.0/24")
        changed = time.monotonic()
        while (status := (await client.get("/v1/models")).status_code) != 403:
            assert time.monotonic() - changed < 1.0, f"still {status} a second after the block"
            await asyncio.sleep(0.02)
        assert (await first.client.delete(f"/admin/blocklist/{entry['id']}")).status_code == 200
        changed = time.monotonic()
        while (status := (await client.get("/v1/models")).status_code) != 200:
            assert time.monotonic() - changed < 1.0, f"still {status} a second after the removal"
            await asyncio.sleep(0.02)


@pytest.mark.redis
async def test_after_a_redis_outage_the_list_is_read_again(
    database_url: str, tmp_path: Path, redis_url: str, redis_key_prefix: str
) -> None:
    # With Redis up the replica relies on signals (its own re-read is every 30 s): an entry written while the
    # signal was lost takes effect when the bus announces it is back.
    settings = make_settings(database_url, tmp_path, redis_url=redis_url, redis_prefix=redis_key_prefix)
    async with running_app(settings) as harness, client_from(harness, "198.51.100.20") as client:
        async with harness.runtime.db.sessionmaker() as session, session.begin():
            session.add(BlockedNetwork(network="198.51.100.0/24", reason=REASON, created_by_label="test"))
        assert (await client.get("/v1/models")).status_code == 200  # no signal: not known yet
        await harness.runtime.bus.publish(Signal.RECONNECTED, {})
        assert (await client.get("/v1/models")).status_code == 403
