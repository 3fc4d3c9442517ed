"""The console on two replicas (PostgreSQL + Redis): a session made on one replica is good on the other, and a
change made through one replica appears live, without a reload, on a page served by the other."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import two_replicas, write_config
from tests.e2e.console.conftest import Console, signed_in
from tests.support.fake_upstream import FakeUpstream
from tests.support.server import GatehouseServer

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture(scope="module")
def replicas(
    fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatehouseServer, GatehouseServer]]:
    workdir: Path = tmp_path_factory.mktemp("console-replicas")
    config = write_config(workdir / "gatehouse.yaml", fake_upstream.url)
    with two_replicas(workdir, GATEHOUSE_CONFIG=str(config), REQUEST_LOG_FLUSH_SECONDS="0.1") as pair:
        yield pair


def test_a_change_on_one_replica_shows_live_on_a_page_of_the_other(
    replicas: tuple[GatehouseServer, GatehouseServer], new_page: Callable[..., Page]
) -> None:
    a, b = Console(replicas[0]), Console(replicas[1])
    operator = a.person("admin")
    page = new_page()
    # Signed in through replica A: the session lives in the shared database, so replica B knows it.
    signed_in(page.context, a, operator)
    page.goto(b.url + "/console/upstreams")
    expect(page.locator("#live-indicator")).to_have_attribute("data-state", "green")
    page.evaluate("window.__sameDocument = true")
    reason = f"maintenance {uuid.uuid4().hex[:8]}"
    with a.admin() as admin:
        upstream = next(u for u in admin.get("/admin/upstreams").json() if u["name"] == "up-openai")
        answer = admin.put(f"/admin/upstreams/{upstream['id']}/override", json={"state": "down", "reason": reason})
        assert answer.status_code == 200, answer.text
    try:
        # Replica B's page shows it, from the feed B relays from Redis: no reload (the marker survives).
        expect(page.locator("main")).to_contain_text(reason, timeout=10_000)
        assert page.evaluate("window.__sameDocument === true")
    finally:
        with a.admin() as admin:
            assert admin.delete(f"/admin/upstreams/{upstream['id']}/override").status_code == 200
    expect(page.locator("main")).not_to_contain_text(reason, timeout=10_000)
