"""`gatehouse doctor` on a prod-like deployment (PostgreSQL or SQLite, Redis, secrets as files, a fake upstream with
a working key, a recent encrypted backup, METRICS_TOKEN, the bootstrap key rotated, an https PUBLIC_URL): it
passes, and each planted misconfiguration is named with its fix."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from argon2 import PasswordHasher
from sqlalchemy import delete
from typer.testing import CliRunner

from gatehouse.accounts.bootstrap import bootstrap_admin
from gatehouse.accounts.keys import service as keys
from gatehouse.accounts.users import service as users
from gatehouse.auth import passwords
from gatehouse.auth.actor import Actor
from gatehouse.backups.create import create_backup
from gatehouse.cli import app
from gatehouse.cli.doctor_checks import Check, DoctorReport, Status, run_doctor
from gatehouse.cli.doctor_checks.disk import MB
from gatehouse.core.bus import create_bus
from gatehouse.db.engine import create_engine, create_sessionmaker
from gatehouse.db.migrate import downgrade, upgrade
from gatehouse.jobs.models import ReplicaBeat
from gatehouse.settings import Settings, get_settings
from tests.conftest import BACKENDS, fresh_database
from tests.support.fake_upstream import run_fake_upstream
from tests.support.known_secrets import remember
from tests.support.server import base_env, run_gatehouse
from tests.support.services import redis_server
from tests.support.tls_server import make_certificates, serve_http

UPSTREAM_KEY = remember("doctor-upstream-key-" + secrets.token_hex(8), "the doctor tests' upstream key")
GOOD_MODELS = ["fake-chat", "fake-embed"]


@dataclass
class Deployment:
    """A prepared prod-like deployment: its environment (values, or files for secrets) and what was made."""

    root: Path
    database_url: str
    env: dict[str, str]
    upstream_url: str
    bootstrap_key: str = ""  # the rotated bootstrap key, still active
    extra: dict[str, Any] = field(default_factory=dict)

    def config(self, name: str, *, api_key: str = UPSTREAM_KEY, models: list[str] | None = None) -> Path:
        """A GATEHOUSE_CONFIG with one OpenAI-compatible upstream serving `models` (fake-chat and fake-embed)."""
        upstream = {
            "name": "fake",
            "kind": "openai",
            "base_url": self.upstream_url,
            "api_key": api_key,
            "discover": False,
            "models": models if models is not None else GOOD_MODELS,
        }
        path = self.root / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"upstreams": [upstream]}))
        return path


def _environment_names() -> list[str]:
    names = [name.upper() for name in Settings.model_fields]
    return names + [f"{name}_FILE" for name in names] + ["FORWARDED_ALLOW_IPS", "SSL_CERT_FILE", "SSL_CERT_DIR"]


def apply_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], **changes: str | None) -> Settings:
    """Only `env` (with `changes`; None removes a variable) in the environment; the settings read from it."""
    for name in _environment_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in {**env, **changes}.items():
        if value is not None:
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return Settings(_env_file=None)


def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bootstrap admin's password hashed cheaply: these tests are about doctor, not Argon2's cost."""
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


def _secret_file(directory: Path, name: str) -> str:
    path = directory / name.lower()
    path.write_text(remember(secrets.token_urlsafe(32), f"the doctor tests' {name}") + "\n")
    path.chmod(0o600)
    return str(path)


async def _prepare(settings: Settings) -> str:
    """Migrate, bootstrap the admin (its key generated), rotate that key, and take an encrypted backup."""
    await upgrade(settings.database_url)
    engine = create_engine(settings)
    bus = create_bus("", settings.redis_prefix)
    try:
        sessionmaker = create_sessionmaker(engine)
        await bootstrap_admin(sessionmaker, settings)
        async with sessionmaker() as session, session.begin():
            admin = await users.get_by_email_or_raise(session, email=settings.bootstrap_admin_email)
            _, raw, _ = await keys.rotate(
                session, bus=bus, actor=Actor.system("test"), user_id=admin.id, name="bootstrap"
            )
    finally:
        await bus.close()
        await engine.dispose()
    await create_backup(settings, encrypt=True)
    return raw


@pytest.fixture(scope="module")
def fake_upstream_url() -> Iterator[str]:
    with run_fake_upstream(api_key=UPSTREAM_KEY) as upstream:
        yield upstream.url


@pytest.fixture(scope="module")
def public_https(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """An https PUBLIC_URL whose certificate is valid for 90 more days, and the CA that signed it."""
    certificates = make_certificates(tmp_path_factory.mktemp("tls"), valid_days=90)
    with serve_http(certificates=certificates) as url:
        yield url, certificates.ca


@pytest.fixture(scope="module", params=BACKENDS)
def deployment(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    fake_upstream_url: str,
    public_https: tuple[str, Path],
) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp(f"doctor-{request.param}")
    secret_dir = root / "secrets"
    secret_dir.mkdir(mode=0o700)
    with fresh_database(request.param, root) as database_url:
        env = {
            "ENVIRONMENT": "prod",
            "DATABASE_URL": database_url,
            "DATA_DIR": str(root / "data"),
            "BACKUP_DIR": str(root / "backups"),
            "REDIS_URL": redis_server(),
            "BACKUP_SCHEDULE": "daily@03:00",
            "PURGE_SCHEDULE": "",
            "PUBLIC_URL": public_https[0],
            "SSL_CERT_FILE": str(public_https[1]),
            "BOOTSTRAP_ADMIN_EMAIL": "admin@example.com",
        }
        for name in ("JWT_SECRET", "JOB_TOKEN", "METRICS_TOKEN", "BACKUP_KEY", "BOOTSTRAP_ADMIN_PASSWORD"):
            env[f"{name}_FILE"] = _secret_file(secret_dir, name)
        prepared = Deployment(root, database_url, env, fake_upstream_url)
        env["GATEHOUSE_CONFIG"] = str(prepared.config("good"))
        with pytest.MonkeyPatch.context() as monkeypatch:
            cheap_password_hashing(monkeypatch)
            prepared.bootstrap_key = remember(asyncio.run(_prepare(apply_env(monkeypatch, env))), "a bootstrap key")
        yield prepared


def doctor(settings: Settings) -> DoctorReport:
    return asyncio.run(run_doctor(settings, wait=2.0))


def _disk_is_roomy(path: Path) -> bool:
    usage = shutil.disk_usage(path)
    defaults = Settings.model_fields
    return (
        usage.free / usage.total * 100 >= defaults["disk_warn_percent"].default
        and usage.free >= defaults["disk_warn_free_mb"].default * MB
    )


def test_a_correct_prod_deployment_passes(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    report = doctor(apply_env(monkeypatch, deployment.env))
    statuses = {check.name: check.status for check in report.checks}
    if not _disk_is_roomy(deployment.root):
        statuses = {name: status for name, status in statuses.items() if not name.startswith("disk.")}
    bad = [
        check for check in report.checks if check.name in statuses and check.status not in (Status.PASS, Status.SKIP)
    ]
    assert not bad, "\n".join(f"{c.name} {c.status}: {c.summary} -> {c.fix}" for c in bad)
    for name in (
        "settings.environment",
        "settings.secret_files",
        "secret.jwt_secret",
        "database",
        "database.migrations",
        "redis",
        "upstream.fake",
        "models",
        "backups.schedule",
        "backups.newest",
        "metrics",
        "bootstrap_key",
        "tls.public_url",
    ):
        assert statuses[name] is Status.PASS, name
    # The fake upstream sends no Date header (real servers do: see the clock-skew test); PostgreSQL's clock is
    # compared, and on SQLite Redis's.
    assert statuses["clock.upstream"] is Status.SKIP
    assert report.by_name("clock.database").status is Status.PASS  # type: ignore[union-attr]
    assert report.by_name("upstream.fake").seconds is not None  # type: ignore[union-attr]
    assert report.seconds < 10


# --- planted misconfigurations: each named, with its fix ----------------------------------------------------------


def _weak_jwt(d: Deployment, env: dict[str, str | None]) -> None:
    env["JWT_SECRET_FILE"] = None
    env["JWT_SECRET"] = "x" * 40


def _wrong_upstream_key(d: Deployment, env: dict[str, str | None]) -> None:
    env["GATEHOUSE_CONFIG"] = str(d.config("wrong-key", api_key="not-the-upstream-key"))


def _no_embeddings(d: Deployment, env: dict[str, str | None]) -> None:
    env["GATEHOUSE_CONFIG"] = str(d.config("chat-only", models=["fake-chat"]))


def _no_schedule(d: Deployment, env: dict[str, str | None]) -> None:
    env["BACKUP_SCHEDULE"] = None


def _no_metrics_token(d: Deployment, env: dict[str, str | None]) -> None:
    env["METRICS_TOKEN_FILE"] = None


def _bootstrap_key_in_env(d: Deployment, env: dict[str, str | None]) -> None:
    env["BOOTSTRAP_ADMIN_API_KEY"] = d.bootstrap_key  # the live key, readable by anyone who reads the environment


def _low_disk(d: Deployment, env: dict[str, str | None]) -> None:
    env["DISK_FAIL_FREE_MB"] = str(10**12)  # more than any disk here has free: the real usage is below it


def _inline_secret(d: Deployment, env: dict[str, str | None]) -> None:
    env["JOB_TOKEN_FILE"] = None
    env["JOB_TOKEN"] = secrets.token_urlsafe(32)


def _open_signup(d: Deployment, env: dict[str, str | None]) -> None:
    env["SIGNUP_MODE"] = "open"


MISCONFIGURATIONS: dict[str, tuple[Callable[[Deployment, dict[str, str | None]], None], str, Status, str]] = {
    "weak JWT secret": (_weak_jwt, "secret.jwt_secret", Status.FAIL, "JWT_SECRET"),
    "wrong upstream key": (_wrong_upstream_key, "upstream.fake", Status.FAIL, "rotate the key"),
    "no embeddings model": (_no_embeddings, "models", Status.WARN, "embeddings model"),
    "no backup schedule": (_no_schedule, "backups.schedule", Status.WARN, "BACKUP_SCHEDULE"),
    "metrics unprotected": (_no_metrics_token, "metrics", Status.WARN, "METRICS_TOKEN"),
    "bootstrap key not rotated": (
        _bootstrap_key_in_env,
        "bootstrap_key",
        Status.FAIL,
        "gatehouse keys rotate-bootstrap",
    ),
    "low disk": (_low_disk, "disk.DATA_DIR+BACKUP_DIR", Status.FAIL, "free space"),
    "secret inline in the environment": (_inline_secret, "settings.secret_files", Status.WARN, "JOB_TOKEN_FILE"),
    "open signup": (_open_signup, "settings.signup", Status.WARN, "SIGNUP_MODE=invite"),
}


@pytest.mark.parametrize("planted", list(MISCONFIGURATIONS))
def test_a_planted_misconfiguration_is_named_with_its_fix(
    planted: str, deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    plant, name, status, fix = MISCONFIGURATIONS[planted]
    env: dict[str, str | None] = dict(deployment.env)
    plant(deployment, env)
    report = doctor(apply_env(monkeypatch, {}, **env))
    check = report.by_name(name)
    assert check is not None, [c.name for c in report.checks]
    assert check.status is status, check
    assert fix in check.fix, check
    assert report.worst in (status, Status.FAIL)


def test_a_database_behind_the_migration_head_fails(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = apply_env(monkeypatch, deployment.env)
    asyncio.run(downgrade(deployment.database_url, "-1"))
    try:
        check = doctor(settings).by_name("database.migrations")
    finally:
        asyncio.run(upgrade(deployment.database_url))
    assert check is not None and check.status is Status.FAIL, check
    assert "gatehouse db upgrade" in check.fix


async def _beats(settings: Settings, count: int) -> None:
    """`count` live replica heartbeats (as serving processes write them); 0 removes them."""
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            await session.execute(delete(ReplicaBeat))
            now = datetime.now(UTC)
            for number in range(count):
                session.add(
                    ReplicaBeat(
                        id=f"doctor-test-{number}",
                        host=f"host-{number}",
                        pid=1,
                        host_id=None,
                        heartbeat_seconds=60.0,
                        version="test",
                        started_at=now,
                        seen_at=now,
                    )
                )
    finally:
        await engine.dispose()


def test_unreachable_redis_with_several_replicas_fails(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = apply_env(monkeypatch, deployment.env, REDIS_URL="redis://127.0.0.1:1/0")
    asyncio.run(_beats(settings, 2))
    try:
        report = doctor(settings)
    finally:
        asyncio.run(_beats(settings, 0))
    check = report.by_name("redis")
    assert check is not None and check.status is Status.FAIL, check
    assert "2 replicas alive" in check.summary and "REDIS_URL" in check.fix
    fit = report.by_name("database.replicas")
    assert fit is not None
    # One SQLite file cannot serve replicas on several machines; PostgreSQL can.
    assert fit.status is (Status.FAIL if deployment.database_url.startswith("sqlite") else Status.PASS), fit


def _backup_copy(deployment: Deployment, tmp_path: Path) -> tuple[Path, dict[str, Any], Path]:
    copy = tmp_path / "backups"
    shutil.copytree(deployment.env["BACKUP_DIR"], copy)
    manifest_path = next(copy.glob("gatehouse-*.json"))
    return copy, json.loads(manifest_path.read_text()), manifest_path


def test_a_stale_backup_fails(deployment: Deployment, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    copy, manifest, manifest_path = _backup_copy(deployment, tmp_path)
    manifest["created_at"] = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    manifest_path.write_text(json.dumps(manifest))
    check = doctor(apply_env(monkeypatch, deployment.env, BACKUP_DIR=str(copy))).by_name("backups.newest")
    assert check is not None and check.status is Status.FAIL, check
    assert "stale" in check.summary and "gatehouse backup create" in check.fix


def test_a_damaged_backup_fails(deployment: Deployment, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    copy, manifest, _ = _backup_copy(deployment, tmp_path)
    stored = copy / manifest["file"]
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: same size, another checksum
    stored.write_bytes(bytes(data))
    check = doctor(apply_env(monkeypatch, deployment.env, BACKUP_DIR=str(copy))).by_name("backups.newest")
    assert check is not None and check.status is Status.FAIL, check
    assert "damaged" in check.summary and "SHA-256" in check.summary, check
    assert "gatehouse backup create" in check.fix


def test_an_expiring_certificate_fails(deployment: Deployment, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    certificates = make_certificates(tmp_path, valid_days=3)
    with serve_http(certificates=certificates) as url:
        settings = apply_env(monkeypatch, deployment.env, PUBLIC_URL=url, SSL_CERT_FILE=str(certificates.ca))
        check = doctor(settings).by_name("tls.public_url")
    assert check is not None and check.status is Status.FAIL, check
    assert "expires in 2." in check.summary or "expires in 3." in check.summary, check
    assert "renew the certificate" in check.fix


def test_a_certificate_expiring_within_three_weeks_warns(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    certificates = make_certificates(tmp_path, valid_days=14)
    with serve_http(certificates=certificates) as url:
        settings = apply_env(monkeypatch, deployment.env, PUBLIC_URL=url, SSL_CERT_FILE=str(certificates.ca))
        check = doctor(settings).by_name("tls.public_url")
    assert check is not None and check.status is Status.WARN, check


def test_an_untrusted_certificate_fails(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    certificates = make_certificates(tmp_path, valid_days=90)
    other_ca = make_certificates(tmp_path / "other", valid_days=90).ca
    with serve_http(certificates=certificates) as url:
        settings = apply_env(monkeypatch, deployment.env, PUBLIC_URL=url, SSL_CERT_FILE=str(other_ca))
        check = doctor(settings).by_name("tls.public_url")
    assert check is not None and check.status is Status.FAIL, check
    assert "does not verify" in check.summary


def test_clock_skew_against_an_upstream_fails(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    with serve_http(skew_seconds=-90, models=["skewed-chat", "skewed-embed"]) as url:
        config = deployment.root / "skewed.yaml"
        upstreams = [{"name": "skewed", "kind": "openai", "base_url": url, "discover": True}]
        config.write_text(yaml.safe_dump({"upstreams": upstreams}))
        report = doctor(apply_env(monkeypatch, deployment.env, GATEHOUSE_CONFIG=str(config)))
    check = report.by_name("clock.upstream")
    assert check is not None and check.status is Status.FAIL, check
    assert "ahead of upstream skewed" in check.summary and "NTP" in check.fix, check


# --- the command: table, JSON, exit codes ---------------------------------------------------------------------------


def _cli(deployment: Deployment, monkeypatch: pytest.MonkeyPatch, *args: str, **changes: str | None) -> Any:
    apply_env(monkeypatch, deployment.env, **changes)
    monkeypatch.chdir(deployment.root)
    get_settings.cache_clear()
    return CliRunner().invoke(app, ["doctor", *args])


def test_json_document_and_exit_codes(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    # A WARN (no METRICS_TOKEN) exits 1; a FAIL (a weak JWT secret) exits 2.
    warned = _cli(deployment, monkeypatch, "--json", METRICS_TOKEN_FILE=None)
    document = json.loads(warned.stdout)
    assert set(document) == {"version", "worst", "exit_code", "seconds", "checks"}
    assert document["worst"] == "WARN" and warned.exit_code == 1 == document["exit_code"], warned.stdout
    for check in document["checks"]:
        assert set(check) == {"name", "status", "summary", "fix", "seconds"}
        assert check["status"] in {"PASS", "WARN", "FAIL", "SKIP"}
        assert (check["fix"] is None) == (check["status"] in {"PASS", "SKIP"}), check
    failed = _cli(deployment, monkeypatch, "--json", JWT_SECRET_FILE=None, JWT_SECRET="y" * 40)
    assert failed.exit_code == 2 and json.loads(failed.stdout)["worst"] == "FAIL"
    # The secrets themselves never appear in what doctor prints.
    for name in ("JWT_SECRET_FILE", "METRICS_TOKEN_FILE", "BACKUP_KEY_FILE", "JOB_TOKEN_FILE"):
        secret = Path(deployment.env[name]).read_text().strip()
        assert secret not in warned.stdout + failed.stdout


def test_the_table_names_each_check(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    result = _cli(deployment, monkeypatch, METRICS_TOKEN_FILE=None)
    assert result.exit_code == 1, result.output
    for text in ("database.migrations", "upstream.fake", "backups.newest", "tls.public_url", "worst: WARN"):
        assert text in result.stdout, result.stdout
    assert "METRICS_TOKEN is not set" in result.stdout


# --- --smoke: a real chat and embedding through a running gateway ----------------------------------------------------


def test_smoke_sends_a_chat_and_an_embedding_through_a_real_server(
    fake_upstream_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepared = Deployment(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gatehouse.db", {}, fake_upstream_url)
    env = base_env(prepared.database_url, tmp_path / "data", GATEHOUSE_CONFIG=str(prepared.config("smoke")))
    with run_gatehouse(env, workdir=tmp_path) as server:
        passed = _smoke(monkeypatch, tmp_path, server.url, server.admin_key)
        refused = _smoke(monkeypatch, tmp_path, server.url, "gh_not_a_key_of_this_gateway_0000")
    chat, embedding = passed.by_name("smoke.chat"), passed.by_name("smoke.embeddings")
    assert chat is not None and chat.status is Status.PASS, chat
    assert "chat with fake-chat" in chat.summary and "completion tokens" in chat.summary and chat.seconds
    assert embedding is not None and embedding.status is Status.PASS, embedding
    assert "embedding with fake-embed" in embedding.summary and "dimensions" in embedding.summary
    models = refused.by_name("smoke.models")
    assert models is not None and models.status is Status.FAIL and "401" in models.summary, models
    assert "--key" in models.fix and refused.exit_code == 2


def _smoke(monkeypatch: pytest.MonkeyPatch, directory: Path, url: str, key: str) -> DoctorReport:
    """`gatehouse doctor --smoke --json` with the gateway's URL and key from GATEHOUSE_URL / GATEHOUSE_API_KEY."""
    apply_env(
        monkeypatch, {"DATABASE_URL": f"sqlite+aiosqlite:///{directory}/gatehouse.db", "DATA_DIR": str(directory)}
    )
    monkeypatch.setenv("GATEHOUSE_URL", url)
    monkeypatch.setenv("GATEHOUSE_API_KEY", key)
    monkeypatch.chdir(directory)
    result = CliRunner().invoke(app, ["doctor", "--smoke", "--json"])
    assert key not in result.stdout
    document = json.loads(result.stdout)
    assert result.exit_code == document["exit_code"]
    checks = [
        Check(c["name"], Status(c["status"]), c["summary"], c["fix"] or "", c["seconds"]) for c in document["checks"]
    ]
    return DoctorReport(checks=checks)


def test_everything_down_still_answers_within_seconds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A socket that listens but never accepts: connections open and then hang, as to a wedged server.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        port = silent.getsockname()[1]
        config = tmp_path / "down.yaml"
        upstream = {"name": "wedged", "kind": "openai", "base_url": f"https://localhost:{port}"}
        config.write_text(yaml.safe_dump({"upstreams": [upstream]}))
        settings = apply_env(
            monkeypatch,
            {
                "ENVIRONMENT": "prod",
                "DATABASE_URL": f"postgresql://gatehouse:pw-not-shown@127.0.0.1:{port}/gatehouse",
                "REDIS_URL": f"redis://:redis-pw-not-shown@127.0.0.1:{port}/0",
                "GATEHOUSE_CONFIG": str(config),
                "PUBLIC_URL": f"https://127.0.0.1:{port}",
                "DATA_DIR": str(tmp_path),
                "BACKUP_DIR": str(tmp_path / "backups"),
            },
        )
        report = asyncio.run(run_doctor(settings, wait=1.0))
    # Each network check gives up after its timeout, and they wait side by side, not one after another.
    assert report.seconds < 6, report.seconds
    for name in ("database", "redis", "upstream.wedged", "models", "tls.public_url", f"tls.localhost:{port}"):
        check = report.by_name(name)
        assert check is not None and check.status is Status.FAIL, (name, check)
    assert "did not answer within 1 s" in report.by_name("upstream.wedged").summary  # type: ignore[union-attr]
    text = json.dumps(report.as_dict())
    assert "pw-not-shown" not in text and report.exit_code == 2


async def _bootstrap_only(settings: Settings) -> None:
    await upgrade(settings.database_url)
    engine = create_engine(settings)
    try:
        await bootstrap_admin(create_sessionmaker(engine), settings)  # its key generated and printed once
    finally:
        await engine.dispose()


def test_a_bootstrap_key_never_rotated_warns(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"ENVIRONMENT": "prod", "DATABASE_URL": database_url, "DATA_DIR": str(tmp_path), "PURGE_SCHEDULE": ""}
    env["BOOTSTRAP_ADMIN_PASSWORD_FILE"] = _secret_file(tmp_path, "BOOTSTRAP_ADMIN_PASSWORD")
    settings = apply_env(monkeypatch, env)
    cheap_password_hashing(monkeypatch)
    asyncio.run(_bootstrap_only(settings))
    check = doctor(settings).by_name("bootstrap_key")
    assert check is not None and check.status is Status.WARN, check
    assert "never rotated" in check.summary and "gatehouse keys rotate-bootstrap" in check.fix
