"""Pages another site can send a logged-in person to with a plain link, in chromium.

A top-level GET carries the SameSite=Lax session cookie, so what such a page does on
loading, it does as the person. "Printers near you" counts the account towards its
household's breaker when it looks; another site must not make it look.
"""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.conftest import log_in
from tests.browser.live import Printer
from tsd_server.discovery.ip_match.eligibility import OPENED_FROM_ANOTHER_SITE, message_for


def test_printers_near_you_opened_from_another_site_does_not_look(live, page, user, hostile):
    printer = Printer(live.base_url, name="Prusa in the office")
    assert printer.announce().status == 200
    log_in(page, user["email"])
    hostile.pages["/office-news"] = (
        '<!doctype html><title>Office news</title>'
        f'<a id="go" href="{live.url("/printers/nearby")}">Read more</a>')
    page.goto(hostile.base_url + "/office-news")
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/discovery/nearby" in r.url else None)
    page.click("#go")
    page.wait_for_url(live.url("/printers/nearby"))

    expect(page.locator("#nearby-status")).to_contain_text("Another site sent you here")
    # In words only, without the reason's code after them.
    expect(page.locator("#nearby-status")).to_have_text(message_for(OPENED_FROM_ANOTHER_SITE))
    expect(page.locator(f'[data-device="{printer.device_id}"]')).to_have_count(0)
    page.wait_for_timeout(2 * 2_000 + 500)  # two poll intervals of the live app
    assert asked == [], "nearby.js looked although the page was opened from another site"

    # Refresh is this site's own link: now the page looks, and keeps looking.
    page.get_by_role("link", name="Refresh").click()
    expect(page.locator(f'[data-device="{printer.device_id}"]')).to_be_visible()
    expect(page.locator("#nearby-status")).to_be_hidden()
    page.wait_for_timeout(2_000 + 500)
    assert asked, "nearby.js did not refresh the list after Refresh"
