"""A way of linking switched off while the person is on its way: the page they reach names
that way in their words and links to the ways still on (none when all are off).

"Add a printer" is opened while everything is on, then the kill switch goes off, then the
person presses the way they chose: the page they had still offered it.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import log_in
from tests.browser.live import Printer

NEAR_YOU, SHOW_CODE, ENTER_CODE, QR = (
    "Printers near you", "Show a code for the printer", "Enter the printer's code",
    "Scan the printer's QR code")
EVERY_WAY = [NEAR_YOU, SHOW_CODE, ENTER_CODE, QR]
# The way pressed, the strategy switched off, what the refusal says, the ways it offers.
CASES = [
    (NEAR_YOU, "ip_match", "Linking printers near you", [SHOW_CODE, ENTER_CODE, QR]),
    (SHOW_CODE, "pairing_code", "Getting a code to type into the printer", [NEAR_YOU, QR]),
    (ENTER_CODE, "pairing_code", "Typing in the code a printer shows", [NEAR_YOU, QR]),
    (QR, "qr_code", "Linking with the printer's QR code", [NEAR_YOU, SHOW_CODE, ENTER_CODE]),
    (ENTER_CODE, "all", "Typing in the code a printer shows", []),
]
NONE_WORK = "No way of linking a printer works on this server right now."


def offered(page) -> list[str]:
    """The ways the refusal links to, in page order."""
    return page.locator("[data-way-on] a").all_inner_texts()


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_each_way_switched_off_names_itself_and_offers_the_others(
        live, open_context, user, javascript):
    page = open_context(javascript=javascript).new_page()
    log_in(page, user["email"])
    for pressed, strategy, doing, still_on in CASES:
        live.reset()  # every strategy on
        page.goto("/printers/add")
        expect(page.locator("li.way h2 a")).to_have_text(EVERY_WAY)
        live.switch(strategy, enabled=False)

        page.get_by_role("link", name=pressed, exact=True).click()
        expect(page.get_by_role("heading", level=1)).to_have_text(
            f"{doing} is switched off right now")
        expect(page.get_by_text("Switched off by an administrator.")).to_be_visible()
        assert offered(page) == still_on, pressed
        expect(page.get_by_text(NONE_WORK)).to_have_count(0 if still_on else 1)
        expect(page.get_by_role("link", name="Back to my printers")).to_be_visible()

    # What the refusal offers works: pressed, it is the way's own page.
    live.reset()
    live.switch("ip_match", enabled=False)
    page.goto("/printers/nearby")
    page.get_by_role("link", name=ENTER_CODE, exact=True).click()
    expect(page.get_by_label("Code shown on the printer")).to_be_visible()


def test_a_qr_link_scanned_while_qr_codes_are_off_offers_the_printers_code(
        live, page, user):
    """The printer showed its QR code and its code; the code still works."""
    started = Printer(live.base_url, "Printer with a QR code").authorize()
    log_in(page, user["email"])
    live.switch("qr_code", enabled=False)
    page.goto(started["verification_uri_complete"])
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Linking with the printer's QR code is switched off right now")
    assert offered(page) == [NEAR_YOU, SHOW_CODE, ENTER_CODE]

    page.get_by_role("link", name=ENTER_CODE, exact=True).click()
    page.get_by_label("Code shown on the printer").fill(started["user_code"])
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", name="Link this printer to your account?")
           ).to_be_visible()
