"""The Data pages in a real browser: the audit log (verify the chain, filter, cursor pages), jobs and backups
(run a backup, verify it, a damaged one shown with its problem), exports (masked by default, raw for superadmins
with a reason)."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.e2e.console.conftest import Console, Person, screenshot


def _backup_dir(console: Console) -> Path:
    """The server's BACKUP_DIR: its default, ./data/backups under the directory it runs in."""
    return console.server.log_path.parent / "data" / "backups"


def test_audit_log_verifies_the_chain_filters_by_action_and_pages_with_the_cursor(
    console: Console, page_for: Callable[..., tuple[Page, Person]]
) -> None:
    made = [console.person("user") for _ in range(3)]  # three user.created events at least
    page, _ = page_for("admin")
    with console.admin() as admin:
        before = admin.get("/admin/audit/verify").json()["checked"]
    page.goto(console.url + "/console/audit")
    page.get_by_role("button", name="Verify the chain").click()
    verdict = page.locator("#verify-result")
    expect(verdict).to_be_visible()
    expect(verdict).to_contain_text(re.compile(r"OK: the chain is intact, \d+ events checked"))
    expect(verdict.get_by_text("BROKEN")).to_be_hidden()
    shown = int(re.search(r"intact, (\d+) events checked", verdict.inner_text()).group(1))  # type: ignore[union-attr]
    with console.admin() as admin:
        after = admin.get("/admin/audit/verify").json()["checked"]
    assert before <= shown <= after and shown >= 3
    screenshot(page, "audit-wide")

    page.get_by_label("Action").fill("user.created")
    page.get_by_label("Per page").fill("2")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"action=user\.created"))
    actions = page.locator("code.data-action")
    expect(actions).to_have_count(2)
    expect(actions).to_have_text(["user.created", "user.created"])
    first = [int(t) for t in page.locator("#audit-events tbody td.num").all_inner_texts()]
    # The newest is the admin this page is signed in as; the one before, the last person made above.
    second_event = page.locator("details.data-details").nth(1)
    second_event.locator("summary").click()
    expect(second_event.locator("pre")).to_contain_text(made[-1].email)

    page.get_by_role("link", name="Next page →").click()
    expect(page).to_have_url(re.compile(r"before=\d+"))
    expect(actions).to_have_count(2)
    expect(actions).to_have_text(["user.created", "user.created"])
    second = [int(t) for t in page.locator("#audit-events tbody td.num").all_inner_texts()]
    assert max(second) < min(first), (first, second)
    expect(page.get_by_label("Action")).to_have_value("user.created")  # the filters stay as they were


def test_audit_filters_by_time_as_iso_with_its_zone(
    console: Console, page_for: Callable[..., tuple[Page, Person]]
) -> None:
    page, _ = page_for("admin", width="narrow")
    page.goto(console.url + "/console/audit")
    page.get_by_label("Since (your time)").fill("2000-01-01T00:00:00")
    page.get_by_label("Until (your time)").fill("2000-01-02T00:00:00")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"since=2000-01-01T00%3A00%3A00\.000Z&until=2000-01-02T00%3A00%3A00\.000Z"))
    expect(page.locator("#audit-events")).to_contain_text("No audit events match.")
    expect(page.get_by_label("Since (your time)")).to_have_value("2000-01-01T00:00")
    screenshot(page, "audit-narrow")


def test_run_a_backup_from_the_jobs_page_verify_it_and_see_a_damaged_one(
    console: Console, page_for: Callable[..., tuple[Page, Person]]
) -> None:
    monitor, _ = page_for("monitor")
    page, _ = page_for("admin")
    page.goto(console.url + "/console/jobs")
    expect(page.locator("#job-backup")).to_be_visible()
    page.locator("#job-backup").get_by_role("button", name="Run backup now").click()
    expect(page.locator("#toasts")).to_contain_text("backup: run finished")
    expect(page.locator("#job-backup .data-last-run")).to_contain_text("ok")
    rows = page.locator("tr.data-backup")
    expect(rows).to_have_count(1)
    row = rows.first
    name = row.get_attribute("data-name") or ""
    assert name.startswith("gatehouse-"), name
    expect(row.locator(".badge")).to_have_text("ok")
    expect(row).to_contain_text("sqlite" if console.server.env["DATABASE_URL"].startswith("sqlite") else "postgresql")
    row.get_by_role("button", name=f"Verify {name}").click()
    expect(row.locator(".data-verdict")).to_contain_text(f"OK: {name} restores")
    expect(row.locator(".data-verdict")).to_contain_text("rows in")
    expect(page.locator("#job-runs")).to_contain_text(f"name={name}")
    screenshot(page, "jobs-wide")

    # A monitor sees the same lists, without the controls its role may not use (the API refuses them too).
    monitor.goto(console.url + "/console/jobs")
    expect(monitor.locator("tr.data-backup")).to_have_count(1)
    expect(monitor.get_by_role("button", name=re.compile("Run .* now|Verify"))).to_have_count(0)
    refused = monitor.evaluate(
        "name => window.gatehouse.api('POST', '/admin/backups/' + name + '/verify').then(() => 0, e => e.status)", name
    )
    assert refused == 403

    # Damage it on disk: its manifest is cut short.
    manifest = _backup_dir(console) / f"{name}.json"
    manifest.write_text(manifest.read_text()[:40])
    page.reload()
    row = page.locator(f'tr.data-backup[data-name="{name}"]')
    expect(row.locator(".badge")).to_have_text("damaged")
    expect(row.locator(".data-problem")).to_contain_text(f"Damaged (manifest): its manifest {name}.json")
    expect(page.locator(".notice.error")).to_contain_text("1 damaged backup(s)")
    row.get_by_role("button", name=f"Verify {name}").click()
    expect(row.locator(".data-verdict")).to_contain_text(f"FAILED: {name}")
    expect(row.locator(".data-verdict li")).to_contain_text(f"its manifest {name}.json")
    monitor.set_viewport_size({"width": 390, "height": 844})
    monitor.reload()
    expect(monitor.locator(f'tr.data-backup[data-name="{name}"] .badge')).to_have_text("damaged")
    screenshot(monitor, "jobs-narrow")


def _zip_text(path: str) -> dict[str, str]:
    with zipfile.ZipFile(io.BytesIO(Path(path).read_bytes())) as archive:
        return {n: archive.read(n).decode() for n in archive.namelist()}


def test_exports_are_masked_for_an_admin_and_raw_only_for_a_superadmin_with_a_reason(
    console: Console, page_for: Callable[..., tuple[Page, Person]]
) -> None:
    someone = console.person("user")
    page, _ = page_for("admin")
    page.goto(console.url + "/console/exports")
    expect(page.get_by_label("Entities")).to_have_values(["users"])
    expect(page.get_by_role("radio")).to_have_count(0)  # no choice: masked
    expect(page.get_by_label(re.compile("^Reason"))).to_have_count(0)
    refused = page.evaluate(
        "() => window.gatehouse.api('POST', '/admin/export', {entities: ['users'], pii: 'raw', reason: 'ticket 1'})"
        ".then(() => 0, e => e.status)"
    )
    assert refused == 403
    page.get_by_label("One user only").fill(someone.email)
    with page.expect_download() as downloading:
        page.get_by_role("button", name="Download export").click()
    download = downloading.value
    assert re.fullmatch(r"gatehouse-export-\d{8}T\d{6}Z\.zip", download.suggested_filename)
    files = _zip_text(download.path())
    users = files["users.csv"]
    local, domain = someone.email.split("@")
    assert someone.email not in users and f"{local[:2]}***@{domain}" in users, users
    assert "manifest.json" in files
    expect(page.locator("#toasts")).to_contain_text("Export downloaded")
    screenshot(page, "exports-wide")

    root, _ = page_for("superadmin", width="narrow")
    root.goto(console.url + "/console/exports")
    root.get_by_label("One user only").fill(str(someone.id))
    root.get_by_role("radio", name=re.compile("Raw")).check()
    root.get_by_role("button", name="Download export").click()
    expect(root.locator(".form-error")).to_contain_text("A raw export needs a reason")
    expect(root.get_by_label(re.compile("^Reason"))).to_have_attribute("aria-invalid", "true")
    root.get_by_label(re.compile("^Reason")).fill("TICKET-42 data subject request")
    with root.expect_download() as downloading:
        root.get_by_role("button", name="Download export").click()
    assert someone.email in _zip_text(downloading.value.path())["users.csv"]
    screenshot(root, "exports-narrow")
