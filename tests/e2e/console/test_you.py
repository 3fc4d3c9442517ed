"""The "You" pages in a real browser: my keys (create, the secret once, revoke), my usage (against quotas, the
30-day chart) and the playground (streamed, stopped, tokens counted)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import openai
import pytest
from playwright.sync_api import Page, expect

from tests.e2e.console.conftest import Console, Person, screenshot


def test_a_key_made_on_the_page_works_is_shown_once_and_stops_working_when_revoked(
    console: Console, page_for: Callable[..., tuple[Page, Person]]
) -> None:
    page, _person = page_for("user")
    page.goto(console.url + "/console/keys")
    expect(page.get_by_text("You have no keys yet.")).to_be_visible()
    page.get_by_label("Name").fill("laptop")
    page.get_by_label("Expires (optional)").fill("2031-01-02T03:04")
    page.get_by_text("Limits (optional)").click()
    page.get_by_label("Requests per minute").fill("0")
    page.get_by_role("button", name="Create key").click()
    # The API's own words, on the field it names.
    expect(page.locator("#new-key .form-error")).to_be_visible()
    expect(page.locator("#f-rate_per_minute")).to_have_attribute("aria-invalid", "true")
    page.get_by_label("Name").fill("laptop")
    page.get_by_label("Requests per minute").fill("120")
    page.get_by_role("button", name="Create key").click()
    created = page.locator("#key-created")
    expect(created).to_be_visible()
    expect(created).to_contain_text("Key laptop created")
    expect(created.get_by_role("button", name="Copy key")).to_be_visible()
    secret = page.locator("#key-secret").inner_text()
    assert len(secret) > 20
    screenshot(page, "keys-wide")

    client = openai.OpenAI(base_url=console.url + "/v1", api_key=secret, max_retries=0)
    answer = client.chat.completions.create(model="oa-chat", messages=[{"role": "user", "content": "hello"}])
    assert answer.choices[0].message.content

    page.goto(console.url + "/console/keys")
    assert secret not in page.content()
    row = page.locator("#keys-table tbody tr", has_text="laptop")
    expect(row).to_contain_text("active")
    expect(row).to_contain_text("2031-01-02 03:04:00 UTC")
    expect(row).to_contain_text("120 requests/min")
    expect(row).to_contain_text(secret[:8])
    # Narrow its limits from the page: the API keeps what was sent.
    row.get_by_text("Narrow limits").click()
    row.get_by_label("Requests per minute").fill("60")
    row.get_by_role("button", name="Save limits").click()
    expect(page.locator("#keys-table tbody tr", has_text="laptop")).to_contain_text("60 requests/min")
    row = page.locator("#keys-table tbody tr", has_text="laptop")
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Revoke laptop").click()
    expect(page.locator("#keys-table tbody tr", has_text="laptop")).to_contain_text("revoked")
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="oa-chat", messages=[{"role": "user", "content": "hello"}])


def test_the_keys_page_fits_a_phone(console: Console, page_for: Callable[..., tuple[Page, Person]]) -> None:
    page, person = page_for("user", width="narrow")
    console.key_for(person, name="phone-key")
    page.goto(console.url + "/console/keys")
    expect(page.locator("#keys-table")).to_contain_text("phone-key")
    expect(page.get_by_role("button", name="Create key")).to_be_visible()
    screenshot(page, "keys-narrow")


def test_usage_shows_today_against_the_quota_and_todays_bar(
    console: Console, page_for: Callable[..., tuple[Page, Person]]
) -> None:
    page, person = page_for("user")
    with console.admin() as admin:
        quota = admin.patch(f"/admin/users/{person.id}", json={"messages_per_day": 8, "tokens_per_day": 5000})
        assert quota.status_code == 200, quota.text
    key = console.key_for(person)
    client = openai.OpenAI(base_url=console.url + "/v1", api_key=key, max_retries=0)
    for _ in range(2):
        client.chat.completions.create(model="oa-chat", messages=[{"role": "user", "content": "count me"}])
    mine = httpx.get(console.url + "/me/usage", headers={"authorization": f"Bearer {key}"}).json()
    assert mine["messages"] == 2 and mine["tokens"] > 0
    tokens_percent = 100.0 * mine["tokens"] / 5000

    # A user's home is their usage.
    page.goto(console.url + "/console")
    expect(page).to_have_url(console.url + "/console/usage")
    expect(page.locator("#today-messages")).to_have_text("2")
    expect(page.locator("#today-tokens")).to_have_text(f"{mine['tokens']:,}")
    quotas = page.locator("#today-quotas")
    expect(quotas).to_contain_text("2 of 8 · 25%")
    expect(quotas.locator("meter").first).to_have_attribute("aria-label", "Messages today: 25.0% used")
    expect(quotas.locator("meter").nth(1)).to_have_attribute("aria-label", f"Tokens today: {tokens_percent:.1f}% used")
    expect(page.locator("#usage-today")).to_contain_text("resets")
    # The 30-day chart: 30 bars, today's the last, with today's count.
    messages_chart = page.locator("figure.chart", has_text="Messages per day")
    expect(messages_chart.locator("rect.bar")).to_have_count(30)
    expect(messages_chart.locator("rect.bar").last.locator("title")).to_have_text(f"{mine['day']}: 2")
    assert float(messages_chart.locator("rect.bar").last.get_attribute("height") or 0) > 0
    assert float(messages_chart.locator("rect.bar").first.get_attribute("height") or 1) == 0
    screenshot(page, "usage-wide")
    narrow, _ = page_for(person=person, width="narrow")
    narrow.goto(console.url + "/console/usage")
    expect(narrow.locator("#today-messages")).to_have_text("2")
    screenshot(narrow, "usage-narrow")
