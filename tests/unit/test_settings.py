"""Settings: database URL spellings, DB_* parts, NAME_FILE secrets, and prod's refusal of weak secrets."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from gatehouse.app import create_app
from gatehouse.cli.common import load_settings
from gatehouse.settings import DEFAULT_SQLITE_URL, Settings, get_settings

STRONG_SECRET = "k3J9-q2Lx8vR7mN4pT6wY1zA5bC0dE8fG2hJ4kL6"
STRONG_PASSWORD = "correct-horse-battery-staple"
STRONG_KEY = "gh_" + "Q7w2E9r4T6y1U3i8O5p0A2s4"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting (or NAME_FILE) from the developer's shell or .env reaches these tests."""
    names = {name.upper() for name in Settings.model_fields}
    for variable in list(os.environ):
        upper = variable.upper()
        if upper in names or (upper.endswith("_FILE") and upper.removesuffix("_FILE") in names):
            monkeypatch.delenv(variable)
    monkeypatch.chdir(tmp_path)  # no stray .env in the working directory either


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def prod(**values: Any) -> Settings:
    base: dict[str, Any] = {"environment": "prod", "jwt_secret": STRONG_SECRET}
    base.update(values)
    return settings(**base)


# --- database URL ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db:5432/gh", "postgresql+asyncpg://u:p@db:5432/gh"),
        ("postgresql://u:p@db/gh", "postgresql+asyncpg://u:p@db/gh"),
        ("postgresql+psycopg2://u@db/gh", "postgresql+asyncpg://u@db/gh"),
        ("postgresql+asyncpg://u@db/gh", "postgresql+asyncpg://u@db/gh"),
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("sqlite:////var/lib/gatehouse/x.db", "sqlite+aiosqlite:////var/lib/gatehouse/x.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("  postgres://u@db/gh \n", "postgresql+asyncpg://u@db/gh"),
    ],
)
def test_database_url_spellings(given: str, expected: str) -> None:
    assert settings(database_url=given).database_url == expected


def test_database_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@db/gh")
    assert settings().database_url == "postgresql+asyncpg://u:p@db/gh"
    assert not settings().is_sqlite


def test_default_is_sqlite() -> None:
    assert settings().database_url == DEFAULT_SQLITE_URL
    assert settings().is_sqlite


def test_database_url_from_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    password = "p@ss:w/rd%#?"
    monkeypatch.setenv("DB_HOST", "db.internal")
    monkeypatch.setenv("DB_PORT", "6543")
    monkeypatch.setenv("DB_USER", "gate keeper")
    monkeypatch.setenv("DB_PASSWORD", password)
    monkeypatch.setenv("DB_NAME", "gatehouse")
    built = settings().database_url
    assert built.startswith("postgresql+asyncpg://")
    assert password not in built  # quoted, so no character can break the URL apart
    url = make_url(built)
    assert (url.host, url.port, url.username, url.password, url.database) == (
        "db.internal",
        6543,
        "gate keeper",
        password,
        "gatehouse",
    )


def test_database_url_from_parts_without_password() -> None:
    url = make_url(settings(db_host="db").database_url)
    assert (url.host, url.port, url.username, url.password, url.database) == ("db", 5432, "postgres", None, "gatehouse")


def test_database_url_from_parts_with_ipv6_host() -> None:
    assert make_url(settings(db_host="::1").database_url).host == "::1"
    assert make_url(settings(db_host="[fd00::5]").database_url).host == "fd00::5"


def test_database_url_wins_over_parts() -> None:
    assert settings(database_url="sqlite:///x.db", db_host="db").database_url == "sqlite+aiosqlite:///x.db"


@pytest.mark.parametrize("given", ["mysql://u@db/gh", "db.example.com:5432", "http://db/gh"])
def test_unknown_database_scheme_is_refused(given: str) -> None:
    with pytest.raises(ValidationError, match="DATABASE_URL") as raised:
        settings(database_url=given)
    assert raised.value.errors()[0]["loc"] == ("database_url",)  # the CLI prints "Invalid setting DATABASE_URL"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db/gh?sslmode=require", "postgresql+asyncpg://u:p@db/gh?ssl=require"),
        ("postgresql://u@db/gh?sslmode=verify-full", "postgresql+asyncpg://u@db/gh?ssl=verify-full"),
        ("postgresql+asyncpg://u@db/gh?sslmode=disable", "postgresql+asyncpg://u@db/gh?ssl=disable"),
        (
            "postgres://u@db/gh?application_name=x&sslmode=prefer&connect_timeout=5",
            "postgresql+asyncpg://u@db/gh?application_name=x&ssl=prefer&connect_timeout=5",
        ),
        ("postgresql+asyncpg://u@db/gh?ssl=require", "postgresql+asyncpg://u@db/gh?ssl=require"),
    ],
)
def test_libpq_sslmode_becomes_asyncpg_ssl(given: str, expected: str) -> None:
    # asyncpg.connect() has no sslmode argument (a TypeError at the first connection); its ssl= takes the same modes.
    url = settings(database_url=given).database_url
    assert url == expected
    assert "sslmode" not in make_url(url).query


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("postgres://u@db/gh?sslmode=sometimes", "sslmode='sometimes' is not one of"),
        ("postgres://u@db/gh?sslmode=require&ssl=require", "both sslmode= and ssl="),
    ],
)
def test_bad_sslmode_names_database_url(given: str, says: str) -> None:
    with pytest.raises(ValidationError, match=says) as raised:
        settings(database_url=given)
    assert raised.value.errors()[0]["loc"] == ("database_url",)


# --- NAME_FILE secrets -----------------------------------------------------------------------------


def test_secret_read_from_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret_file = tmp_path / "jwt_secret"
    secret_file.write_text(STRONG_SECRET + "\n")  # the trailing newline editors and `echo` add
    monkeypatch.setenv("JWT_SECRET_FILE", str(secret_file))
    assert settings().jwt_secret.get_secret_value() == STRONG_SECRET
    assert prod(jwt_secret=settings().jwt_secret).problems() == []


def test_environment_value_wins_over_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text("from-the-file-password")
    monkeypatch.setenv("BOOTSTRAP_ADMIN_PASSWORD_FILE", str(secret_file))
    assert settings().bootstrap_admin_password.get_secret_value() == "from-the-file-password"
    monkeypatch.setenv("BOOTSTRAP_ADMIN_PASSWORD", "from-the-environment")
    assert settings().bootstrap_admin_password.get_secret_value() == "from-the-environment"


def test_unreadable_secret_file_names_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "jwt_secret"
    monkeypatch.setenv("JWT_SECRET_FILE", str(missing))
    with pytest.raises(ValidationError, match="JWT_SECRET_FILE") as raised:
        settings()
    assert str(missing) in str(raised.value)
    assert raised.value.errors()[0]["loc"] == ("jwt_secret",)


def test_cli_reports_an_unreadable_secret_file_plainly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JWT_SECRET_FILE", str(tmp_path / "nope"))
    get_settings.cache_clear()
    try:
        with pytest.raises(typer.Exit) as raised:
            load_settings()
    finally:
        get_settings.cache_clear()
    assert raised.value.exit_code == 2
    printed = " ".join(capsys.readouterr().err.split())
    assert "Invalid setting JWT_SECRET" in printed
    assert "JWT_SECRET_FILE points at" in printed


# --- other validation ------------------------------------------------------------------------------


def test_other_values_are_validated() -> None:
    assert settings(log_level="debug").log_level == "DEBUG"
    with pytest.raises(ValidationError, match="LOG_LEVEL"):
        settings(log_level="loud")
    with pytest.raises(ValidationError, match="environment"):
        settings(environment="staging")
    assert settings(ollama_base_url=" http://ollama:11434/ ").ollama_base_url == "http://ollama:11434"


# --- prod refuses weak secrets ---------------------------------------------------------------------


def test_dev_accepts_missing_secrets() -> None:
    assert settings().problems() == []
    assert settings(jwt_secret="change-me", bootstrap_admin_password="admin").problems() == []


def test_strong_prod_config_has_no_problems() -> None:
    strong = prod(bootstrap_admin_password=STRONG_PASSWORD, bootstrap_admin_api_key=STRONG_KEY)
    assert strong.is_prod
    assert strong.problems() == []
    assert prod().problems() == []  # empty bootstrap password and key: generated and shown once


@pytest.mark.parametrize(
    ("secret", "says"),
    [
        ("", "not set"),
        ("change-me", "placeholder"),
        ("CHANGE-ME", "placeholder"),
        ("short-but-random", "16 characters"),
    ],
)
def test_weak_jwt_secret_is_refused_in_prod(secret: str, says: str) -> None:
    problems = prod(jwt_secret=secret).problems()
    assert len(problems) == 1, problems
    assert problems[0].startswith("JWT_SECRET ")
    assert says in problems[0]


@pytest.mark.parametrize("password", ["admin", "change-me", "Password", "short1"])
def test_default_bootstrap_password_is_refused_in_prod(password: str) -> None:
    problems = prod(bootstrap_admin_password=password).problems()
    assert len(problems) == 1, problems
    assert "BOOTSTRAP_ADMIN_PASSWORD" in problems[0]


@pytest.mark.parametrize("key", ["admin", "gh_short"])
def test_weak_bootstrap_key_is_refused_in_prod(key: str) -> None:
    problems = prod(bootstrap_admin_api_key=key).problems()
    assert len(problems) == 1, problems
    assert "BOOTSTRAP_ADMIN_API_KEY" in problems[0]


def test_every_problem_is_reported_at_once() -> None:
    problems = prod(jwt_secret="", bootstrap_admin_password="admin", bootstrap_admin_api_key="admin").problems()
    assert [p.split()[0] for p in problems] == ["JWT_SECRET", "BOOTSTRAP_ADMIN_PASSWORD", "BOOTSTRAP_ADMIN_API_KEY"]


def test_create_app_refuses_unsafe_prod_settings(tmp_path: Path) -> None:
    unsafe = prod(jwt_secret="change-me", database_url=f"sqlite:///{tmp_path}/g.db", data_dir=tmp_path)
    with pytest.raises(SystemExit) as raised:
        create_app(unsafe)
    assert "JWT_SECRET" in str(raised.value)
    assert "placeholder" in str(raised.value)


def test_prod_never_generates_a_jwt_secret(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="JWT_SECRET"):
        settings(environment="prod", data_dir=tmp_path).effective_jwt_secret()
    assert not (tmp_path / "jwt_secret").exists()


def test_dev_generates_and_keeps_a_jwt_secret(tmp_path: Path) -> None:
    dev = settings(data_dir=tmp_path / "data")
    first = dev.effective_jwt_secret()
    assert len(first) >= 32
    assert dev.effective_jwt_secret() == first
    assert (tmp_path / "data" / "jwt_secret").stat().st_mode & 0o777 == 0o600


def test_workers_starting_together_share_one_generated_secret(tmp_path: Path) -> None:
    dev = settings(data_dir=tmp_path / "data")
    start = threading.Barrier(8)

    def generate() -> str:
        start.wait()
        return dev.effective_jwt_secret()

    with ThreadPoolExecutor(8) as pool:
        secrets = list(pool.map(lambda _: generate(), range(8)))
    assert len(set(secrets)) == 1
    assert secrets[0] == (tmp_path / "data" / "jwt_secret").read_text()
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["jwt_secret"]  # no staging file left behind


def test_empty_kept_secret_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "jwt_secret").write_text("\n")
    with pytest.raises(RuntimeError, match="jwt_secret is empty"):
        settings(data_dir=tmp_path).effective_jwt_secret()


def test_serve_refuses_prod_without_jwt_secret(tmp_path: Path) -> None:
    """`gatehouse serve` (the console script `uv run gatehouse` runs) exits non-zero naming JWT_SECRET."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("JWT_SECRET", "GATEHOUSE_"))}
    env.update(ENVIRONMENT="prod", DATABASE_URL=f"sqlite:///{tmp_path}/g.db", DATA_DIR=str(tmp_path), COLUMNS="200")
    gatehouse = Path(sys.executable).with_name("gatehouse")
    result = subprocess.run(
        [str(gatehouse), "serve", "--port", "1"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "JWT_SECRET" in output
    assert "Traceback" not in output
    assert not (tmp_path / "g.db").exists()  # refused before touching the database
