"""`gatehouse config show`'s pieces: sources, redaction, and misspelt variables with the closest real name."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatehouse.configuration.effective import REDACTED, effective, suspects
from gatehouse.configuration.generate import SecretKind, generate
from gatehouse.settings import Settings


def test_sources_and_redaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_file = tmp_path / "job_token"
    secret_file.write_text("job-token-from-a-file-0123")
    env_file = tmp_path / ".env"
    env_file.write_text("METRICS_TOKEN=metrics-from-dotenv-0123\nOPENAI_APIKEY=sk-typo\n")
    monkeypatch.setenv("JOB_TOKEN_FILE", str(secret_file))
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:p%40ss-word@db:5432/gatehouse")
    monkeypatch.setenv("DATABSE_URL", "x")
    monkeypatch.setenv("OLLAMA_BASE_URL", "https://proxy:pr0xy-pass@ollama.internal")
    settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
    rows = {row.name: row for row in effective(settings, env_file=env_file)}
    assert (rows["JOB_TOKEN"].value, rows["JOB_TOKEN"].source, rows["JOB_TOKEN"].detail) == (
        REDACTED,
        "file",
        str(secret_file),
    )
    assert (rows["METRICS_TOKEN"].value, rows["METRICS_TOKEN"].source) == (REDACTED, ".env")
    assert rows["DATABASE_URL"].source == "environment"
    assert "p%40ss-word" not in rows["DATABASE_URL"].value and REDACTED in rows["DATABASE_URL"].value
    assert rows["OLLAMA_BASE_URL"].value == f"https://proxy:{REDACTED}@ollama.internal"
    assert rows["LOG_LEVEL"].source == "default"
    found = {(s.name, s.where): s.closest for s in suspects(env_file=env_file)}
    assert found[("OPENAI_APIKEY", ".env")] == "OPENAI_API_KEY"
    assert found[("DATABSE_URL", "environment")] == "DATABASE_URL"


def test_only_variables_close_to_a_setting_are_reported_from_the_environment() -> None:
    environ = {"PATH": "/bin", "HOME": "/root", "JOB_TOKEN_FIEL": "x", "LANG": "C", "VIRTUAL_ENV": "/v"}
    assert [(s.name, s.closest) for s in suspects(env_file=Path("/nonexistent"), environ=environ)] == [
        ("JOB_TOKEN_FIEL", "JOB_TOKEN_FILE")
    ]


def test_generated_secrets_are_long_enough_and_differ() -> None:
    assert len(generate(SecretKind.JWT)) >= 32 and generate(SecretKind.JWT) != generate(SecretKind.JWT)
    assert len(generate(SecretKind.TOKEN)) >= 16
    assert generate(SecretKind.API_KEY).startswith("gh_")
