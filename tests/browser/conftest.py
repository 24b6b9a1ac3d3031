"""Fixtures for the browser tests: Debian's chromium driven by Playwright, the app served live.

Chromium is launched from /usr/bin/chromium (``playwright install`` is never used: it
downloads browsers). Where it is missing the browser tests are skipped with a loud warning;
.ci/run installs it. Each test gets a fresh browser context (no cookies), and fails if a
page broke the Content-Security-Policy or threw a JavaScript error.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.live import PASSWORD, LiveApp, OtherSite, Printer, live_app, serving
from tests.support.skips import skip_loudly

CHROMIUM = "/usr/bin/chromium"
# No network beyond loopback (no updates, sync or background fetches); root in CI needs
# --no-sandbox; containers often have a tiny /dev/shm, which crashes chromium's renderers.
LAUNCH_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu",
               "--no-first-run", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage"]
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
         "device_scale_factor": 1}
DESKTOP = {"viewport": {"width": 1280, "height": 800}}
# Playwright waits this long (ms) for an element or a navigation before failing.
TIMEOUT_MS = 15_000
# Hostile pages come from another site (the browser withholds the SameSite=Lax session
# cookie from its form posts) or from the same site on another port (like a sibling
# subdomain: the cookie IS sent).
ORIGINS = {"cross-site": "127.0.0.2", "same-site": "127.0.0.1"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        message = (f"{CHROMIUM} is NOT installed: the browser tests are SKIPPED "
                   "(apt-get install chromium; .ci/run installs it).")
        skip_loudly(message)
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=LAUNCH_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def live(database: str) -> Iterator[LiveApp]:
    with live_app(database) as running:
        yield running


def lan_address() -> str | None:
    """An IPv4 address of this machine that is not loopback, or None. Browsers send Fetch
    Metadata only to potentially trustworthy origins: http://127.0.0.1 is one, http to
    this address is not, as for a server on a LAN (http://192.168.1.20:5000)."""
    candidates = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # UDP: picks the address a route would use
            candidates.append(probe.getsockname()[0])
        except OSError:
            pass
    try:
        candidates += [info[4][0] for info in socket.getaddrinfo(
            socket.gethostname(), None, socket.AF_INET)]
    except OSError:
        pass
    for address in candidates:
        if not address.startswith("127.") and address != "0.0.0.0":
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind((address, 0))
            except OSError:
                continue
            return address
    return None


@pytest.fixture(scope="module")
def over_http(live: LiveApp) -> Iterator[str]:
    """The live app served a second time, at a non-loopback address of this machine: plain
    http that chromium does not count as potentially trustworthy. Its base URL."""
    address = lan_address()
    if address is None:
        skip_loudly("this machine has no IPv4 address but loopback: the plain-http browser "
                    "tests are SKIPPED")
    with serving(live.app, address) as base_url:
        yield base_url


@pytest.fixture(params=list(ORIGINS))
def hostile(request) -> Iterator[OtherSite]:
    """Another web site (each test runs once per origin); put HTML into ``.pages``."""
    site = OtherSite()
    with serving(site, ORIGINS[request.param]) as base_url:
        site.base_url = base_url
        yield site


@pytest.fixture(autouse=True)
def _fresh_state(request: pytest.FixtureRequest) -> None:
    """Strategies on and no announcements left by an earlier test (tests share a server)."""
    if "live" in request.fixturenames:
        request.getfixturevalue("live").reset()


class Problems:
    """CSP violations and uncaught JavaScript errors seen by the pages of one context."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def watch(self, page: Any) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.seen.append(f"JavaScript error: {error}"))

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text:
            self.seen.append(f"CSP: {message.text}")


@pytest.fixture
def open_context(browser: Any, live: LiveApp):
    """``open_context(phone=False, javascript=True, timezone_id=None)`` → a fresh context
    (own cookies); ``timezone_id`` ("Asia/Kolkata") is the browser's time zone, else the
    machine's."""
    contexts: list[tuple[Any, Problems]] = []

    def factory(*, phone: bool = False, javascript: bool = True,
                timezone_id: str | None = None) -> Any:
        zone = {"timezone_id": timezone_id} if timezone_id else {}
        context = browser.new_context(base_url=live.base_url, java_script_enabled=javascript,
                                      **(PHONE if phone else DESKTOP), **zone)
        context.set_default_timeout(TIMEOUT_MS)
        problems = Problems()
        context.on("page", problems.watch)
        contexts.append((context, problems))
        return context

    yield factory
    seen = [problem for _, problems in contexts for problem in problems.seen]
    for context, _ in contexts:
        context.close()
    assert seen == [], "pages broke the CSP or threw:\n" + "\n".join(seen)


@pytest.fixture
def page(open_context):
    return open_context().new_page()


def log_in(page: Any, email: str, password: str = PASSWORD, base_url: str = "") -> None:
    """Through the login form, as a person would (of ``base_url``'s server, if given)."""
    page.goto(base_url + "/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/login" not in url)


def open_offer(live, page, user, name: str) -> Printer:
    """A printer nearby, picked: its offer page asks for the code it shows."""
    printer = Printer(live.base_url, name)
    assert printer.announce().json["status"] == "waiting"
    log_in(page, user["email"])
    page.goto("/printers/nearby")
    page.get_by_role("button", name=f"Link this printer: “{name}”").click()
    page.wait_for_url("**/printers/nearby/offers/*")
    return printer


@pytest.fixture
def user(live: LiveApp) -> dict:
    user_id, email = live.make_user(display_name="Ada")
    return {"id": user_id, "email": email, "name": "Ada"}


@pytest.fixture
def admin(live: LiveApp) -> dict:
    user_id, email = live.make_user(is_admin=True, display_name="Root")
    return {"id": user_id, "email": email, "name": "Root"}
