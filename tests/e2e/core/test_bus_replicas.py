"""Two Gatehouse replicas on one PostgreSQL database and one Redis: a change on one is enforced by the other."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.e2e.conftest import two_replicas
from tests.support.server import GatehouseServer

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatehouseServer, GatehouseServer]]:
    """Replica A and replica B sharing PostgreSQL and Redis (with a key prefix of their own)."""
    with two_replicas(tmp_path_factory.mktemp("replicas"), DEMO_UPSTREAM="true") as pair:
        yield pair


def _refused_within(check: Callable[[], int], expected: int, seconds: float) -> float:
    """Seconds until check() returns `expected` (polling), or fail."""
    started = time.perf_counter()
    while True:
        status = check()
        if status == expected:
            return time.perf_counter() - started
        assert time.perf_counter() - started < seconds, f"still {status} after {seconds} s"
        time.sleep(0.01)


def _new_user_key(admin: httpx.Client) -> tuple[int, int, str]:
    user = admin.post("/admin/users", json={"email": f"r-{time.time_ns()}@example.com"}).json()
    key = admin.post(f"/admin/users/{user['id']}/keys", json={"name": "k"}).json()
    return user["id"], key["id"], key["key"]


def test_key_revoked_on_one_replica_is_refused_by_the_other(replicas: tuple[GatehouseServer, GatehouseServer]) -> None:
    a, b = replicas
    with a.client() as admin_a:
        _, key_id, key = _new_user_key(admin_a)
    with b.client(key) as on_b, a.client() as admin_a:
        assert on_b.post("/v1/chat/completions", json=CHAT).status_code == 200  # B has cached the key
        assert admin_a.delete(f"/admin/keys/{key_id}").status_code == 200
        waited = _refused_within(lambda: on_b.post("/v1/chat/completions", json=CHAT).status_code, 401, 1.0)
    assert waited < 1.0


def test_user_disabled_on_one_replica_is_refused_by_the_other(
    replicas: tuple[GatehouseServer, GatehouseServer],
) -> None:
    a, b = replicas
    with a.client() as admin_a:
        user_id, _, key = _new_user_key(admin_a)
        with b.client(key) as on_b:
            assert on_b.get("/v1/models").status_code == 200
            assert admin_a.post(f"/admin/users/{user_id}/disable").status_code == 200
            _refused_within(lambda: on_b.get("/v1/models").status_code, 403, 1.0)
            assert admin_a.post(f"/admin/users/{user_id}/enable").status_code == 200
            _refused_within(lambda: on_b.get("/v1/models").status_code, 200, 1.0)


def test_user_blocked_on_one_replica_is_refused_by_the_other(replicas: tuple[GatehouseServer, GatehouseServer]) -> None:
    a, b = replicas
    with a.client() as admin_a:
        user_id, _, key = _new_user_key(admin_a)
        with b.client(key) as on_b:
            assert on_b.post("/v1/chat/completions", json=CHAT).status_code == 200  # B has cached the key
            assert admin_a.post(f"/admin/users/{user_id}/block", json={"reason": "abuse"}).status_code == 200
            waited = _refused_within(lambda: on_b.post("/v1/chat/completions", json=CHAT).status_code, 403, 1.0)
            assert on_b.post("/v1/chat/completions", json=CHAT).json()["error"]["code"] == "account_blocked"
            assert admin_a.post(f"/admin/users/{user_id}/unblock").status_code == 200
            _refused_within(lambda: on_b.post("/v1/chat/completions", json=CHAT).status_code, 200, 1.0)
    assert waited < 1.0
