"""The CLI: failures are one plain line and exit 1, and passwords need not go through the shell's history."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from typer.testing import CliRunner, Result

from gatehouse.accounts.sessions import service as sessions
from gatehouse.auth import passwords
from gatehouse.cli import app
from gatehouse.cli.common import db_session
from gatehouse.settings import get_settings

PASSWORD = "a-good-long-password"


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """Settings come from this test's environment only (no .env, a fresh read of the settings)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def gatehouse(*args: str, input: str | None = None) -> Result:
    get_settings.cache_clear()
    return CliRunner().invoke(app, list(args), input=input)


def assert_one_plain_line(result: Result, *, says: str, never: str = "") -> None:
    assert result.exit_code == 1, result.output
    text = result.stderr
    assert "Traceback" not in text + result.stdout
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith("Error:") and says in lines[0], text
    if never:
        assert never not in text


def test_db_commands_report_an_unreachable_database_plainly(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("DATABASE_URL", "postgresql://gatehouse:s3cret-pw@127.0.0.1:1/nowhere")
    for command in (["db", "current"], ["db", "upgrade"], ["db", "downgrade", "base"], ["db", "stamp", "head"]):
        result = gatehouse(*command)
        assert_one_plain_line(result, says="Connect", never="s3cret-pw")
    created = gatehouse("users", "create", "--email", "a@example.com")
    assert_one_plain_line(created, says="Connect", never="s3cret-pw")


def test_db_upgrade_to_an_unknown_revision_says_so(environment: pytest.MonkeyPatch, database_url: str) -> None:
    environment.setenv("DATABASE_URL", database_url)
    assert_one_plain_line(gatehouse("db", "upgrade", "no-such-revision"), says="no-such-revision")


def _password_matches(email: str, password: str) -> bool:
    async def check() -> bool:
        async with db_session(get_settings()) as session:
            return await sessions.authenticate_password(session, email=email, password=password) is not None

    get_settings.cache_clear()
    return asyncio.run(check())


def test_users_create_takes_the_password_from_a_prompt_or_a_file(
    environment: pytest.MonkeyPatch, database_url: str, tmp_path: Path
) -> None:
    environment.setenv("DATABASE_URL", database_url)
    assert gatehouse("db", "upgrade").exit_code == 0

    prompted = gatehouse("users", "create", "--email", "p@example.com", "--password-prompt", input=f"{PASSWORD}\n" * 2)
    assert prompted.exit_code == 0, prompted.output
    assert PASSWORD not in prompted.stdout  # typed hidden
    assert _password_matches("p@example.com", PASSWORD)

    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    from_file = gatehouse("users", "create", "--email", "f@example.com", "--password-file", str(secret))
    assert from_file.exit_code == 0, from_file.output
    assert _password_matches("f@example.com", PASSWORD)

    given = gatehouse("users", "create", "--email", "g@example.com", "--password", PASSWORD)
    assert given.exit_code == 0, given.output
    assert _password_matches("g@example.com", PASSWORD)

    both = gatehouse(
        "users", "create", "--email", "b@example.com", "--password", PASSWORD, "--password-file", str(secret)
    )
    assert both.exit_code == 2
    assert "only one of" in both.stderr
    missing = gatehouse("users", "create", "--email", "m@example.com", "--password-file", str(tmp_path / "absent"))
    assert missing.exit_code == 2
    assert "cannot be read" in missing.stderr
    weak = secret.with_name("weak")
    weak.write_text("short\n")
    refused = gatehouse("users", "create", "--email", "w@example.com", "--password-file", str(weak))
    assert_one_plain_line(refused, says="at least 8 characters")
    taken = gatehouse("users", "create", "--email", "p@example.com")
    assert_one_plain_line(taken, says="already exists")
