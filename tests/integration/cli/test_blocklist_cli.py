"""`gatehouse blocklist`: add, list and remove from the shell, as RUNBOOK "Blocking abusive addresses" shows them,
audited as the CLI; plain one-line errors; a running server without Redis obeys within its 1 s reload (SQLite and
PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from gatehouse.audit.models import AuditEvent
from gatehouse.cli.common import db_session
from gatehouse.settings import get_settings
from tests.conftest import Harness
from tests.integration.blocklist.test_blocklist import client_from
from tests.integration.cli.test_cli import assert_one_plain_line, environment, gatehouse

__all__ = ["environment"]


def _audit() -> list[tuple[str, str, str]]:
    async def go() -> list[tuple[str, str, str]]:
        async with db_session(get_settings()) as session:
            rows = await session.execute(
                select(AuditEvent.action, AuditEvent.actor_label, AuditEvent.details)
                .where(AuditEvent.action.startswith("blocklist."))
                .order_by(AuditEvent.id)
            )
            return [(str(a), str(b), json.loads(c)["network"]) for a, b, c in rows.all()]

    get_settings.cache_clear()
    return asyncio.run(go())


def test_block_list_and_lift_from_the_shell(environment: pytest.MonkeyPatch, database_url: str) -> None:
    environment.setenv("DATABASE_URL", database_url)
    environment.setenv("REDIS_URL", "")
    assert gatehouse("db", "upgrade").exit_code == 0

    empty = gatehouse("blocklist", "list")
    assert empty.exit_code == 0 and "the blocklist is empty" in empty.stdout
    hour = gatehouse("blocklist", "add", "203.0.113.0/24", "--reason", "credential stuffing", "--minutes", "60")
    assert hour.exit_code == 0, hour.output
    assert "203.0.113.0/24 blocked until 20" in hour.stdout
    until = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0).isoformat()
    one = gatehouse("blocklist", "add", "2001:DB8::7", "--reason", "scraper", "--until", until)
    assert one.exit_code == 0 and "2001:db8::7/128 blocked until" in one.stdout, one.output
    forever = gatehouse("blocklist", "add", "198.51.100.9", "--reason", "abuse report 12")
    assert forever.exit_code == 0 and "198.51.100.9/32 blocked until removed" in forever.stdout

    listed = gatehouse("blocklist", "list")
    assert listed.exit_code == 0
    lines = [line.split("\t") for line in listed.stdout.splitlines()]
    assert [(cols[1], cols[2], cols[4], cols[5]) for cols in lines] == [
        ("198.51.100.9/32", "active", "cli", "abuse report 12"),
        ("2001:db8::7/128", "active", "cli", "scraper"),
        ("203.0.113.0/24", "active", "cli", "credential stuffing"),
    ]
    assert lines[0][3] == "never" and lines[1][3].startswith(until[:16])

    assert_one_plain_line(
        gatehouse("blocklist", "add", "203.0.113.7/24", "--reason", "x"), says="did you mean 203.0.113.0/24"
    )
    assert_one_plain_line(gatehouse("blocklist", "add", "203.0.113.0/24", "--reason", "x"), says="already")
    assert_one_plain_line(
        gatehouse("blocklist", "add", "10.0.0.0/8", "--reason", "x", "--until", "soon"), says="ISO 8601"
    )
    past = gatehouse("blocklist", "add", "10.0.0.0/8", "--reason", "x", "--until", "2020-01-01T00:00:00Z")
    assert_one_plain_line(past, says="in the past")
    assert_one_plain_line(gatehouse("blocklist", "remove", "999"), says="No blocklist entry with id 999")

    removed = gatehouse("blocklist", "remove", lines[0][0])
    assert removed.exit_code == 0 and "198.51.100.9/32 is no longer blocked" in removed.stdout
    assert _audit() == [
        ("blocklist.added", "cli", "203.0.113.0/24"),
        ("blocklist.added", "cli", "2001:db8::7/128"),
        ("blocklist.added", "cli", "198.51.100.9/32"),
        ("blocklist.removed", "cli", "198.51.100.9/32"),
    ]


async def test_a_block_from_the_shell_reaches_a_running_server(
    environment: pytest.MonkeyPatch, harness: Harness
) -> None:
    # No Redis: the server hears no signal from the shell's process, and re-reads the list every second.
    environment.setenv("DATABASE_URL", harness.settings.database_url)
    environment.setenv("REDIS_URL", "")
    async with client_from(harness, "192.0.2.44") as client:
        assert (await client.get("/v1/models")).status_code == 200
        added = await asyncio.to_thread(gatehouse, "blocklist", "add", "192.0.2.0/24", "--reason", "test")
        assert added.exit_code == 0, added.output
        changed = time.monotonic()
        while (status := (await client.get("/v1/models")).status_code) != 403:
            assert time.monotonic() - changed < 3.0, f"still {status} 3 s after the block"
            await asyncio.sleep(0.05)
