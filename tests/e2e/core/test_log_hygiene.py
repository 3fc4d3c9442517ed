"""The logs of a full run (at DEBUG, in LOG_FILE and on stderr) hold no password, API key, session cookie, invite
token or message text; every line is JSON with an `event`; gateway lines carry their request and stream ids."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import orjson
import pytest

from gatehouse.auth.access import CSRF_COOKIE, SESSION_COOKIE
from tests.conftest import fresh_database
from tests.e2e.conftest import write_config
from tests.support.fake_upstream import FakeUpstream, reply_text
from tests.support.known_secrets import remember
from tests.support.server import ADMIN_PASSWORD, GatehouseServer, base_env, run_gatehouse

GATEWAY_PATHS = {"/v1/chat/completions", "/v1/embeddings", "/api/chat", "/api/embed", "/api/generate"}


class Secrets:
    """Every value of this run that must stay out of the logs, each registered for the session-wide check too."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def add(self, value: str, what: str) -> str:
        self.values[value] = what
        return remember(value, what)

    def new(self, what: str, prefix: str = "") -> str:
        return self.add(f"{prefix}{secrets.token_hex(12)}", what)

    def message(self, what: str) -> list[dict[str, str]]:
        """A chat with a distinctive user message (and its distinctive fake reply) to look for."""
        text = self.new(what, prefix="marker message text ")
        messages = [{"role": "user", "content": text}]
        self.add(reply_text(messages).strip(), f"the reply to {what}")
        return messages


def _session_of(response: httpx.Response, found: Secrets) -> dict[str, str]:
    """The headers a console sends after this login answer (session cookie, CSRF token), remembered as secrets."""
    assert response.status_code == 200, response.text
    session = found.add(response.cookies[SESSION_COOKIE], "a session cookie")
    csrf = found.add(response.json()["csrf_token"], "a CSRF token")
    return {"cookie": f"{SESSION_COOKIE}={session}; {CSRF_COOKIE}={csrf}", "x-csrf-token": csrf}


def _terminate_a_stream(server: GatehouseServer, key: str, found: Secrets) -> str:
    """Start a long stream, end it as an operator; its id."""
    body = {"model": "oa-long", "messages": found.message("a terminated stream's message"), "stream": True}
    received: list[bytes] = []

    def read() -> None:
        with server.client(key) as client, client.stream("POST", "/v1/chat/completions", json=body) as response:
            received.extend(response.iter_bytes())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 10
    with server.client() as admin:
        while True:
            live = [s for s in admin.get("/admin/streams").json()["items"] if s["model"] == "oa-long" and s["tokens"]]
            if live:
                break
            assert time.monotonic() < deadline, "the stream never showed up"
            time.sleep(0.05)
        ended = admin.post(f"/admin/streams/{live[0]['id']}/terminate", json={"reason": "log hygiene"})
        assert ended.status_code == 200, ended.text
    reader.join(10)
    assert b"terminated_by_operator" in b"".join(received)
    return str(live[0]["id"])


def _drive(server: GatehouseServer, found: Secrets) -> dict[str, str]:
    """A broad run through every credential path and the gateway; returns ids to look for in the logs."""
    found.add(ADMIN_PASSWORD, "the admin's password")
    found.add(server.admin_key, "the admin's API key")
    user_password = found.new("a user's password", prefix="Pw-")
    wrong_password = found.new("a mistyped password", prefix="Pw-")
    invitee_password = found.new("an invitee's password", prefix="Pw-")
    ids: dict[str, str] = {}
    with server.client() as admin, httpx.Client(base_url=server.url, timeout=30) as anonymous:
        user = admin.post("/admin/users", json={"email": "hygiene@example.com", "password": user_password}).json()
        # Logins: a good one (a cookie session) and a bad one.
        assert anonymous.post("/auth/login", json={"email": user["email"], "password": wrong_password}).status_code
        console = _session_of(
            anonymous.post("/auth/login", json={"email": user["email"], "password": user_password}), found
        )
        anonymous.cookies.clear()
        assert anonymous.get("/me", headers=console).status_code == 200
        created = anonymous.post("/me/keys", json={"name": "laptop"}, headers=console)
        assert created.status_code == 201, created.text
        console_key = found.add(created.json()["key"], "an API key made in the console")
        revoked = anonymous.delete(f"/me/keys/{created.json()['id']}", headers=console)
        assert revoked.status_code == 200, revoked.text
        assert anonymous.get("/v1/models", headers={"authorization": f"Bearer {console_key}"}).status_code == 401
        bad_key = found.new("a made-up API key", prefix="gh_")
        assert anonymous.get("/v1/models", headers={"authorization": f"Bearer {bad_key}"}).status_code == 401
        assert anonymous.post("/auth/logout", headers=console).status_code == 204
        # An API key for the user, made by the admin.
        key = found.add(admin.post(f"/admin/users/{user['id']}/keys", json={"name": "k"}).json()["key"], "an API key")
        # An invite, a sign-up, the invitee's login.
        invite = admin.post("/admin/invites", json={}).json()
        token = found.add(invite["token"], "an invite token")
        signup = {"email": "invitee@example.com", "password": invitee_password, "invite": token}
        assert anonymous.post("/auth/signup", json=signup).status_code == 201
        _session_of(anonymous.post("/auth/login", json={"email": signup["email"], "password": invitee_password}), found)
        anonymous.cookies.clear()
        # A user over quota.
        capped = admin.post("/admin/users", json={"email": "capped@example.com"}).json()
        assert admin.patch(f"/admin/users/{capped['id']}", json={"messages_per_day": 0}).status_code == 200
        capped_key = admin.post(f"/admin/users/{capped['id']}/keys", json={"name": "k"}).json()["key"]
        found.add(capped_key, "an API key over quota")
        refused = httpx.post(
            server.url + "/v1/chat/completions",
            json={"model": "oa-chat", "messages": found.message("a refused message")},
            headers={"authorization": f"Bearer {capped_key}"},
        )
        assert refused.status_code == 429, refused.text

    # The gateway, through both clients, both translations, streamed and not.
    chat = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0).chat.completions
    for prefix in ("oa", "ol"):
        chat.create(model=f"{prefix}-chat", messages=found.message(f"an OpenAI chat via {prefix}"))  # type: ignore[arg-type]
        stream = chat.create(
            model=f"{prefix}-chat",
            messages=found.message(f"an OpenAI stream via {prefix}"),  # type: ignore[arg-type]
            stream=True,
        )
        assert list(stream)
        embedded = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0).embeddings.create(
            model=f"{prefix}-embed", input=found.new("an embedding input", prefix="marker embedding text ")
        )
        assert embedded.data
        client = ollama.Client(host=server.url, headers={"authorization": f"Bearer {key}"})
        client.chat(model=f"{prefix}-chat", messages=found.message(f"an Ollama chat via {prefix}"))
        assert list(client.chat(model=f"{prefix}-chat", messages=found.message("an Ollama stream"), stream=True))
        client.embed(model=f"{prefix}-embed", input=found.new("an Ollama embedding", prefix="marker embedding text "))
    with server.client(key) as client:
        tagged = client.post(
            "/v1/chat/completions",
            json={"model": "oa-chat", "messages": found.message("a tagged chat")},
            headers={"x-request-id": "hygiene-tagged"},
        )
        assert tagged.status_code == 200, tagged.text
        failing = client.post(
            "/v1/chat/completions",
            json={"model": "oa-error", "messages": found.message("a failing upstream's message")},
            headers={"x-request-id": "hygiene-failing"},
        )
        assert failing.status_code >= 500, failing.text
        broken = client.post(
            "/api/chat", json={"model": "ol-midfail", "messages": found.message("a broken stream"), "stream": True}
        )
        assert broken.status_code == 200
    ids["terminated"] = _terminate_a_stream(server, key, found)
    return ids


@pytest.fixture
def logged_run(
    backend: str, fake_upstream: FakeUpstream, tmp_path: Path
) -> Iterator[tuple[GatehouseServer, Path, Secrets, dict[str, str]]]:
    """A server logging at DEBUG to LOG_FILE (and stderr), driven through a broad run, then stopped."""
    found = Secrets()
    log_file = tmp_path / "logs" / "gatehouse.log"
    with fresh_database(backend, tmp_path) as database_url:
        env = base_env(
            database_url,
            tmp_path / "data",
            GATEHOUSE_CONFIG=str(write_config(tmp_path / "gatehouse.yaml", fake_upstream.url)),
            LOG_FILE=str(log_file),
            LOG_LEVEL="DEBUG",
            UPSTREAM_READ_TIMEOUT="2",
            REQUEST_LOG_FLUSH_SECONDS="0.1",
        )
        with run_gatehouse(env, workdir=tmp_path) as server:
            ids = _drive(server, found)
        yield server, log_file, found, ids


def test_a_full_run_logs_no_secret_and_every_line_is_json(
    logged_run: tuple[GatehouseServer, Path, Secrets, dict[str, str]],
) -> None:
    server, log_file, found, ids = logged_run
    file_text, stderr_text = log_file.read_text(), server.log_text()
    for name, text in (("LOG_FILE", file_text), ("stderr", stderr_text)):
        leaked = [what for value, what in found.values.items() if value in text]
        assert leaked == [], f"{name} holds {leaked}"

    lines: list[dict[str, Any]] = []
    for name, text in (("LOG_FILE", file_text), ("stderr", stderr_text)):
        for number, raw in enumerate(text.splitlines(), 1):
            line = orjson.loads(raw)  # every line is JSON...
            assert isinstance(line.get("event"), str), f"{name}:{number} has no event: {raw}"  # ... with an event
            if name == "LOG_FILE":
                lines.append(line)
    assert len(lines) == len(stderr_text.splitlines())  # the same lines in both

    access = [line for line in lines if line["event"] == "request"]
    assert access and all(line.get("request_id") for line in access)
    served = [line for line in access if line["path"] in GATEWAY_PATHS and line["status"] == 200]
    assert len(served) >= 10
    for line in served:
        assert line.get("stream_id") and line.get("user_id"), line
    by_request = {line["request_id"]: line for line in access}
    assert by_request["hygiene-tagged"]["stream_id"]
    assert ids["terminated"] in {line.get("stream_id") for line in served}
    # Lines logged while a gateway request runs carry its ids too.
    failing = [line for line in lines if line.get("request_id") == "hygiene-failing"]
    assert any(line["event"] != "request" for line in failing), failing
    assert all(line.get("stream_id") == by_request["hygiene-failing"]["stream_id"] for line in failing)
