"""The console in a real browser: Playwright driving headless Chromium (Debian's package, installed by
scripts/test-services.sh when missing) against a real Gatehouse server on each backend.

`console` is a session-scoped server with the fake upstream, once per backend (tests are grouped by it): SQLite,
PostgreSQL, and two replicas on PostgreSQL + Redis where every page is served by replica B while the stage is set
(people, keys, overrides) through replica A's API, so what a page shows live has crossed replicas;
`console.person(role)` makes someone of that role with a password; `page_for(role)` opens a browser page already
signed in as that person (through the API's own /auth/login, as the sign-in page does); `new_page` opens one signed out.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from tests.conftest import BACKENDS, fresh_database
from tests.e2e.conftest import two_replicas, write_config
from tests.support.fake_upstream import FakeUpstream
from tests.support.server import GatehouseServer, base_env, run_gatehouse

PASSWORD = "console-password-1"
WIDTHS = {"wide": (1280, 860), "narrow": (390, 844)}
SCREENSHOTS = Path(__file__).resolve().parents[3] / "docs" / "console"
# The flags a headless Chromium needs on a machine without a network (docs: the machine's notes): without the
# background-networking ones it keeps trying Google's hosts.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
_serial = itertools.count(1)


def chromium_path() -> str:
    """Debian's Chromium (or CHROMIUM_PATH): the suite fails, never skips, when it is missing."""
    found = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("Chromium is missing: `make test` installs it (scripts/test-services.sh: apt-get install chromium)")
    return found


# Per module, not per session: while Playwright's sync API is open its event loop counts as running on this
# thread, and the rest of the suite's async tests (asyncio.run, pytest-asyncio) would fail behind it.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    launched = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
    yield launched
    launched.close()


@dataclass
class Person:
    """Someone with a console account."""

    id: int
    email: str
    role: str
    password: str = PASSWORD


@dataclass
class Console:
    """A running server (the one pages are opened on) and the ways in; `api` is the replica the stage is set
    through (the same server, except with two replicas)."""

    server: GatehouseServer
    api: GatehouseServer | None = None

    @property
    def url(self) -> str:
        return self.server.url

    def admin(self) -> httpx.Client:
        """The bootstrap superadmin's API client (for setting the stage; the page is what is tested)."""
        return (self.api or self.server).client()

    def person(self, role: str = "user", *, password: str = PASSWORD) -> Person:
        """A new active account of `role` with a password."""
        email = f"console-{role}-{next(_serial)}-{os.getpid()}@example.com"
        with self.admin() as client:
            created = client.post("/admin/users", json={"email": email, "role": role, "password": password})
            assert created.status_code == 201, created.text
        return Person(created.json()["id"], email, role, password)

    def key_for(self, person: Person, name: str = "test") -> str:
        """An API key of that person's (made by the superadmin)."""
        with self.admin() as client:
            made = client.post(f"/admin/users/{person.id}/keys", json={"name": name})
            assert made.status_code == 201, made.text
            return str(made.json()["key"])


REPLICAS = "replicas"
CONSOLE_BACKENDS = [*BACKENDS, pytest.param(REPLICAS, marks=[pytest.mark.postgres, pytest.mark.redis])]


@pytest.fixture(scope="session", params=CONSOLE_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """sqlite, postgres, or replicas (two on PostgreSQL + Redis): each console module runs on each."""
    return str(request.param)


@pytest.fixture(scope="session")
def servers(
    backend: str, fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatehouseServer, GatehouseServer]]:
    """(the replica the stage is set through, the replica pages are opened on): one server twice, or two."""
    workdir = tmp_path_factory.mktemp(f"console-{backend}")
    config = str(write_config(workdir / "gatehouse.yaml", fake_upstream.url))
    # Every browser and API call comes from 127.0.0.1, and the server lives for the whole session: the per-address
    # limit on unauthenticated requests (sign-in, sign-up) is raised, or the suite trips it (tested elsewhere).
    settings = {
        "GATEHOUSE_CONFIG": config,
        "UPSTREAM_READ_TIMEOUT": "2",
        "REQUEST_LOG_FLUSH_SECONDS": "0.1",
        "RATE_LIMIT_IP_PER_MINUTE": "100000",
    }
    if backend == REPLICAS:
        with two_replicas(workdir, **settings) as pair:
            yield pair
        return
    with (
        fresh_database(backend, workdir) as database_url,
        run_gatehouse(base_env(database_url, workdir / "data", **settings), workdir=workdir) as running,
    ):
        yield running, running


@pytest.fixture(scope="session")
def server(servers: tuple[GatehouseServer, GatehouseServer]) -> GatehouseServer:
    """The server pages are opened on."""
    return servers[1]


@pytest.fixture(scope="session")
def console(servers: tuple[GatehouseServer, GatehouseServer]) -> Console:
    api, pages = servers
    return Console(pages, api=api if api is not pages else None)


def signed_in(context: BrowserContext, console: Console, person: Person) -> None:
    """Sign a browser context in through the API (the cookies the sign-in page would get)."""
    answer = context.request.post(
        f"{console.url}/auth/login", data={"email": person.email, "password": person.password}
    )
    assert answer.ok, answer.text()


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """Open pages in fresh contexts (closed after the test): `new_page(width="wide"|"narrow")`."""
    contexts: list[BrowserContext] = []

    def open_page(width: str = "wide") -> Page:
        w, h = WIDTHS[width]
        context = browser.new_context(viewport={"width": w, "height": h}, locale="en-GB", timezone_id="UTC")
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def page_for(console: Console, new_page: Callable[..., Page]) -> Callable[..., tuple[Page, Person]]:
    """`page_for("admin")`: a page signed in as a new person of that role (or `person=`)."""

    def open_as(role: str = "user", *, person: Person | None = None, width: str = "wide") -> tuple[Page, Person]:
        who = person or console.person(role)
        page = new_page(width)
        signed_in(page.context, console, who)
        return page, who

    return open_as


def screenshot(page: Page, name: str) -> None:
    """Keep a screenshot of the page in docs/console/ when GATEHOUSE_SCREENSHOTS=1 (`make screenshots`); a plain
    `make test` leaves the tree as it found it."""
    if os.environ.get("GATEHOUSE_SCREENSHOTS") != "1":
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=False)
