"""`gatehouse config show --json` and `gatehouse secret generate` as an operator runs them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gatehouse.cli import app
from gatehouse.settings import get_settings


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_config_show_json_redacts_and_names_typos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    (tmp_path / ".env").write_text("JOB_TOKEN=job-token-in-dotenv-0123\nDATABSE_URL=sqlite:///x.db\n")
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2-redis@cache:6379/0")
    monkeypatch.setenv("METRICS_TOKEN", "metrics-token-from-env-0123")
    result = CliRunner().invoke(app, ["config", "show", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    settings = {row["name"]: row for row in shown["settings"]}
    assert settings["REDIS_URL"] == {
        "name": "REDIS_URL",
        "value": "redis://:********@cache:6379/0",
        "source": "environment",
        "detail": None,
    }
    assert settings["METRICS_TOKEN"]["value"] == "********"
    assert settings["JOB_TOKEN"]["source"] == ".env"
    assert "hunter2" not in result.stdout and "job-token-in-dotenv" not in result.stdout
    assert {"name": "DATABSE_URL", "where": ".env", "closest": "DATABASE_URL"} in shown["unknown"]


@pytest.mark.parametrize(("kind", "length"), [("jwt", 64), ("token", 43), ("backup-key", 64)])
def test_secret_generate_prints_one_strong_secret(kind: str, length: int) -> None:
    first = CliRunner().invoke(app, ["secret", "generate", "--kind", kind])
    second = CliRunner().invoke(app, ["secret", "generate", "--kind", kind])
    assert first.exit_code == 0 and len(first.stdout.strip()) == length
    assert first.stdout != second.stdout


def test_secret_generate_refuses_an_unknown_kind() -> None:
    result = CliRunner().invoke(app, ["secret", "generate", "--kind", "password"])
    assert result.exit_code == 2
