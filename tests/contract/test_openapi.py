"""The OpenAPI document is the contract, checked against a real server on SQLite and PostgreSQL.

- Every operation, called once by nobody, by a plain user and by the superadmin with no parameters it does not
  need: the status is one the document lists for it (every route with a role answers a documented 401 to
  nobody; a user gets a documented 403 where a higher role is needed).
- Schemathesis (examples, coverage, fuzzing and stateful phases, every check but the few exceptions
  schemathesis.toml explains) as the superadmin over the whole document, and as the plain user over every
  operation the user can reach (the rest answers them 403, checked above). Any failure fails the test with
  schemathesis' report, each failure with its curl to reproduce it.

A new route is covered as soon as it is in the document. The runs are bounded by examples per operation and a
fixed seed, so they take the same time and find the same things every time."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.contract.conftest import Callers

# Every check, with the few exceptions it explains (what OpenAPI cannot say); see the file.
CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = 19
# Examples per operation and phase: the superadmin reaches every service; the user's operations are few.
MAX_EXAMPLES = {"user": 10, "admin": 10}
METHODS = ("get", "put", "post", "delete", "patch")


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(METHOD, path, operation) for every operation of the document."""
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def bare_call(client: httpx.Client, method: str, path: str) -> tuple[int, str]:
    """The operation with 1 for every path parameter and no body or query (enough to reach authentication): its
    status and the start of its body (none of an event stream, which would not end)."""
    url = re.sub(r"\{[^}]+\}", "1", path)
    with client.stream(method, url, json={} if method != "GET" else None) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return response.status_code, ""
        return response.status_code, response.read().decode(errors="replace")[:200]


def walk(callers: Callers, key: str | None) -> tuple[list[str], set[str]]:
    """Each operation called once with `key` (None: no credentials): the statuses the document does not list,
    and the labels of the operations that did not refuse the caller (401/403)."""
    headers = {"authorization": f"Bearer {key}"} if key else {}
    undocumented, reachable = [], set()
    with httpx.Client(base_url=callers.server.url, headers=headers, timeout=30) as client:
        document = client.get("/openapi.json").json()
        for method, path, operation in operations(document):
            if method == "DELETE" and key == callers.admin_key:
                continue  # the superadmin's deletions belong to the fuzzing run, after the user's
            status, body = bare_call(client, method, path)
            if str(status) not in operation["responses"]:
                undocumented.append(f"{method} {path}: {status} {body}")
            if status not in (401, 403):
                reachable.add(f"{method} {path}")
    return undocumented, reachable


def test_anonymous_callers_get_a_documented_401(callers: Callers) -> None:
    """Nobody: every operation with a role answers 401, and lists it; the public ones answer what they list."""
    undocumented, reachable = walk(callers, None)
    assert undocumented == []
    with httpx.Client(base_url=callers.server.url) as client:
        document = client.get("/openapi.json").json()
    # Behind a role: 401 for no or a wrong credential and 403 for a role too low (a public route such as
    # /auth/login may list a 401 of its own, never a 403).
    protected = {f"{m} {p}" for m, p, op in operations(document) if {"401", "403"} <= set(op["responses"])}
    assert protected, "no operation documents a 401"
    assert reachable & protected == set(), "answered without credentials"


def test_a_key_cannot_revoke_itself(callers: Callers) -> None:
    """The product rule the fuzzing relies on (the superadmin's run would otherwise revoke its own key): 409
    key_in_use, and the key still works."""
    with callers.server.client(callers.user_key) as client:
        mine = client.get("/me/keys")
        assert mine.status_code == 200, mine.text
        (own,) = [k for k in mine.json() if callers.user_key.startswith(k["prefix"])]
        refused = client.delete(f"/me/keys/{own['id']}")
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "key_in_use"
        assert client.get("/me").status_code == 200


def schemathesis_run(
    url: str, *, key: str, max_examples: int, include: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`schemathesis run` over the whole document (`include`: only these operations)."""
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(CONFIG),
        "run",
        f"{url}/openapi.json",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(max_examples),
        "--seed",
        str(SEED),
        # One worker: on CPython 3.11 two threads parsing source at once (hypothesis describes its strategies'
        # lambdas with ast.parse) can fail with "AST constructor recursion depth mismatch", a runtime error of the
        # tool rather than of Gatehouse (seen on /api/embed's generation).
        "--workers",
        "1",
        "--no-color",
        "--header",
        f"Authorization: Bearer {key}",
    ]
    if include is not None:
        command += ["--include-name-regex", include]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)


def assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    """No failure and no error in a schemathesis run, which tested something."""
    summary = re.findall(r"^=+ .* =+$", result.stdout, flags=re.MULTILINE)
    assert result.returncode == 0, f"{summary[-1:]}\n{result.stdout[-60000:]}\n{result.stderr[-5000:]}"
    assert re.search(r"Tested: [1-9]", result.stdout), result.stdout


def test_the_user_keeps_the_contract(callers: Callers) -> None:
    """A plain user: a documented 403 wherever a higher role is needed, and the operations they reach fuzzed."""
    undocumented, reachable = walk(callers, callers.user_key)
    assert undocumented == []
    assert {"GET /me", "GET /me/keys", "POST /me/keys"} <= reachable
    include = "^(" + "|".join(re.escape(label) for label in sorted(reachable)) + ")$"
    assert_clean(
        schemathesis_run(callers.server.url, key=callers.user_key, max_examples=MAX_EXAMPLES["user"], include=include)
    )


def test_the_superadmin_keeps_the_contract(callers: Callers) -> None:
    """The superadmin over the whole document. Last: it changes the server's state (blocks, deletions...)."""
    undocumented, _ = walk(callers, callers.admin_key)
    assert undocumented == []
    assert_clean(schemathesis_run(callers.server.url, key=callers.admin_key, max_examples=MAX_EXAMPLES["admin"]))
