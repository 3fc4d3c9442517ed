"""Operate pages in a real browser: the dashboard, upstreams, live streams and health, each asserting what the page
shows; live changes are seen without reloading, through the live event feed."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import UPSTREAM_KEY
from tests.e2e.console.conftest import Console, Person, screenshot
from tests.support.fake_upstream import FakeUpstream, run_fake_upstream

LIVE = re.compile(r"Live: connected")


@pytest.fixture(scope="module")
def slow_upstream() -> Iterator[FakeUpstream]:
    """A fake upstream whose every token takes 0.1 s (fake-long: 200 tokens, 20 s): a stream to watch and end."""
    with run_fake_upstream(token_delay=0.1) as upstream:
        yield upstream


def _provision(console: Console, name: str, base_url: str, models: list[str], key: str | None = None) -> dict[str, Any]:
    body = {"name": name, "kind": "openai", "base_url": base_url, "models": models, "api_key": key}
    with console.admin() as admin:
        made = admin.post("/admin/upstreams", json={k: v for k, v in body.items() if v is not None})
    assert made.status_code == 201, made.text
    return dict(made.json())


def _unique(prefix: str) -> str:
    return f"{prefix}-{os.urandom(3).hex()}"


def _connected(page: Page) -> None:
    expect(page.locator("#live-indicator")).to_have_attribute("data-state", "green")
    expect(page.locator("#live-indicator .label")).to_have_text(LIVE)


def _mark(page: Page) -> None:
    """Mark the document: the mark survives only as long as the page is not reloaded."""
    page.evaluate("window.__notReloaded = true")


def _not_reloaded(page: Page) -> None:
    assert page.evaluate("window.__notReloaded === true"), "the page was reloaded"


def test_health_page_is_readable(console: Console, backend: str, page_for: Callable[..., tuple[Page, Person]]) -> None:
    page, _ = page_for("monitor")
    page.goto(console.url + "/console/health")
    kind = "sqlite" if backend == "sqlite" else "postgresql"
    expect(page.locator("#health-db-kind")).to_have_text(kind)
    expect(page.locator("#health-db-status")).to_have_text("ok")
    expect(page.locator("#health-migrations")).to_contain_text("ok at ")
    expect(page.locator("#health-status .badge")).to_have_text(re.compile(r"^(ok|degraded)$"))
    expect(page.locator("#health-version")).not_to_be_empty()
    expect(page.locator('tr[data-upstream="up-openai"]')).to_contain_text("openai")
    screenshot(page, "health-wide")
    narrow, _ = page_for("monitor", width="narrow")
    narrow.goto(console.url + "/console/health")
    expect(narrow.locator("#health-db-kind")).to_have_text(kind)
    screenshot(narrow, "health-narrow")


def test_provision_shows_the_field_error_then_edit_saves(
    console: Console, fake_upstream: FakeUpstream, page_for: Callable[..., tuple[Page, Person]]
) -> None:
    page, _ = page_for("admin")
    page.goto(console.url + "/console/upstreams")
    name = _unique("op-new")
    form = page.locator("#provision")
    form.get_by_label("Name").fill(name)
    form.get_by_label("Kind").select_option("openai")
    form.get_by_label("Base URL").fill("http://127.0.0.1:9")  # nothing answers there
    form.get_by_role("button", name="Provision").click()
    expect(form.locator(".form-error")).to_contain_text("did not answer")
    expect(form.get_by_label("Base URL")).to_have_attribute("aria-invalid", "true")
    form.get_by_label("Base URL").fill("not a url")
    form.get_by_label("Save without checking").check()
    form.get_by_role("button", name="Provision").click()
    expect(form.locator(".form-error")).to_contain_text("base_url")
    form.get_by_label("Base URL").fill("http://127.0.0.1:9")
    form.get_by_role("button", name="Provision").click()
    card = page.locator(f'section.upstream[data-upstream="{name}"]')
    expect(card.locator("[data-base-url]")).to_have_text("http://127.0.0.1:9")
    expect(page.locator("#toasts")).to_contain_text("Upstream provisioned")

    card.locator("summary", has_text="Edit").click()
    card.get_by_label("Base URL").fill(fake_upstream.url)
    card.get_by_label("Models").fill("fake-chat, fake-slow")
    card.get_by_role("button", name="Save").click()
    # The fake wants its key: the check fails, said on the form, until the key is given.
    expect(card.locator('form[data-method="PATCH"] .form-error')).to_contain_text("did not answer")
    card.get_by_label("New API key").fill(UPSTREAM_KEY)
    card.get_by_role("button", name="Save").click()
    card = page.locator(f'section.upstream[data-upstream="{name}"]')
    expect(card.locator("[data-base-url]")).to_have_text(fake_upstream.url)
    expect(card).to_contain_text("fake-chat, fake-slow")
    screenshot(page, "upstreams-wide")

    # A monitor sees it, and no control the API would refuse them.
    watcher, _ = page_for("monitor", width="narrow")
    watcher.goto(console.url + "/console/upstreams")
    expect(watcher.locator(f'section.upstream[data-upstream="{name}"] [data-base-url]')).to_have_text(fake_upstream.url)
    expect(watcher.locator("#upstreams-readonly")).to_be_visible()
    expect(watcher.locator("main form[data-api]")).to_have_count(0)  # no override, edit, delete or provision
    screenshot(watcher, "upstreams-narrow")


def test_an_override_shows_live_on_the_upstreams_page_and_the_dashboard(
    console: Console, fake_upstream: FakeUpstream, page_for: Callable[..., tuple[Page, Person]]
) -> None:
    name = _unique("op-live")
    made = _provision(console, name, fake_upstream.url, ["fake-chat"], UPSTREAM_KEY)
    admin_page, admin = page_for("admin")
    watcher, _ = page_for("monitor")  # the upstreams page, never reloaded
    dashboard, _ = page_for("monitor")
    watcher.goto(console.url + "/console/upstreams")
    dashboard.goto(console.url + "/console/dashboard")
    admin_page.goto(console.url + "/console/upstreams")
    for page in (watcher, dashboard, admin_page):
        _connected(page)
    _mark(watcher)
    _mark(dashboard)
    tile = dashboard.locator(f'#tile-upstreams li[data-upstream="{name}"] .badge')
    watched = watcher.locator(f'section.upstream[data-upstream="{name}"]')
    expect(tile).not_to_have_text("down")
    expect(watched.locator("[data-state] .badge")).not_to_have_text("down")

    card = admin_page.locator(f"#upstream-{made['id']}")
    card.locator("summary", has_text="Override").click()
    card.get_by_label("State").select_option("down")
    card.get_by_label("Reason").fill("maintenance window")
    card.get_by_role("button", name="Set override").click()
    expect(admin_page.locator(f"#upstream-{made['id']} [data-override]")).to_contain_text("maintenance window")

    # The other pages change by themselves.
    expect(watched.locator("[data-state] .badge")).to_have_text("down")
    expect(watched.locator("[data-override]")).to_contain_text(f"“maintenance window” by {admin.email}")
    expect(tile).to_have_text("down")
    _connected(dashboard)
    _not_reloaded(watcher)
    _not_reloaded(dashboard)
    screenshot(dashboard, "dashboard-wide")

    admin_page.locator(f"#upstream-{made['id']}").get_by_role("button", name="Clear override").click()
    expect(watched.locator("[data-override]")).to_contain_text("none")
    expect(tile).not_to_have_text("down")
    _not_reloaded(dashboard)


def test_the_indicator_is_not_green_when_the_feed_cannot_connect(
    console: Console, page_for: Callable[..., tuple[Page, Person]]
) -> None:
    page, _ = page_for("monitor", width="narrow")
    page.route("**/admin/events*", lambda route: route.abort())
    page.goto(console.url + "/console/dashboard")
    label = page.locator("#live-indicator .label")
    expect(label).to_have_text(re.compile(r"Live: (reconnecting|disconnected)"))
    expect(page.locator("#live-indicator")).to_have_attribute("data-state", re.compile(r"^(amber|red)$"))
    expect(page.locator("#tile-rpm .value")).not_to_be_empty()
    screenshot(page, "dashboard-narrow")


def test_terminate_a_stream_from_the_page(
    console: Console, slow_upstream: FakeUpstream, page_for: Callable[..., tuple[Page, Person]]
) -> None:
    _provision(console, _unique("op-slow"), slow_upstream.url, ["fake-long"])
    user = console.person("user")
    key = console.key_for(user)
    outcome: dict[str, Any] = {"chunks": 0}

    def stream() -> None:
        client = openai.OpenAI(base_url=console.url + "/v1", api_key=key, max_retries=0, timeout=60)
        try:
            for chunk in client.chat.completions.create(
                model="fake-long", messages=[{"role": "user", "content": "tell me a long story"}], stream=True
            ):
                if chunk.choices and chunk.choices[0].delta.content:
                    outcome["chunks"] += 1
            outcome["ended"] = "normally"
        except openai.APIError as exc:
            outcome["error"] = exc

    page, _ = page_for("monitor")
    page.goto(console.url + "/console/streams")
    _connected(page)
    _mark(page)
    worker = threading.Thread(target=stream, daemon=True)
    worker.start()
    try:
        row = page.locator("#streams-table tbody tr", has_text=user.email)
        expect(row).to_be_visible()  # appeared live
        expect(row).to_contain_text("fake-long")
        _not_reloaded(page)
        # Tokens so far go up while it runs (re-read every few seconds).
        expect(row.locator("[data-tokens]")).not_to_have_text("0", timeout=12_000)
        screenshot(page, "streams-wide")
        row.locator("summary", has_text="Terminate").click()
        row.get_by_label("Reason").fill("runaway request")
        row.get_by_role("button", name="Terminate this request").click()
        expect(page.locator("#streams-table")).not_to_contain_text(user.email)
    finally:
        worker.join(timeout=30)
    assert not worker.is_alive()
    assert "ended" not in outcome, outcome
    error = outcome["error"]
    assert "runaway request" in str(error) or "terminated" in str(error).lower(), error
    assert 0 < outcome["chunks"] < 200
    narrow, _ = page_for("monitor", width="narrow")
    narrow.goto(console.url + "/console/streams")
    expect(narrow.locator("#streams-count")).to_contain_text("in flight")
    screenshot(narrow, "streams-narrow")


def test_the_dashboard_shows_traffic_and_is_light(
    console: Console, page_for: Callable[..., tuple[Page, Person]]
) -> None:
    user = console.person("user")
    with console.server.client(console.key_for(user)) as client:
        for _ in range(3):
            answer = client.post(
                "/v1/chat/completions", json={"model": "oa-chat", "messages": [{"role": "user", "content": "hi"}]}
            )
            assert answer.status_code == 200, answer.text
    page, _ = page_for("monitor")
    sizes: list[int] = []

    def counted(response: Any) -> None:
        if "/admin/events" in response.url:
            return  # the live feed streams for as long as the page is open
        try:
            sizes.append(len(response.body()))
        except Exception:  # a body that is gone (a redirect)
            sizes.append(0)

    page.on("response", counted)
    page.goto(console.url + "/console/dashboard?days=7")
    page.wait_for_load_state("load")
    # The requests just made are in the charts' totals (the request log is flushed every 0.1 s here).
    expect(page.locator("#chart-totals")).to_contain_text(re.compile(r"^[1-9][\d,]* requests"))
    expect(page.locator("figure.chart")).to_have_count(4)
    expect(page.locator("figure.chart svg rect.bar").first).to_be_attached()
    expect(page.locator("#f-days")).to_have_value("7")
    # First contentful paint: the paint entries, waited for (a headless browser reports them once it has painted).
    paint = page.evaluate(
        """() => new Promise(done => {
            new PerformanceObserver(list => {
                const fcp = list.getEntries().find(e => e.name === 'first-contentful-paint');
                if (fcp) done(fcp.startTime);
            }).observe({type: 'paint', buffered: true});
            setTimeout(() => done(null), 5000);
        })"""
    )
    transferred = page.evaluate(
        "performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))"
        ".filter(e => !e.name.includes('/admin/events')).reduce((s, e) => s + (e.transferSize || 0), 0)"
    )
    body_bytes = sum(sizes)
    print(
        f"\ndashboard first load: {body_bytes} bytes of bodies, {transferred} bytes transferred, "
        f"first contentful paint {paint} ms"
    )
    assert 0 < body_bytes < 300 * 1024
    assert transferred < 300 * 1024
    assert paint is not None and paint > 0

    # The window selector reads the charts again over another window.
    page.get_by_label("Window").select_option("1")
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"/console/dashboard\?days=1$"))
    expect(page.locator("#chart-totals")).to_contain_text("per hour")
