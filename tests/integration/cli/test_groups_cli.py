"""`gatehouse groups ...` and `gatehouse keys set`: groups, members and a key's settings from the shell, audited as
the CLI, as RUNBOOK "Groups" shows them (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from gatehouse.audit.models import AuditEvent
from gatehouse.cli.common import db_session
from gatehouse.settings import get_settings
from tests.integration.cli.test_cli import assert_one_plain_line, environment, gatehouse

__all__ = ["environment"]


def _cli_actions() -> list[tuple[str, str | None]]:
    async def go() -> list[tuple[str, str | None]]:
        async with db_session(get_settings()) as session:
            rows = await session.execute(
                select(AuditEvent.action, AuditEvent.target_id)
                .where(AuditEvent.actor_label == "cli", AuditEvent.action.not_in(["user.created", "key.created"]))
                .order_by(AuditEvent.id)
            )
            return [(str(a), t) for a, t in rows.all()]

    get_settings.cache_clear()
    return asyncio.run(go())


def _key_id(email: str) -> str:
    listed = gatehouse("keys", "list", "--user", email)
    assert listed.exit_code == 0, listed.output
    return listed.stdout.split()[0]


def _settings(output: str) -> dict[str, str]:
    return dict(line.strip().split(": ", 1) for line in output.splitlines()[1:] if line.startswith("  "))


def test_groups_and_key_settings_from_the_shell(environment: pytest.MonkeyPatch, database_url: str) -> None:
    environment.setenv("DATABASE_URL", database_url)
    environment.setenv("REDIS_URL", "")
    assert gatehouse("db", "upgrade").exit_code == 0
    assert gatehouse("users", "create", "--email", "alice@example.com", "--with-key").exit_code == 0
    alice_key = _key_id("alice@example.com")

    created = gatehouse("groups", "create", "research", "--description", "The 70B people")
    assert created.exit_code == 0, created.output
    assert created.stdout.startswith("created group ") and created.stdout.strip().endswith(": research")
    group = created.stdout.split()[2].rstrip(":")
    assert_one_plain_line(gatehouse("groups", "create", "RESEARCH"), says="exists already")
    assert_one_plain_line(gatehouse("groups", "create", " "), says="Invalid name: a group name must not be empty")
    other = gatehouse("groups", "create", "elsewhere").stdout.split()[2].rstrip(":")

    added = gatehouse("groups", "add-member", group, "alice@example.com")
    assert added.exit_code == 0, added.output
    assert f"added alice@example.com to group {group}" in added.stdout and "AUTH_CACHE_SECONDS" in added.stdout
    again = gatehouse("groups", "add-member", group, "ALICE@example.com")
    assert again.exit_code == 0 and "already" in again.stdout
    carol_id = gatehouse("users", "create", "--email", "carol@example.com").stdout.split()[2]
    assert gatehouse("groups", "add-member", group, carol_id).exit_code == 0  # a user id works too
    assert_one_plain_line(gatehouse("groups", "add-member", group, "nobody@example.com"), says="nobody@example.com")
    assert_one_plain_line(gatehouse("groups", "add-member", "999999", "alice@example.com"), says="No group with id")

    listed = gatehouse("groups", "list")
    assert listed.exit_code == 0, listed.output
    (row,) = [line.split() for line in listed.stdout.splitlines() if "research" in line]
    assert row[:4] == [group, "research", "2", "0"]
    assert "elsewhere" not in gatehouse("groups", "list", "--q", "res").stdout
    shown = gatehouse("groups", "show", group)
    assert shown.exit_code == 0, shown.output
    assert "research (The 70B people)" in shown.stdout and "2 member(s)" in shown.stdout
    assert "alice@example.com" in shown.stdout and "0 key(s) bound" in shown.stdout
    assert_one_plain_line(gatehouse("groups", "show", "999999"), says="No group with id 999999")

    assert gatehouse("groups", "rename", group, "research lab").exit_code == 0
    described = gatehouse("groups", "describe", group, "The 70B and 405B people")
    assert described.exit_code == 0, described.output
    assert "research lab (The 70B and 405B people)" in gatehouse("groups", "show", group).stdout

    bound = gatehouse("keys", "set", alice_key, "--group", group)
    assert bound.exit_code == 0, bound.output
    assert _settings(bound.stdout)["group"] == group
    assert "1 key(s) bound" in gatehouse("groups", "show", group).stdout
    assert_one_plain_line(gatehouse("keys", "set", alice_key, "--group", other), says="not a member of group")
    restricted = gatehouse(
        "keys",
        "set",
        alice_key,
        "--models",
        "bge-*,nomic-embed-text",
        "--surfaces",
        "embeddings",
        "--networks",
        "10.1.0.0/16,2001:db8::/32",
        "--rate",
        "600",
    )
    assert restricted.exit_code == 0, restricted.output
    assert _settings(restricted.stdout) == {
        "group": group,
        "acts for users": "no",
        "models": "bge-*, nomic-embed-text",
        "surfaces": "embeddings",
        "networks": "10.1.0.0/16, 2001:db8::/32",
        "rate per minute": "600",
    }
    assert _settings(gatehouse("keys", "set", alice_key, "--acts-for-users").stdout)["acts for users"] == "yes"
    assert _settings(gatehouse("keys", "set", alice_key, "--no-acts-for-users").stdout)["acts for users"] == "no"

    bad_network = gatehouse("keys", "set", alice_key, "--networks", "10.0.0.5/8")
    assert bad_network.exit_code == 2 and "--networks" in bad_network.stderr
    assert "did you mean 10.0.0.0/8" in bad_network.stderr
    bad_surface = gatehouse("keys", "set", alice_key, "--surfaces", "chat,telnet")
    assert bad_surface.exit_code == 2 and "--surfaces" in bad_surface.stderr and "embeddings" in bad_surface.stderr
    both = gatehouse("keys", "set", alice_key, "--models", "x", "--clear-models")
    assert both.exit_code == 2 and "--models or --clear-models" in both.stderr
    nothing = gatehouse("keys", "set", alice_key)
    assert nothing.exit_code == 2 and "Nothing to change" in nothing.stderr
    assert_one_plain_line(gatehouse("keys", "set", "999999", "--rate", "5"), says="No API key with id 999999")

    in_use = gatehouse("groups", "delete", group)
    assert_one_plain_line(in_use, says="1 key(s) bound to it")
    assert "revoke them" in in_use.stderr
    leaving = gatehouse("groups", "remove-member", group, "alice@example.com")
    assert_one_plain_line(leaving, says="has 1 key(s) bound to group")
    cleared = gatehouse(
        "keys", "set", alice_key, "--no-group", "--clear-models", "--clear-surfaces", "--clear-networks", "--clear-rate"
    )
    assert cleared.exit_code == 0, cleared.output
    assert _settings(cleared.stdout) == {
        "group": "none",
        "acts for users": "no",
        "models": "any the owner may use",
        "surfaces": "all",
        "networks": "anywhere",
        "rate per minute": "no limit of its own",
    }
    removed = gatehouse("groups", "remove-member", group, "alice@example.com")
    assert removed.exit_code == 0 and f"removed alice@example.com from group {group}" in removed.stdout
    assert_one_plain_line(gatehouse("groups", "remove-member", group, "alice@example.com"), says="is not a member")
    deleted = gatehouse("groups", "delete", group)
    assert deleted.exit_code == 0, deleted.output
    assert f"deleted group {group} (research lab): 1 member(s) left it" in deleted.stdout
    assert "no groups" not in gatehouse("groups", "list").stdout  # `elsewhere` is left

    key_changes = [("key.settings_changed", alice_key)] * 5
    assert _cli_actions() == [
        ("group.created", group),
        ("group.created", other),
        ("group.member_added", group),
        ("group.member_added", group),
        ("group.renamed", group),
        ("group.updated", group),
        *key_changes,
        ("group.member_removed", group),
        ("group.deleted", group),
    ]
