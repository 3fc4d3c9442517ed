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
    expect(page.locator("#f-rate_per_minute")).not_to_have_attribute("aria-invalid", "true")
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


def test_playground_streams_an_answer_counts_its_tokens_and_stops_a_long_one(
    console: Console, page_for: Callable[..., tuple[Page, Person]]
) -> None:
    page, person = page_for("user")
    page.goto(console.url + "/console/playground")
    expect(page.get_by_label("Model").locator("option", has_text="oa-long")).to_have_count(1)
    page.get_by_label("Model").select_option("oa-chat")
    page.get_by_label("System prompt (optional)").fill("Be brief.")
    page.get_by_label("Message").fill("tell me about kestrels")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#pg-status")).to_have_text("Done.")
    answer = page.locator("#pg-log .msg.assistant .msg-text").last.inner_text()
    assert answer.strip()
    # The tokens counted are the gateway's own: the same request through the API reports the same usage.
    key = console.key_for(person)
    same = httpx.post(
        console.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={
            "model": "oa-chat",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "tell me about kestrels"},
            ],
        },
    ).json()
    assert same["choices"][0]["message"]["content"] == answer
    expect(page.locator("#pg-prompt-tokens")).to_have_text(str(same["usage"]["prompt_tokens"]))
    expect(page.locator("#pg-completion-tokens")).to_have_text(str(same["usage"]["completion_tokens"]))
    screenshot(page, "playground-wide")

    # A long answer, stopped while it streams.
    page.get_by_label("Model").select_option("oa-long")
    page.get_by_label("Message").fill("go on at length")
    page.get_by_role("button", name="Send").click()
    streaming = page.locator("#pg-log .msg.assistant .msg-text").last
    expect(streaming).not_to_have_text("")
    expect(page.locator("#pg-status")).to_have_text("Streaming…")
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#pg-status")).to_have_text("Stopped by you.")
    stopped = streaming.inner_text()
    page.wait_for_timeout(500)
    assert streaming.inner_text() == stopped
    assert 0 < len(stopped.split()) < 200
    expect(page.locator("#pg-completion-tokens")).to_have_text("—")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()

    # An API error in its own words.
    page.get_by_label("Model").select_option("oa-error")
    page.get_by_label("Message").fill("fail please")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#pg-status")).to_have_text("Failed.")
    failure = page.locator("#pg-log .msg.error").last.inner_text()
    direct = httpx.post(
        console.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": "oa-error", "messages": [{"role": "user", "content": "fail please"}], "stream": True},
    )
    assert direct.status_code >= 400
    assert direct.json()["error"]["message"] in failure


def test_the_playground_session_needs_its_csrf_header_on_the_fast_path(
    console: Console, page_for: Callable[..., tuple[Page, Person]]
) -> None:
    page, _ = page_for("user", width="narrow")
    page.goto(console.url + "/console/playground")
    body = {"model": "oa-chat", "messages": [{"role": "user", "content": "hi"}]}
    without = page.evaluate(
        """async (body) => {
            const r = await fetch("/v1/chat/completions", {method: "POST", credentials: "same-origin",
                headers: {"content-type": "application/json"}, body: JSON.stringify(body)});
            return [r.status, await r.json()];
        }""",
        body,
    )
    assert without[0] == 403 and without[1]["error"]["code"] == "csrf_failed"
    page.get_by_label("Message").fill("hi")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#pg-status")).to_have_text("Done.")
    expect(page.locator("#pg-log .msg.assistant")).to_have_count(1)
    screenshot(page, "playground-narrow")
