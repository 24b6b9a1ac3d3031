"""With JavaScript off, the waiting pages still work: they say so and offer Refresh.

The scripts (static/nearby.js, refresh.js, pairing_countdown.js) only save a click; every
step of a journey is a plain link or form.
"""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser.conftest import log_in
from tests.browser.live import Printer


def test_printers_near_you_without_javascript(live, open_context, user):
    page = open_context(javascript=False).new_page()
    log_in(page, user["email"])
    page.goto("/printers/nearby")
    expect(page.get_by_text("This list does not refresh by itself")).to_be_visible()

    printer = Printer(live.base_url, "Printer for plain HTML")
    assert printer.announce().status == 200
    page.get_by_role("link", name="Refresh").click()
    card = page.locator(f'li.device[data-device="{printer.device_id}"]')
    card.get_by_role("button", name="Link this printer").click()
    code = printer.announce().json["confirmation"]["code"]
    page.get_by_label("Code shown on the printer").fill(code)
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_text("This page does not refresh by itself")).to_be_visible()
    # Only what is true without JavaScript: not that the page checks again by itself.
    expect(page.get_by_text("checks again by itself")).to_be_hidden()

    assert printer.announce().json["status"] == "linked"
    page.get_by_role("link", name="Refresh").click()
    expect(page).to_have_url(live.url("/"))
    expect(page.locator(f'li.device[data-device="{printer.device_id}"]')).to_be_visible()


def test_a_pairing_code_says_when_it_expires_without_javascript(live, open_context, user):
    page = open_context(javascript=False).new_page()
    log_in(page, user["email"])
    page.goto("/printers/add/code")
    page.get_by_role("button", name="Get a code").click()
    expect(page.locator("[data-pairing-code]")).to_have_text(re.compile(r"^[A-Z]{4}-[A-Z]{4}$"))
    expect(page.get_by_text(re.compile(r"It expires at\s+\d\d:\d\d:\d\d UTC"))).to_be_visible()
    expect(page.locator(".countdown")).to_have_text("")
