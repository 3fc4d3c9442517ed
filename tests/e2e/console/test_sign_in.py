"""Signing in and out, signing up from an invite link, the profile and its password change: in a real browser."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from playwright.sync_api import Page, expect

from tests.e2e.console.conftest import Console, Person


def test_the_root_is_the_sign_in_page_for_a_browser_and_ollama_for_clients(console: Console) -> None:
    plain = httpx.get(console.url + "/")
    assert plain.text == "Ollama is running"
    html = httpx.get(console.url + "/", headers={"accept": "text/html"})
    assert html.status_code == 200 and "Sign in to Gatehouse" in html.text
    csp = html.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert html.headers["x-frame-options"] == "DENY" and html.headers["referrer-policy"] == "same-origin"


def test_sign_in_shows_a_wrong_password_plainly_then_signs_in_and_out(
    console: Console, new_page: Callable[..., Page]
) -> None:
    person = console.person("user")
    page = new_page()
    page.goto(console.url + "/console/profile")
    expect(page).to_have_url(f"{console.url}/?next=%2Fconsole%2Fprofile")
    page.get_by_label("Email").fill(person.email)
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".form-error")).to_have_text("Wrong email or password.")
    page.get_by_label("Password").fill(person.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(console.url + "/console/profile")
    expect(page.locator("#me-email")).to_have_text(person.email)
    page.locator("details.account > summary").click()
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(console.url + "/")
    page.goto(console.url + "/console/profile")
    expect(page.get_by_role("heading", name="Sign in to Gatehouse")).to_be_visible()


def test_sign_up_from_the_link_an_invite_hands_out(console: Console, new_page: Callable[..., Page]) -> None:
    with console.admin() as admin:
        invite = admin.post("/admin/invites", json={"role": "user"})
        assert invite.status_code == 201, invite.text
    link = invite.json()["link"]
    # The link names the address the invite was made through (replica A, with two replicas).
    base = (console.api or console.server).url
    assert link.startswith(base + "/signup?invite=")
    page = new_page(width="narrow")
    page.goto(link)
    email = f"invited-{invite.json()['id']}@example.com"
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill("short")
    page.get_by_role("button", name="Create account").click()
    expect(page.locator(".form-error")).to_contain_text("at least 8 characters")
    page.get_by_label("Password", exact=True).fill("a-good-long-password")
    page.get_by_role("button", name="Create account").click()
    # Signed up, signed in, and at home: a user's home is their usage.
    expect(page).to_have_url(base + "/console/usage")
    with console.admin() as admin:
        found = admin.get("/admin/users", params={"q": email}).json()["items"]
    assert [u["email"] for u in found] == [email]


def test_password_change_needs_the_current_one_and_signs_other_sessions_out(
    console: Console, page_for: Callable[..., tuple[Page, Person]], new_page: Callable[..., Page]
) -> None:
    page, person = page_for("user")
    other, _ = page_for(person=person)  # a second session of the same person
    page.goto(console.url + "/console/profile")
    page.get_by_label("Current password").fill("wrong-password")
    page.get_by_label("New password").fill("another-good-password")
    page.get_by_role("button", name="Change password").click()
    expect(page.locator(".form-error")).to_have_text("The current password is wrong.")
    expect(page.get_by_label("Current password")).to_have_attribute("aria-invalid", "true")
    page.get_by_label("Current password").fill(person.password)
    page.get_by_role("button", name="Change password").click()
    expect(page.locator("#toasts")).to_contain_text("Password changed")
    # This session stays; the other one was signed out.
    page.goto(console.url + "/console/profile")
    expect(page.locator("#me-email")).to_have_text(person.email)
    other.goto(console.url + "/console/profile")
    expect(other.get_by_role("heading", name="Sign in to Gatehouse")).to_be_visible()
    login = httpx.post(console.url + "/auth/login", json={"email": person.email, "password": "another-good-password"})
    assert login.status_code == 200
