"""The Govern pages in a real browser: users (block, role and quotas, delete with export first), invites, groups and
model access, prices, rate limits. Each test asserts what the page shows, and what the API then does."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import openai
import pytest
from playwright.sync_api import Page, expect

from tests.e2e.console.conftest import Console, Person, screenshot

MODEL = "oa-chat"


def client(console: Console, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=console.url + "/v1", api_key=key, max_retries=0, timeout=20)


def chat(console: Console, key: str) -> str:
    answer = client(console, key).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    return answer.choices[0].message.content or ""


def refused(console: Console, key: str) -> openai.PermissionDeniedError:
    with pytest.raises(openai.PermissionDeniedError) as caught:
        chat(console, key)
    return caught.value


def code_of(error: openai.APIStatusError) -> str:
    body = error.body
    assert isinstance(body, dict), body
    inner = body.get("error", body)
    return str(inner.get("code") if isinstance(inner, dict) else inner)


def accept_dialogs(page: Page) -> None:
    page.on("dialog", lambda dialog: dialog.accept())


def test_a_monitor_blocks_a_user_until_a_time_and_unblocks_them(
    console: Console, page_for: Callable[..., tuple[Page, Person]]
) -> None:
    target = console.person("user")
    key = console.key_for(target)
    assert chat(console, key)
    page, _ = page_for("monitor")
    page.goto(f"{console.url}/console/users?q={target.email}")
    row = page.locator(f'tr[data-user="{target.email}"]')
    expect(row).to_have_count(1)
    expect(row.locator(".badge.blocked")).to_have_count(0)
    row.get_by_text("Block…").click()
    row.get_by_label("Reason").fill("abuse ticket 42")
    until = (datetime.now(UTC) + timedelta(days=2)).replace(second=0, microsecond=0)
    row.get_by_label("Until").fill(until.strftime("%Y-%m-%dT%H:%M"))
    row.get_by_role("button", name=f"Block {target.email}").click()
    row = page.locator(f'tr[data-user="{target.email}"]')
    expect(row.locator(".badge.blocked")).to_have_text("blocked")
    expect(row).to_contain_text(until.strftime("until %Y-%m-%d %H:%M:00 UTC"))
    screenshot(page, "users-wide")
    assert code_of(refused(console, key)) == "account_blocked"

    # The monitor sees the user's page without the controls only an admin has.
    page.goto(f"{console.url}/console/users/{target.id}")
    expect(page.locator("#user-status")).to_contain_text("blocked")
    expect(page.get_by_text("abuse ticket 42")).to_be_visible()
    expect(page.get_by_role("heading", name="Role and daily quotas")).to_have_count(0)
    expect(page.get_by_role("button", name=f"Delete or anonymise {target.email}")).to_have_count(0)
    expect(page.get_by_role("button", name="Disable")).to_have_count(0)
    page.get_by_role("button", name="Unblock").click()
    expect(page.locator("#user-status .badge.blocked")).to_have_count(0)
    assert chat(console, key)

    admin_page, _ = page_for("admin")
    admin_page.goto(f"{console.url}/console/users/{target.id}")
    expect(admin_page.get_by_role("heading", name="Role and daily quotas")).to_be_visible()
    expect(admin_page.get_by_role("button", name=f"Delete or anonymise {target.email}")).to_be_visible()
    expect(admin_page.get_by_role("button", name="Disable")).to_be_visible()


def test_an_invite_link_is_shown_once_and_opens_the_sign_up_page(
    console: Console, page_for: Callable[..., tuple[Page, Person]], new_page: Callable[..., Page]
) -> None:
    page, _ = page_for("admin")
    page.goto(console.url + "/console/invites")
    email = f"invitee-{datetime.now(UTC).timestamp():.0f}@example.com"
    page.get_by_label("Email (optional").fill(email)
    page.get_by_label("Max uses").fill("2")
    page.get_by_role("button", name="Create invite").click()
    link_box = page.get_by_label("Sign-up link (shown once)")
    expect(link_box).to_be_visible()
    link = link_box.input_value()
    assert link.startswith(f"{console.url}/signup?invite="), link
    expect(page.get_by_role("button", name="Copy link")).to_be_visible()
    screenshot(page, "invites-wide")
    page.reload()
    expect(page.locator("#invite-created")).to_be_hidden()
    row = page.locator("tr", has_text=email)
    expect(row).to_contain_text("0 / 2")
    expect(row.locator(".badge").nth(1)).to_have_text("active")
    assert link.split("invite=")[1] not in page.content()  # never re-displayed

    stranger = new_page("narrow")
    stranger.goto(link)
    expect(stranger.get_by_role("button", name="Create account")).to_be_visible()

    # Revoking it from the list: its status changes.
    accept_dialogs(page)
    row.get_by_role("button", name="Revoke").click()
    expect(page.locator("tr", has_text=email).locator(".badge").nth(1)).to_have_text("revoked")


def test_role_and_quotas_change_and_the_bars_show_the_usage(
    console: Console, page_for: Callable[..., tuple[Page, Person]]
) -> None:
    target = console.person("user")
    key = console.key_for(target)
    for _ in range(3):
        chat(console, key)
    page, _ = page_for("admin")
    page.goto(f"{console.url}/console/users/{target.id}")
    change = page.get_by_role("region", name="Role and daily quotas")
    change.get_by_label("Role", exact=True).select_option("monitor")
    change.get_by_label("Messages per day").fill("12")
    change.get_by_label("Tokens per day").fill("")
    change.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#user-role")).to_have_text("monitor")
    usage = page.locator("#user-usage")
    expect(usage.locator(".usage-bar").first).to_contain_text("3 of 12 · 25%")
    expect(usage.locator("meter").first).to_have_attribute("value", "25.0")
    expect(usage.locator(".usage-bar").nth(1)).to_contain_text("(no limit)")

    page.goto(f"{console.url}/console/users?q={target.email}&role=monitor")
    row = page.locator(f'tr[data-user="{target.email}"]')
    expect(row).to_contain_text("monitor")
    expect(row.locator(".usage-bar").first).to_contain_text("3 of 12 · 25%")
    chat(console, key)
    page.reload()
    expect(page.locator(f'tr[data-user="{target.email}"] .usage-bar').first).to_contain_text("4 of 12 · 33%")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(page, "users-narrow")
    # A filter that excludes them: they are not listed.
    page.goto(f"{console.url}/console/users?q={target.email}&role=user")
    expect(page.get_by_text("No user matches.")).to_be_visible()


def test_delete_a_user_with_an_export_first(console: Console, page_for: Callable[..., tuple[Page, Person]]) -> None:
    target = console.person("user")
    chat(console, console.key_for(target))
    page, _ = page_for("admin")
    accept_dialogs(page)
    page.goto(f"{console.url}/console/users/{target.id}")
    with page.expect_download() as downloading:
        page.get_by_role("button", name="Export first (ZIP)").click()
    download = downloading.value
    assert download.suggested_filename.endswith(".zip"), download.suggested_filename
    with zipfile.ZipFile(download.path()) as archive:
        names = archive.namelist()
    assert "manifest.json" in names and any(n.startswith("users") for n in names), names
    page.get_by_label("Mode").select_option("delete")
    page.get_by_label("Reason (for the audit log)").fill("GDPR request 7")
    page.get_by_role("button", name=f"Delete or anonymise {target.email}").click()
    expect(page).to_have_url(console.url + "/console/users")
    page.goto(f"{console.url}/console/users?q={target.email}")
    expect(page.get_by_text("No user matches.")).to_be_visible()


def test_a_group_rule_denies_a_model_and_the_check_tool_says_so(
    console: Console, page_for: Callable[..., tuple[Page, Person]]
) -> None:
    member = console.person("user")
    key = console.key_for(member)
    assert chat(console, key)
    page, _ = page_for("admin")
    accept_dialogs(page)
    name = f"no-chat-{member.id}"
    page.goto(console.url + "/console/groups")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Description").fill("may not chat")
    page.get_by_role("button", name="Create group").click()
    page.get_by_role("link", name=name).click()
    expect(page.get_by_role("heading", name=f"Group {name}")).to_be_visible()
    page.get_by_label("User id").fill(str(member.id))
    page.get_by_role("button", name="Add member").click()
    expect(page.locator(f'tr[data-member="{member.email}"]')).to_be_visible()
    page.get_by_label("Effect").select_option("deny")
    page.get_by_label("Pattern (* wildcards)").fill(MODEL)
    page.get_by_role("button", name="Add rule").click()
    rule = page.locator("#rules-table tr[data-rule]")
    expect(rule).to_contain_text("deny")
    expect(rule).to_contain_text(MODEL)
    screenshot(page, "groups-wide")

    page.goto(console.url + "/console/access")
    expect(page.locator("#rules-table")).to_contain_text(f"group {name}")
    page.get_by_label("User id", exact=True).first.fill(str(member.id))
    page.get_by_label("Model").fill(MODEL)
    page.get_by_role("button", name="Check").click()
    expect(page.locator("#check-allowed")).to_have_text("false")
    expect(page.locator("#check-result pre")).to_contain_text('"decided_by": "group"')
    screenshot(page, "access-wide")
    refused(console, key)

    # Removing the member from the group: the rule no longer applies to them.
    page.goto(console.url + "/console/groups")
    page.get_by_role("link", name=name).click()
    page.get_by_role("button", name=f"Remove {member.email}").click()
    expect(page.locator(f'tr[data-member="{member.email}"]')).to_have_count(0)
    assert chat(console, key)


def test_set_a_price_and_change_a_rate_limit(console: Console, page_for: Callable[..., tuple[Page, Person]]) -> None:
    page, _ = page_for("admin")
    accept_dialogs(page)
    page.goto(console.url + "/console/prices")
    page.get_by_label("Model or pattern").fill("govern-test-*")
    page.get_by_label("Input", exact=True).fill("1.5")
    page.get_by_label("Output", exact=True).fill("2.25")
    page.get_by_role("button", name="Set price").click()
    row = page.locator('tr[data-price="govern-test-*"]')
    expect(row).to_contain_text("1.5")
    expect(row).to_contain_text("2.25")
    expect(page.locator("#price-history")).to_contain_text("govern-test-*")
    screenshot(page, "prices-wide")
    row.get_by_role("button", name="Remove the price of govern-test-*").click()
    expect(page.locator('tr[data-price="govern-test-*"]')).to_have_count(0)
    expect(page.locator("#price-history tr", has_text="govern-test-*").first).to_contain_text("removed")

    page.goto(console.url + "/console/rate-limits")
    rule = page.locator('tr[data-rule="embeddings"]')
    rule.get_by_label("New limit for embeddings").fill("5000")
    rule.get_by_role("button", name="Save").click()
    rule = page.locator('tr[data-rule="embeddings"]')
    expect(rule.locator("[data-limit]")).to_have_text("5,000")
    expect(rule.locator(".badge")).to_have_text("changed")
    screenshot(page, "rate-limits-wide")
    with console.admin() as admin:
        assert {r["name"]: r["limit"] for r in admin.get("/admin/rate-limits").json()}["embeddings"] == 5000
    rule.get_by_role("button", name="Reset embeddings to its default").click()
    expect(page.locator('tr[data-rule="embeddings"] [data-limit]')).to_have_text("no limit")
