"""Exports (POST /admin/export, `gatehouse export`) and deletion requests (`gatehouse users delete`,
DELETE /admin/users/{id}): masked by default, raw only for a superadmin with a reason, always audited."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import io
import re
import stat
import subprocess
import sys
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from argon2 import PasswordHasher
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from gatehouse.audit.models import AuditEvent
from gatehouse.audit.service import append
from gatehouse.auth import passwords
from gatehouse.auth.actor import Actor
from gatehouse.auth.models import ApiKey, User, UserSession
from gatehouse.errors import Forbidden
from gatehouse.exports import erasure, writer
from gatehouse.exports import service as export
from gatehouse.gateway.models import RequestLog
from gatehouse.limits.models import UsageCounter
from tests.conftest import Harness, make_settings, running_app
from tests.support.server import base_env

CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hello"}]}
EMAILS = [
    "alice@example.com",
    "bob@example.com",
    "carol@example.net",
    "dave@example.org",
    "second-admin@example.com",
    "admin@example.com",
]
PHONES = ["+1 (555) 123-4567", "0049 30 1234567", "555-987-6543"]
IPS = ["203.0.113.7", "198.51.100.23", "2001:db8:1:2::7", "192.0.2.55", "127.0.0.1"]
ALL = ["users", "usage", "requests", "audit", "invites", "keys", "responses"]

# What a raw email, phone number or IP address looks like, whoever wrote it.
EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
PHONE_RE = re.compile(r"\+?\d{1,4}[ .-]?\(?\d{2,4}\)?[ .-]\d{3,4}[ .-]?\d{3,4}")
IPV4_RE = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
IPV6_RE = re.compile(r"(?<![\w:])[0-9a-fA-F]{1,4}:[0-9a-fA-F:]*:[0-9a-fA-F]{0,4}(?![\w:])")
TIMESTAMP_RE = re.compile(r"\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2}))?")


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


async def _user(harness: Harness, email: str, role: str = "user", **fields: Any) -> tuple[int, str]:
    created = await harness.client.post("/admin/users", json={"email": email, "role": role, **fields})
    assert created.status_code == 201, created.text
    uid = created.json()["id"]
    key = await harness.client.post(f"/admin/users/{uid}/keys", json={"name": f"laptop of {email}"})
    assert key.status_code == 201, key.text
    return uid, key.json()["key"]


async def seed(harness: Harness) -> dict[str, Any]:
    """Users with PII in every kind of column, requests, usage, an invite, and audit events from public IPs."""
    alice, alice_key = await _user(harness, "alice@example.com", display_name="Alice +1 (555) 123-4567")
    bob, bob_key = await _user(harness, "bob@example.com", display_name="Bob")
    admin, admin_key = await _user(harness, "second-admin@example.com", role="admin")
    for key in (alice_key, alice_key, bob_key):
        assert (
            await harness.client.post("/v1/chat/completions", json=CHAT, headers=harness.as_key(key))
        ).status_code == 200
    blocked = await harness.client.post(
        f"/admin/users/{bob}/block",
        json={"reason": "abuse reported by carol@example.net from 198.51.100.23, call 0049 30 1234567"},
    )
    assert blocked.status_code == 200, blocked.text
    assert (await harness.client.post(f"/admin/users/{bob}/unblock")).status_code == 200
    assert (await harness.client.post(f"/admin/users/{bob}/block", json={"reason": "again: 555-987-6543"})).is_success
    invite = await harness.client.post("/admin/invites", json={"email": "dave@example.org"})
    assert invite.status_code == 201, invite.text
    async with harness.runtime.db.sessionmaker() as session, session.begin():
        await append(
            session,
            actor=Actor(type="user", user_id=alice, label="alice@example.com", ip="203.0.113.7"),
            action="login.succeeded",
            target_type="user",
            target_id=alice,
        )
        await append(
            session,
            actor=Actor(type="user", user_id=alice, label="alice@example.com", ip="2001:db8:1:2::7"),
            action="login.failed",
            target_type="user",
            target_id=alice,
            details={"email": "alice@example.com", "note": "second try from 192.0.2.55"},
        )
    await harness.runtime.request_log.flush()
    return {"alice": alice, "alice_key": alice_key, "bob": bob, "admin": admin, "admin_key": admin_key}


def unzip(content: bytes) -> dict[str, str]:
    archive = zipfile.ZipFile(io.BytesIO(content))
    assert archive.testzip() is None
    return {name: archive.read(name).decode() for name in archive.namelist()}


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def assert_no_raw_pii(files: dict[str, str]) -> None:
    """No email, phone number or IP address in the clear, by pattern and by the values seeded."""
    for name, text in files.items():
        for value in [*EMAILS, *PHONES, *IPS]:
            assert value not in text, f"{value} in {name}"
        assert EMAIL_RE.findall(text) == [], name
        undated = TIMESTAMP_RE.sub("", text)
        assert PHONE_RE.findall(undated) == [], name
        assert IPV4_RE.findall(undated) == [], name
        for match in IPV6_RE.finditer(undated):
            assert undated[match.end() : match.end() + 3] == "/48", f"{match.group(0)} in {name}"


def check_manifest(files: dict[str, str], entities: list[str], fmt: str = "csv") -> dict[str, Any]:
    """The manifest lists each file with its row count and SHA-256, and both match the file."""
    manifest: dict[str, Any] = orjson.loads(files["manifest.json"])
    assert list(files) == [f"{e}.{fmt}" for e in entities] + ["manifest.json"]
    assert list(manifest["entities"]) == entities
    for name in entities:
        text = files[f"{name}.{fmt}"]
        entry = manifest["entities"][name]
        rows = len(csv_rows(text)) if fmt == "csv" else len(text.splitlines())
        assert entry["rows"] == rows, name
        assert entry["sha256"] == hashlib.sha256(text.encode()).hexdigest()
        assert entry["bytes"] == len(text.encode())
    return manifest


async def _count(harness: Harness, model: Any, *where: Any) -> int:
    async with harness.runtime.db.sessionmaker() as session:
        query = select(func.count()).select_from(model)
        return int((await session.execute(query.where(*where) if where else query)).scalar_one())


async def _events(harness: Harness, action: str) -> list[dict[str, Any]]:
    response = await harness.client.get("/admin/audit", params={"action": action})
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def test_masked_export_holds_every_entity_and_no_raw_pii(harness: Harness) -> None:
    await seed(harness)
    response = await harness.client.post("/admin/export", json={"entities": ALL})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert re.fullmatch(
        r'attachment; filename="gatehouse-export-\d{8}T\d{6}Z\.zip"', response.headers["content-disposition"]
    )
    files = unzip(response.content)
    manifest = check_manifest(files, ALL)
    assert_no_raw_pii(files)
    for model, name in (
        (User, "users"),
        (UsageCounter, "usage"),
        (RequestLog, "requests"),
        (ApiKey, "keys"),
    ):
        assert manifest["entities"][name]["rows"] == await _count(harness, model), name
    # The export's own export.created is in the snapshot; its export.completed comes after it.
    assert manifest["entities"]["audit"]["rows"] == await _count(harness, AuditEvent) - 1
    assert manifest["pii"] == "masked" and manifest["format"] == "csv"
    assert manifest["created_by"] == "ad***@example.com" and manifest["gatehouse_version"]

    users = {u["id"]: u for u in csv_rows(files["users.csv"])}
    assert "password_hash" not in next(iter(users.values()))
    assert {u["email"] for u in users.values()} >= {"al***@example.com", "bo***@example.com"}
    # A name holding the email's local part loses it too (here "Alice", and "second-admin", the default).
    assert {"Al*** +1 (55*) ***-**67", "Bo***", "se***"} <= {u["display_name"] for u in users.values()}
    assert any(u["block_reason"] == "again: 555-***-**43" for u in users.values())
    audit = files["audit.csv"]
    assert "203.0.113.x" in audit and "2001:db8:1::/48" in audit and "192.0.2.x" in audit
    assert "hash" not in csv_rows(audit)[0] and "prev_hash" not in csv_rows(audit)[0]
    assert "ca***@example.net" in audit and "198.51.100.x" in audit and "004* ** *****67" in audit
    assert "da***@example.org" in files["invites.csv"]
    assert "laptop of al***@example.com" in files["keys.csv"]
    for secret_column in ("key_hash", "token_hash", "password_hash"):
        assert secret_column not in "".join(files.values())
    request = csv_rows(files["requests.csv"])[0]
    assert request["created_at"].endswith("Z") and request["stream"] in ("true", "false")

    completed = await _events(harness, "export.completed")
    created = await _events(harness, "export.created")
    assert len(created) == len(completed) == 1
    assert created[0]["details"]["pii"] == "masked"
    assert completed[0]["details"]["export_id"] == manifest["export_id"] == response.headers["x-export-id"]
    assert completed[0]["details"]["sha256"] == hashlib.sha256(response.content).hexdigest()
    assert completed[0]["details"]["rows"] == {name: manifest["entities"][name]["rows"] for name in ALL}


async def test_jsonl_time_range_and_user_filter(harness: Harness) -> None:
    seeded = await seed(harness)
    alice = seeded["alice"]
    response = await harness.client.post(
        "/admin/export", json={"entities": ALL, "format": "jsonl", "user": "Alice@Example.com"}
    )
    assert response.status_code == 200, response.text
    files = unzip(response.content)
    manifest = check_manifest(files, ALL, fmt="jsonl")
    assert_no_raw_pii(files)
    rows = {name: [orjson.loads(line) for line in files[f"{name}.jsonl"].splitlines()] for name in ALL}
    assert [u["id"] for u in rows["users"]] == [alice]
    assert rows["users"][0]["email"] == "al***@example.com"
    assert len(rows["requests"]) == 2 and {r["user_id"] for r in rows["requests"]} == {alice}
    assert {r["user_id"] for r in rows["usage"]} == {alice} and {k["user_id"] for k in rows["keys"]} == {alice}
    assert rows["invites"] == []
    actions = {e["action"] for e in rows["audit"]}
    assert {"user.created", "key.created", "login.succeeded", "login.failed"} <= actions
    targets = {("user", str(alice))} | {("key", str(k["id"])) for k in rows["keys"]}
    assert all(e["actor_id"] == alice or (e["target_type"], e["target_id"]) in targets for e in rows["audit"])
    failed = next(e for e in rows["audit"] if e["action"] == "login.failed")
    assert failed["details"] == {"email": "al***@example.com", "note": "second try from 192.0.2.x"}
    assert failed["client_ip"] == "2001:db8:1::/48"
    assert manifest["filters"]["user_id"] == alice and manifest["filters"]["user"] == "al***@example.com"
    by_id = await harness.client.post("/admin/export", json={"entities": ["users"], "user": alice})
    assert orjson.loads(unzip(by_id.content)["manifest.json"])["entities"]["users"]["rows"] == 1

    now = datetime.now(UTC)
    later = {"entities": ["requests", "audit", "usage", "users"], "since": (now + timedelta(days=1)).isoformat()}
    future = orjson.loads(unzip((await harness.client.post("/admin/export", json=later)).content)["manifest.json"])
    # Users are the current state: never cut by the time range.
    assert {name: e["rows"] for name, e in future["entities"].items()} == {
        "requests": 0,
        "audit": 0,
        "usage": 0,
        "users": await _count(harness, User),
    }
    window = {
        "entities": ["requests", "usage"],
        "since": (now - timedelta(hours=1)).isoformat(),
        "until": (now + timedelta(hours=1)).isoformat(),
    }
    present = orjson.loads(unzip((await harness.client.post("/admin/export", json=window)).content)["manifest.json"])
    assert present["entities"]["requests"]["rows"] == 3 and present["entities"]["usage"]["rows"] == 2
    assert present["filters"]["since"].endswith("Z")

    naive = await harness.client.post("/admin/export", json={"entities": ["users"], "since": "2026-11-01T00:00:00"})
    assert naive.status_code == 422 and naive.json()["error"]["param"] == "since"
    backwards = await harness.client.post(
        "/admin/export", json={"entities": ["users"], "since": now.isoformat(), "until": now.isoformat()}
    )
    assert backwards.status_code == 400
    unknown = await harness.client.post("/admin/export", json={"entities": ["users"], "user": "nobody@example.com"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "user_not_found"
    huge = await harness.client.post("/admin/export", json={"entities": ["users"], "user": "9" * 30})
    assert huge.status_code == 404 and huge.json()["error"]["code"] == "user_not_found"
    bad = await harness.client.post("/admin/export", json={"entities": ["users", "passwords"]})
    assert bad.status_code == 422
    error = bad.json()["error"]
    assert error["param"] == "entities.1" and all(name in error["message"] for name in ALL)
    assert (await harness.client.post("/admin/export", json={"entities": []})).status_code == 422


async def test_raw_exports_need_a_superadmin_and_a_reason(harness: Harness) -> None:
    seeded = await seed(harness)
    as_admin = harness.as_key(seeded["admin_key"])
    refused = await harness.client.post("/admin/export", json={"entities": ["users"], "pii": "raw"}, headers=as_admin)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "raw_export_forbidden"
    with_reason = await harness.client.post(
        "/admin/export", json={"entities": ["users"], "pii": "raw", "reason": "ticket 12"}, headers=as_admin
    )
    assert with_reason.status_code == 403
    assert await _events(harness, "export.") == []
    masked = await harness.client.post("/admin/export", json={"entities": ["users"]}, headers=as_admin)
    assert masked.status_code == 200
    assert_no_raw_pii(unzip(masked.content))

    no_reason = await harness.client.post("/admin/export", json={"entities": ["users"], "pii": "raw"})
    assert no_reason.status_code == 422 and no_reason.json()["error"]["param"] == "reason"
    short = await harness.client.post("/admin/export", json={"entities": ["users"], "pii": "raw", "reason": "x"})
    assert short.status_code == 422 and short.json()["error"]["param"] == "reason"
    assert len(await _events(harness, "export.created")) == 1  # the admin's masked one

    raw = await harness.client.post(
        "/admin/export", json={"entities": ["users", "audit"], "pii": "raw", "reason": "legal hold, ticket 4711"}
    )
    assert raw.status_code == 200, raw.text
    files = unzip(raw.content)
    assert "alice@example.com" in files["users.csv"] and "Alice +1 (555) 123-4567" in files["users.csv"]
    assert "203.0.113.7" in files["audit.csv"] and "hash" in csv_rows(files["audit.csv"])[0]
    manifest = check_manifest(files, ["users", "audit"])
    assert manifest["pii"] == "raw" and manifest["reason"] == "legal hold, ticket 4711"
    assert manifest["created_by"] == "admin@example.com" and manifest["masking"] is None
    event = (await _events(harness, "export.created"))[0]
    assert event["actor_label"] == "admin@example.com"
    assert event["details"]["pii"] == "raw" and event["details"]["reason"] == "legal hold, ticket 4711"
    assert event["details"]["export_id"] == manifest["export_id"]
    # Audited before its first byte: the raw export's own event is in its snapshot.
    assert any(row["action"] == "export.created" and "4711" in row["details"] for row in csv_rows(files["audit.csv"]))


async def test_exports_are_rate_limited_per_user(harness: Harness) -> None:
    seeded = await seed(harness)
    assert (await harness.client.put("/admin/rate-limits", json={"limits": {"export": 2}})).status_code == 200
    for _ in range(2):
        assert (await harness.client.post("/admin/export", json={"entities": ["keys"]})).status_code == 200
    limited = await harness.client.post("/admin/export", json={"entities": ["keys"]})
    assert limited.status_code == 429 and limited.json()["error"]["param"] == "export"
    assert int(limited.headers["retry-after"]) > 0
    other = await harness.client.post(
        "/admin/export", json={"entities": ["keys"]}, headers=harness.as_key(seeded["admin_key"])
    )
    assert other.status_code == 200
    assert len(await _events(harness, "export.created")) == 3  # a refused export is not audited


def _cli(harness: Harness, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    done = _cli_bytes(harness, cwd, *args, **env)
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())


def _cli_bytes(harness: Harness, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    environment = base_env(harness.settings.database_url, cwd / "data", COLUMNS="200", **env)
    # A usual umask: a file created with the default mode would be readable by everyone (0644).
    return subprocess.run(
        [sys.executable, "-m", "gatehouse", *args],
        env=environment,
        cwd=cwd,
        capture_output=True,
        timeout=120,
        umask=0o022,
    )


async def test_cli_export_masked_jsonl_raw_and_stdout(harness: Harness, tmp_path: Path) -> None:
    seeded = await seed(harness)
    out = tmp_path / "all.zip"
    done = await asyncio.to_thread(_cli, harness, tmp_path, "export", "--out", str(out))
    assert done.returncode == 0, done.stderr
    files = unzip(out.read_bytes())
    manifest = check_manifest(files, ALL)
    assert_no_raw_pii(files)
    assert f"requests: {manifest['entities']['requests']['rows']:,} rows" in done.stdout
    assert hashlib.sha256(out.read_bytes()).hexdigest() in done.stdout
    assert not list(tmp_path.glob("*.part"))
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # personal data: the owner's only, whatever the umask

    jsonl = await asyncio.to_thread(
        _cli,
        harness,
        tmp_path,
        "export",
        "--entities",
        "requests,usage",
        "--user",
        "alice@example.com",
        "--since",
        datetime.now(UTC).date().isoformat(),
        "--format",
        "jsonl",
    )
    assert jsonl.returncode == 0, jsonl.stderr
    (default,) = tmp_path.glob("gatehouse-export-*.zip")
    assert stat.S_IMODE(default.stat().st_mode) == 0o600
    files = unzip(default.read_bytes())
    check_manifest(files, ["requests", "usage"], fmt="jsonl")
    assert {orjson.loads(line)["user_id"] for line in files["requests.jsonl"].splitlines()} == {seeded["alice"]}

    refused = await asyncio.to_thread(_cli, harness, tmp_path, "export", "--pii", "raw", "--out", "-")
    assert refused.returncode == 1 and "needs a reason" in refused.stderr
    raw = await asyncio.to_thread(
        _cli_bytes,
        harness,
        tmp_path,
        "export",
        "--entities",
        "users",
        "--pii",
        "raw",
        "--reason",
        "audit 2026",
        "--out",
        "-",
    )
    assert raw.returncode == 0, raw.stderr
    # The ZIP alone on stdout, the summary on stderr.
    assert "alice@example.com" in unzip(raw.stdout)["users.csv"] and b"users: 4 rows" in raw.stderr
    unknown = await asyncio.to_thread(_cli, harness, tmp_path, "export", "--entities", "users,secrets")
    assert unknown.returncode == 1 and "unknown: secrets" in unknown.stderr

    events = await _events(harness, "export.created")
    assert [e["actor_label"] for e in events] == ["cli", "cli", "cli"]
    assert events[0]["details"]["pii"] == "raw" and events[0]["details"]["reason"] == "audit 2026"

    raw_file = tmp_path / "raw.zip"
    raw_file.write_bytes(b"an older file, readable by everyone")
    raw_file.chmod(0o644)
    replaced = await asyncio.to_thread(
        _cli, harness, tmp_path, "export", "--pii", "raw", "--reason", "ticket 5", "--out", str(raw_file)
    )
    assert replaced.returncode == 0, replaced.stderr
    assert (
        stat.S_IMODE(raw_file.stat().st_mode) == 0o600
        and "alice@example.com" in unzip(raw_file.read_bytes())["users.csv"]
    )


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--since", "0001-01-01T00:00:00+05:00"),
        ("--until", "9999-12-31T23:00:00-05:00"),
        ("--since", "tomorrow"),
    ],
)
async def test_cli_export_refuses_a_time_out_of_range_in_one_line(
    harness: Harness, tmp_path: Path, option: str, value: str
) -> None:
    done = await asyncio.to_thread(_cli, harness, tmp_path, "export", option, value, "--out", "-")
    assert done.returncode == 2, done.stderr
    assert option in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and done.stdout == ""
    assert await _events(harness, "export.created") == []


async def _refused(harness: Harness, key: str, *, within: float = 5.0) -> bool:
    """Whether the key is refused (401) within `within` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        if (await harness.client.get("/me", headers=harness.as_key(key))).status_code == 401:
            return True
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)


async def test_delete_route_removes_the_user_and_their_key_stops_at_once(harness: Harness) -> None:
    seeded = await seed(harness)
    alice, key = seeded["alice"], seeded["alice_key"]
    async with harness.runtime.db.sessionmaker() as session, session.begin():
        await append(session, actor=Actor(type="anonymous", label="Alice@Example.com"), action="login.failed")
    assert (await harness.client.get("/me", headers=harness.as_key(key))).status_code == 200  # cached now
    deleted = await harness.client.delete(f"/admin/users/{alice}", params={"reason": "GDPR request 7"})
    assert deleted.status_code == 200, deleted.text
    body = deleted.json()
    assert body["mode"] == "delete" and body["requests"] == 2 and body["keys"] == 1 and body["usage_days"] == 1
    # Every event that keeps something of hers: where she acted (login.succeeded, login.failed), that targets
    # her (user.created) or her key (key.created), and the one labelled with her email by no account.
    assert body["audit_events_kept"] == 5
    assert (await harness.client.get("/me", headers=harness.as_key(key))).status_code == 401
    assert await _count(harness, RequestLog, RequestLog.user_id == alice) == 0
    assert await _count(harness, User, User.id == alice) == 0
    assert await _count(harness, UsageCounter, UsageCounter.user_id == alice) == 0
    (event,) = await _events(harness, "user.deleted")
    assert event["target_id"] == str(alice) and event["details"]["reason"] == "GDPR request 7"
    assert "alice@example.com" not in orjson.dumps(event["details"]).decode()
    assert (await harness.client.get("/admin/audit/verify")).json()["ok"] is True

    me = (await harness.client.get("/me")).json()["id"]
    self_delete = await harness.client.delete(f"/admin/users/{me}")
    assert self_delete.status_code == 403 and self_delete.json()["error"]["code"] == "self_delete"
    as_admin = harness.as_key(seeded["admin_key"])
    assert (await harness.client.delete(f"/admin/users/{me}", headers=as_admin)).status_code == 403
    assert (await harness.client.delete(f"/admin/users/{alice}")).status_code == 404

    anonymised = await harness.client.delete(f"/admin/users/{seeded['bob']}", params={"mode": "anonymise"})
    assert anonymised.status_code == 200 and anonymised.json()["requests"] == 0
    bob = (await harness.client.get(f"/admin/users/{seeded['bob']}")).json()
    assert bob["email"] == f"deleted-{seeded['bob']}@invalid" and bob["display_name"] == ""
    assert bob["status"] == "disabled"
    assert await _count(harness, RequestLog, RequestLog.user_id == seeded["bob"]) == 1


@pytest.fixture
async def shared_bus_harness(database_url: str, tmp_path: Path, redis_url: str, redis_key_prefix: str) -> Any:
    """The app with a Redis bus, so a command in another process reaches its caches."""
    settings = make_settings(database_url, tmp_path, redis_url=redis_url, redis_prefix=redis_key_prefix)
    async with running_app(settings) as running:
        yield running


@pytest.mark.redis
async def test_cli_deletion_request_exports_first_then_anonymises(shared_bus_harness: Harness, tmp_path: Path) -> None:
    harness = shared_bus_harness
    seeded = await seed(harness)
    alice, key = seeded["alice"], seeded["alice_key"]
    assert (await harness.client.get("/me", headers=harness.as_key(key))).status_code == 200  # cached now
    async with harness.runtime.db.sessionmaker() as session, session.begin():
        session.add(UserSession(token_hash="0" * 64, user_id=alice, expires_at=datetime.now(UTC) + timedelta(days=1)))
    bus = {"REDIS_URL": harness.settings.redis_url, "REDIS_PREFIX": harness.settings.redis_prefix}
    out = tmp_path / "alice.zip"
    done = await asyncio.to_thread(
        _cli,
        harness,
        tmp_path,
        "users",
        "delete",
        "alice@example.com",
        "--export-first",
        "--out",
        str(out),
        "--anonymise",
        "--reason",
        "ticket 99",
        "--yes",
        **bus,
    )
    assert done.returncode == 0, done.stderr
    # user.created, key.created, login.succeeded, login.failed, and the export's created and completed events
    assert "anonymised user" in done.stdout and "audit log keeps 6 event(s) about this user" in done.stdout
    assert await _refused(harness, key)

    files = unzip(out.read_bytes())
    manifest = check_manifest(files, ALL)
    assert_no_raw_pii(files)
    assert manifest["filters"]["user_id"] == alice and manifest["entities"]["requests"]["rows"] == 2
    (event,) = await _events(harness, "user.anonymised")
    assert event["actor_label"] == "cli" and event["target_id"] == str(alice)
    details = event["details"]
    assert details["export"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert details["export"]["export_id"] == manifest["export_id"] and details["reason"] == "ticket 99"
    assert details["keys"] == 1 and details["sessions"] == 1 and details["requests"] == 0

    user = (await harness.client.get(f"/admin/users/{alice}")).json()
    assert user["email"] == f"deleted-{alice}@invalid" and user["display_name"] == "" and user["status"] == "disabled"
    assert await _count(harness, RequestLog, RequestLog.user_id == alice) == 2  # kept, without PII
    assert await _count(harness, UserSession, UserSession.user_id == alice) == 0
    assert await _count(harness, ApiKey, ApiKey.user_id == alice, ApiKey.revoked_at.is_(None)) == 0
    after = unzip(
        (
            await harness.client.post("/admin/export", json={"entities": ["users"], "pii": "raw", "reason": "check"})
        ).content
    )
    assert "Alice" not in after["users.csv"] and "alice@example.com" not in after["users.csv"]


async def test_cli_deletion_keeps_everything_when_the_export_fails_or_the_user_is_the_last_superadmin(
    harness: Harness, tmp_path: Path
) -> None:
    seeded = await seed(harness)
    alice = seeded["alice"]
    failed = await asyncio.to_thread(
        _cli,
        harness,
        tmp_path,
        "users",
        "delete",
        "alice@example.com",
        "--export-first",
        "--out",
        str(tmp_path / "missing-dir" / "x.zip"),
        "--yes",
    )
    assert failed.returncode == 1 and "Error:" in failed.stderr
    assert await _count(harness, User, User.id == alice) == 1
    assert await _count(harness, RequestLog, RequestLog.user_id == alice) == 2
    assert await _events(harness, "user.deleted") == []

    last = await asyncio.to_thread(_cli, harness, tmp_path, "users", "delete", "admin@example.com", "--yes")
    assert last.returncode == 1 and "last active superadmin" in last.stderr
    asked = await asyncio.to_thread(_cli, harness, tmp_path, "users", "delete", "alice@example.com")
    assert asked.returncode == 1 and await _count(harness, User, User.id == alice) == 1  # no answer: not confirmed

    deleted = await asyncio.to_thread(_cli, harness, tmp_path, "users", "delete", "alice@example.com", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert "deleted user" in deleted.stdout and "2 request-log row(s)" in deleted.stdout
    assert "AUTH_CACHE_SECONDS" in deleted.stdout  # no Redis here: says how long a running server may still accept
    assert await _count(harness, User, User.id == alice) == 0
    assert await _count(harness, RequestLog, RequestLog.user_id == alice) == 0
    (event,) = await _events(harness, "user.deleted")
    assert event["details"]["export"] is None and event["details"]["requests"] == 2


async def test_an_export_abandoned_halfway_is_closed_cleanly_and_not_completed(harness: Harness) -> None:
    await seed(harness)
    runtime = harness.runtime
    async with runtime.db.sessionmaker() as session, session.begin():
        spec = await export.prepare(session, actor=Actor.system("test"), actor_role=None, entities=ALL)
    chunks = writer.stream(
        read_sessionmaker=runtime.db.read_sessionmaker,
        sessionmaker=runtime.db.sessionmaker,
        actor=Actor.system("test"),
        spec=spec,
    )
    async with contextlib.aclosing(chunks):
        async for _ in chunks:
            break  # the client went away after the first chunk
    assert len(await _events(harness, "export.created")) == 1
    assert await _events(harness, "export.completed") == []


async def test_masked_export_masks_names_hashes_client_text_and_defuses_formulas(harness: Harness) -> None:
    alice, alice_key = await _user(harness, "alice.smith@example.com")  # her name defaults to "alice.smith"
    bob, _ = await _user(harness, "bob@example.com", display_name='=HYPERLINK("http://evil.example","x")')
    failed = await harness.client.post(
        "/auth/login", json={"email": "alice.smith@example.com", "password": "not her password"}
    )
    assert failed.status_code == 401
    # Text the client chose: its X-Request-ID (in the request log and the audit log) and its model string.
    chat = await harness.client.post(
        "/v1/chat/completions",
        json=CHAT,
        headers={**harness.as_key(alice_key), "x-request-id": "carol@example.net 555-123-4567"},
    )
    assert chat.status_code == 200, chat.text
    await harness.runtime.request_log.flush()
    async with harness.runtime.db.sessionmaker() as session, session.begin():
        session.add(
            RequestLog(
                request_id="r-1",
                user_id=alice,
                endpoint="chat",
                protocol="openai",
                model="dave@example.org/gpt",
                status_code=404,
            )
        )
    blocked = await harness.client.post(
        f"/admin/users/{bob}/block", json={"reason": "spam"}, headers={"x-request-id": "erin@example.com"}
    )
    assert blocked.status_code == 200, blocked.text
    noted = await harness.client.post(f"/admin/users/{alice}/block", json={"reason": "alice.smith shares her key"})
    assert noted.status_code == 200, noted.text

    entities = ["users", "requests", "audit"]
    masked = unzip((await harness.client.post("/admin/export", json={"entities": entities})).content)
    assert_no_raw_pii(masked)
    users = {int(u["id"]): u for u in csv_rows(masked["users.csv"])}
    assert users[alice]["email"] == "al***@example.com" and users[alice]["display_name"] == "al***"
    assert users[alice]["block_reason"] == "al*** shares her key"
    assert "alice.smith" not in masked["users.csv"]
    assert users[bob]["display_name"] == '\'=HYPERLINK("http://evil.example","x")'
    requests = csv_rows(masked["requests.csv"])
    assert {r["request_id"] for r in requests} == {"ca***@example.net 555-***-**67", "r-1"}
    assert {r["model"] for r in requests} == {"demo", "da***@example.org/gpt"}
    audit = csv_rows(masked["audit.csv"])
    (login,) = [e for e in audit if e["action"] == "login.failed"]
    assert orjson.loads(login["details"]) == {"email": "al***@example.com", "reason": "bad_credentials"}
    assert "email_hash" not in masked["audit.csv"]
    (block,) = [e for e in audit if e["action"] == "user.blocked" and e["target_id"] == str(bob)]
    assert block["request_id"] == "er***@example.com"
    manifest = orjson.loads(masked["manifest.json"])
    assert "audit.details *_hash values" in manifest["masking"]["left_out"] and manifest["csv_formulas"]

    jsonl = unzip((await harness.client.post("/admin/export", json={"entities": ["users"], "format": "jsonl"})).content)
    names = {row["id"]: row["display_name"] for row in map(orjson.loads, jsonl["users.jsonl"].splitlines())}
    assert names[bob] == '=HYPERLINK("http://evil.example","x")' and names[alice] == "al***"

    raw = unzip(
        (
            await harness.client.post("/admin/export", json={"entities": entities, "pii": "raw", "reason": "ticket 8"})
        ).content
    )
    raw_users = {int(u["id"]): u for u in csv_rows(raw["users.csv"])}
    assert raw_users[alice]["display_name"] == "alice.smith"
    assert raw_users[bob]["display_name"].startswith("'=HYPERLINK")  # a raw CSV is opened in spreadsheets too
    assert "email_hash" in raw["audit.csv"] and "carol@example.net 555-123-4567" in raw["requests.csv"]


async def test_a_time_out_of_range_is_a_422_naming_it(harness: Harness) -> None:
    for name, value in (("since", "0001-01-01T00:00:00+05:00"), ("until", "9999-12-31T23:00:00-05:00")):
        response = await harness.client.post("/admin/export", json={"entities": ["audit"], name: value})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["param"] == name and "out of range" in response.json()["error"]["message"]
    assert await _events(harness, "export.created") == []
    # The very first and last times that are in range are fine, quota days included.
    extremes = {"entities": ["usage", "audit"], "since": "0001-01-01T00:00:00Z", "until": "9999-12-31T23:59:59Z"}
    assert (await harness.client.post("/admin/export", json=extremes)).status_code == 200
    first = await harness.client.post("/admin/export", json={"entities": ["usage"], "until": "0001-01-01T00:00:00Z"})
    assert first.status_code == 200
    assert orjson.loads(unzip(first.content)["manifest.json"])["entities"]["usage"]["rows"] == 0


def _on_postgres(harness: Harness) -> None:
    if not harness.settings.database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only: SQLite has one writer at a time, and no idle-transaction limit")


async def test_two_deletions_at_once_cannot_remove_the_last_two_superadmins(harness: Harness) -> None:
    _on_postgres(harness)
    created = await harness.client.post("/admin/users", json={"email": "root2@example.com", "role": "superadmin"})
    assert created.status_code == 201, created.text
    second = created.json()["id"]
    first = (await harness.client.get("/me")).json()["id"]
    runtime = harness.runtime
    cli = Actor.system("cli")
    async with runtime.db.sessionmaker() as one, runtime.db.sessionmaker() as two:
        await one.begin()
        await erasure.erase_user(one, bus=runtime.bus, actor=cli, actor_role=None, user_id=second)
        # Not committed yet: the other deletion waits for it, then counts what it left.
        other = asyncio.create_task(erasure.erase_user(two, bus=runtime.bus, actor=cli, actor_role=None, user_id=first))
        await asyncio.sleep(0.5)
        assert not other.done()
        await one.commit()
        with pytest.raises(Forbidden) as refused:
            await other
        assert refused.value.code == "last_superadmin"
        await two.rollback()
    assert await _count(harness, User, User.role == "superadmin") == 1


async def test_a_client_that_stalls_ends_the_read_transaction(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    _on_postgres(harness)
    await seed(harness)
    monkeypatch.setattr(writer, "READ_IDLE_SECONDS", 1)
    runtime = harness.runtime
    actor = Actor.system("test")

    async def take(entities: list[str], *, stall_after_first: float) -> list[bytes]:
        async with runtime.db.sessionmaker() as session, session.begin():
            spec = await export.prepare(session, actor=actor, actor_role=None, entities=entities)
        chunks = writer.stream(
            read_sessionmaker=runtime.db.read_sessionmaker, sessionmaker=runtime.db.sessionmaker, actor=actor, spec=spec
        )
        taken = []
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                if not taken:
                    await asyncio.sleep(stall_after_first)
                taken.append(chunk)
        return taken

    # Stalled between two files: the snapshot is gone, and so is the export (no export.completed).
    with pytest.raises(DBAPIError):
        await take(["users", "keys"], stall_after_first=2.5)
    assert await _events(harness, "export.completed") == []
    # Stalled after the last read: nothing is lost, the export completes.
    done = await take(["users"], stall_after_first=2.5)
    assert check_manifest(unzip(b"".join(done)), ["users"])
    assert len(await _events(harness, "export.completed")) == 1
