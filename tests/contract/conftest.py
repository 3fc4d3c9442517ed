"""Contract fixtures: one real `gatehouse serve` per backend, routing to the fake upstream, and the three callers
the document is fuzzed as (the bootstrap superadmin, an invited user, nobody)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.conftest import BACKENDS, fresh_database
from tests.e2e.conftest import UPSTREAM_KEY, write_config
from tests.support.fake_upstream import FakeUpstream, run_fake_upstream
from tests.support.server import GatehouseServer, base_env, run_gatehouse

USER_EMAIL = "contract-user@example.com"
USER_PASSWORD = "contract-user-password-1"


@dataclass(frozen=True)
class Callers:
    """The server and the keys the fuzzer uses."""

    server: GatehouseServer
    admin_key: str
    user_key: str


@pytest.fixture(scope="session")
def contract_upstream() -> Iterator[FakeUpstream]:
    """The fake upstream (both protocols), so the gateway's models exist."""
    with run_fake_upstream(api_key=UPSTREAM_KEY) as upstream:
        yield upstream


def invited_user_key(client: httpx.Client) -> str:
    """A plain user who signed up with an invite, and an API key they made for themselves."""
    invite = client.post("/admin/invites", json={"email": USER_EMAIL, "role": "user"})
    assert invite.status_code == 201, invite.text
    anonymous = httpx.Client(base_url=str(client.base_url), timeout=30)
    signup = anonymous.post(
        "/auth/signup", json={"invite": invite.json()["token"], "email": USER_EMAIL, "password": USER_PASSWORD}
    )
    assert signup.status_code == 201, signup.text
    login = anonymous.post("/auth/login", json={"email": USER_EMAIL, "password": USER_PASSWORD})
    assert login.status_code == 200, login.text
    csrf = login.json().get("csrf_token") or anonymous.cookies.get("gatehouse_csrf", "")
    key = anonymous.post("/me/keys", json={"name": "contract"}, headers={"x-csrf-token": csrf})
    assert key.status_code == 201, key.text
    return str(key.json()["key"])


@pytest.fixture(scope="module", params=BACKENDS)
def callers(
    request: pytest.FixtureRequest, contract_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callers]:
    """A server on a fresh database of each backend, with an invited user; the per-address limit on
    unauthenticated requests raised (every fuzzed request comes from 127.0.0.1)."""
    backend = str(request.param)
    workdir = tmp_path_factory.mktemp(f"contract-{backend}")
    with fresh_database(backend, workdir) as database_url:
        config = write_config(workdir / "gatehouse.yaml", contract_upstream.url)
        env = base_env(
            database_url,
            workdir / "data",
            GATEHOUSE_CONFIG=str(config),
            UPSTREAM_READ_TIMEOUT="2",
            RATE_LIMIT_IP_PER_MINUTE="100000",
        )
        with run_gatehouse(env, workdir=workdir) as server, server.client() as client:
            yield Callers(server=server, admin_key=server.admin_key, user_key=invited_user_key(client))
