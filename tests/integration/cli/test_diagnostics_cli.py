"""`gatehouse logs --user EMAIL` (looked up in the database) and `gatehouse support-bundle` without a server: every
part there is to collect from this machine, and no planted secret anywhere in the ZIP (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import io
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest
import yaml
from sqlalchemy.engine import make_url

from gatehouse.auth.models import User
from gatehouse.cli.common import db_session
from gatehouse.configuration.effective import REDACTED as SHOWN_SECRET
from gatehouse.core.logfile import WeeklyFileHandler
from gatehouse.settings import get_settings
from gatehouse.upstreams.models import UpstreamRow
from tests.integration.cli.test_cli import environment, gatehouse

__all__ = ["environment"]

NOW = datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _user(email: str) -> int:
    async def go() -> int:
        async with db_session(get_settings()) as session:
            user = User(email=email)
            session.add(user)
            await session.flush()
            return user.id

    get_settings.cache_clear()
    return asyncio.run(go())


def _write(path: Path, *lines: dict[str, object] | str) -> None:
    handler = WeeklyFileHandler(path)
    for entry in lines:
        handler.emit_line(entry if isinstance(entry, str) else orjson.dumps({"timestamp": NOW, **entry}).decode())
    handler.close()


def test_logs_of_a_user_named_by_email(environment: pytest.MonkeyPatch, database_url: str, tmp_path: Path) -> None:
    environment.setenv("DATABASE_URL", database_url)
    assert gatehouse("db", "upgrade").exit_code == 0
    alice, bob = _user("alice@example.com"), _user("bob@example.com")
    log = tmp_path / "gatehouse.log"
    _write(
        log,
        {"event": "request", "level": "info", "user_id": alice, "request_id": "a1"},
        {"event": "request", "level": "info", "user_id": bob, "request_id": "b1"},
        {"event": "request", "level": "info", "user_id": alice, "key_owner_id": bob, "request_id": "a2"},
    )
    result = gatehouse("logs", "--file", str(log), "--user", "Alice@Example.com")
    assert result.exit_code == 0, result.output
    assert [orjson.loads(text)["request_id"] for text in result.stdout.splitlines()] == ["a1", "a2"]
    # Bob's key acting for Alice: his lines too (as the key's owner).
    by_id = gatehouse("logs", "--file", str(log), "--user", str(bob))
    assert [orjson.loads(text)["request_id"] for text in by_id.stdout.splitlines()] == ["b1", "a2"]

    unknown = gatehouse("logs", "--file", str(log), "--user", "carol@example.com")
    assert unknown.exit_code == 1 and "No user with email carol@example.com" in unknown.stderr
    assert "Traceback" not in unknown.output


# Values planted in settings, files, the config file and log lines: none may appear in the bundle.
JWT = "planted-jwt-secret-" + "j" * 30
SECRETS = {
    "JWT_SECRET": JWT,
    "JWT_SECRET_PREVIOUS": "planted-previous-jwt-" + "p" * 30,
    "METRICS_TOKEN": "planted-metrics-token-0001",
    "JOB_TOKEN": "planted-job-token-0002",
    "BOOTSTRAP_ADMIN_PASSWORD": "planted-admin-password-0003",
    "BOOTSTRAP_ADMIN_API_KEY": "gh_plantedBootstrapKey0004",
    "OPENAI_API_KEY": "sk-plantedOpenAIKey0005abcdef",
    "ALERT_WEBHOOK_SECRET": "planted-webhook-secret-0006",
}
WEBHOOK_TOKEN = "plantedWebhookPathToken0007"
BACKUP_KEY = "planted-backup-key-from-a-file-0008"
CONFIG_KEY = "planted-config-upstream-key-0009"
HEADER_VALUE = "planted-header-value-0010"
URL_PASSWORD = "planted:url/password-0011"  # quoted in the URL
LOGGED_KEY = "gh_unconfiguredButLogged0012"
BEARER = "plantedBearerToken0013xyz"
PROVIDER_KEY = "sk-proj-plantedProviderKey0014"
STORED_KEY = "planted-api-provisioned-key-0017"  # an upstream created through the API keeps its key in the database
STORED_HEADER = "planted-api-provisioned-header-0018"


def _provisioned_upstream() -> None:
    async def go() -> None:
        async with db_session(get_settings()) as session:
            session.add(
                UpstreamRow(
                    name="provisioned",
                    kind="openai",
                    base_url="http://127.0.0.1:9",
                    api_key=STORED_KEY,
                    headers={"X-Team": STORED_HEADER},
                    discover=False,
                    models=["provisioned-chat"],
                )
            )

    get_settings.cache_clear()
    asyncio.run(go())


def _members(bundle: Path) -> dict[str, str]:
    with zipfile.ZipFile(bundle) as archive:
        return {name: archive.read(name).decode() for name in archive.namelist()}


def test_support_bundle_without_a_server_holds_no_secret(
    environment: pytest.MonkeyPatch, database_url: str, tmp_path: Path
) -> None:
    planted = [*SECRETS.values(), WEBHOOK_TOKEN, BACKUP_KEY, CONFIG_KEY, HEADER_VALUE, URL_PASSWORD, LOGGED_KEY]
    planted += [BEARER, PROVIDER_KEY, STORED_KEY, STORED_HEADER]
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        db_password = url.password or "planted-db-password-0015"  # the test server trusts local connections
        database_url = url.set(password=db_password).render_as_string(hide_password=False)
        planted.append(str(db_password))
    environment.setenv("DATABASE_URL", database_url)
    for name, value in SECRETS.items():
        environment.setenv(name, value)
    environment.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9")
    environment.setenv("ALERT_WEBHOOK_URL", f"https://hooks.example.invalid/services/{WEBHOOK_TOKEN}")
    (tmp_path / "backup_key").write_text(BACKUP_KEY + "\n")
    environment.setenv("BACKUP_KEY_FILE", str(tmp_path / "backup_key"))
    config = {
        "upstreams": [
            {
                "name": "vendor",
                "kind": "openai",
                "base_url": "http://127.0.0.1:9",
                "api_key": CONFIG_KEY,
                "headers": {"X-Vendor-Token": HEADER_VALUE},
                "discover": False,
                "models": ["vendor-chat"],
            },
            {
                "name": "proxied",
                "kind": "ollama",
                "base_url": f"http://proxyuser:{quote(URL_PASSWORD, safe='')}@127.0.0.1:9",
                "discover": False,
                "models": ["proxied-chat"],
            },
        ]
    }
    (tmp_path / "gatehouse.yaml").write_text(yaml.safe_dump(config))
    environment.setenv("GATEHOUSE_CONFIG", str(tmp_path / "gatehouse.yaml"))
    log = tmp_path / "log" / "gatehouse.log"
    environment.setenv("LOG_FILE", str(log))
    log.parent.mkdir()
    _write(
        log,
        {"event": "request", "level": "info", "request_id": "r1", "user_id": 1, "client_ip": "203.0.113.7"},
        {"event": "signup", "level": "info", "email": "alice.smith@example.com", "note": f"key {LOGGED_KEY}"},
        {"event": "upstream_failed", "level": "error", "error": f"401 with Authorization: Bearer {BEARER}"},
        {"event": "config_dump", "level": "warning", "detail": f"jwt={JWT} provider={PROVIDER_KEY} {STORED_KEY}"},
        {"event": "upstream_failed", "level": "error", "upstream": "provisioned", "error": f"refused {STORED_HEADER}"},
        f"2026-12-07 10:00:00 [error] console line with {SECRETS['METRICS_TOKEN']} from bob@example.com",
    )
    assert gatehouse("db", "upgrade").exit_code == 0
    _provisioned_upstream()

    bundle = tmp_path / "out" / "bundle.zip"
    result = gatehouse("support-bundle", "-o", str(bundle), "--since", "1h")
    assert result.exit_code == 0, result.output
    assert "not included" not in result.stderr.replace("not included metrics.txt", ""), result.stderr
    assert bundle.stat().st_mode & 0o077 == 0  # the owner's only
    members = _members(bundle)
    assert set(members) == {  # (the reason of a missing one is in result.stderr)
        "manifest.json",
        "config.json",
        "doctor.json",
        "health.json",
        "database.json",
        "db-stats.json",
        "logs/gatehouse.log",
    }
    for name, text in members.items():
        for secret in planted:
            for form in {secret, quote(secret, safe="")}:
                assert form not in text, f"{name} holds a planted secret ({secret})"
    assert "metrics.txt" in result.stderr and "--url" in result.stderr  # what is missing, and why

    manifest = orjson.loads(members["manifest.json"])
    assert manifest["gatehouse_version"] and manifest["packages"]["sqlalchemy"] and manifest["python"]
    assert {m["name"] for m in manifest["members"]} == set(members) - {"manifest.json"}
    assert [m["name"] for m in manifest["missing"]] == ["metrics.txt"]

    settings = {item.pop("name"): item for item in orjson.loads(members["config.json"])["settings"]}
    assert settings["JWT_SECRET"] == {"value": SHOWN_SECRET, "source": "environment", "detail": None}
    assert settings["BACKUP_KEY"] == {"value": SHOWN_SECRET, "source": "file", "detail": str(tmp_path / "backup_key")}
    assert settings["DB_PASSWORD"]["value"] == "" and settings["LOG_FILE"]["value"] == str(log)
    upstreams = orjson.loads(members["config.json"])["upstreams"]
    assert {u["name"]: (u["api_key"], u["headers"]) for u in upstreams}["vendor"] == ("[redacted]", ["X-Vendor-Token"])
    assert "proxyuser:[redacted]@127.0.0.1" in members["config.json"]

    doctor = orjson.loads(members["doctor.json"])
    assert doctor["checks"] and {"worst", "exit_code"} <= set(doctor)
    health = orjson.loads(members["health.json"])
    assert health["database"]["status"] == "ok" and health["migrations"]["status"] == "ok"
    database = orjson.loads(members["database.json"])
    assert database["revision"]["current"] == database["revision"]["head"] and database["replicas"] == []
    storage = orjson.loads(members["db-stats.json"])
    assert storage["database"]["kind"] == url.get_backend_name() and storage["logs"]["files"] == 1

    lines = members["logs/gatehouse.log"].splitlines()
    entries = [orjson.loads(text) for text in lines]  # still JSON, line by line
    assert [e["event"] for e in entries] == ["request", "signup", "upstream_failed", "config_dump", "upstream_failed"]
    assert entries[0]["client_ip"] == "203.0.113.x" and entries[0]["request_id"] == "r1"
    assert entries[1]["email"] == "al***@example.com"
    assert "[redacted]" in entries[2]["error"] and "[redacted]" in entries[3]["detail"]


def test_support_bundle_when_the_database_is_down(environment: pytest.MonkeyPatch, tmp_path: Path) -> None:
    environment.setenv("DATABASE_URL", "postgresql://gatehouse:planted-pw-0016@127.0.0.1:1/nowhere")
    bundle = tmp_path / "bundle.zip"
    result = gatehouse("support-bundle", "-o", str(bundle))
    assert result.exit_code == 0, result.output
    members = _members(bundle)
    assert {"manifest.json", "config.json", "doctor.json", "health.json"} <= set(members)
    health = orjson.loads(members["health.json"])
    assert health["database"]["status"] == "error" and health["database"]["error"]  # the finding itself
    missing = {m["name"]: m["why"] for m in orjson.loads(members["manifest.json"])["missing"]}
    assert {"database.json", "db-stats.json", "metrics.txt", "logs/gatehouse.log"} <= set(missing)
    assert "LOG_FILE is not set" in missing["logs/gatehouse.log"] and "journalctl" in missing["logs/gatehouse.log"]
    assert all("planted-pw-0016" not in text for text in members.values())
    assert "planted-pw-0016" not in result.output
    with zipfile.ZipFile(io.BytesIO(bundle.read_bytes())) as archive:
        assert archive.testzip() is None


def test_support_bundle_bad_input(environment: pytest.MonkeyPatch, tmp_path: Path) -> None:
    since = gatehouse("support-bundle", "--since", "a while")
    assert since.exit_code == 2 and "--since" in since.stderr
    url = gatehouse("support-bundle", "--url", "127.0.0.1:8000")
    assert url.exit_code == 2 and "--url" in url.stderr and "http://" in url.stderr
    key = gatehouse("support-bundle", "--key-file", str(tmp_path / "missing"))
    assert key.exit_code == 2 and "--key-file" in key.stderr
