"""A way of linking switched off while the person is on its way: the page they reach names
that way in their words and links to the ways still on (none when all are off).

"Add a printer" is opened while everything is on, then the kill switch goes off, then the
person presses the way they chose: the page they had still offered it. A "Printers near
you" list that is open when ip_match goes off turns into that page by itself, and so does
a page waiting for the printer to check in.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import log_in, open_offer
from tests.browser.live import SETTINGS, Printer
from tests.support.apps import flags_table_renamed

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


# Words an operator typed when switching off: for the admin page and the audit log only.
OPERATOR_REASON = "operator-note-9d2 about Ben"


def refused_link(live, page, printer: Printer) -> None:
    """Press Link on ``printer`` just after it stopped announcing: the list again, from
    the answer to that POST, saying why."""
    from sqlalchemy import delete

    from tsd_server.models.ip_match import Announcement

    # Just after a refresh, so that the list does not drop the card first.
    with page.expect_response(lambda response: "/api/v1/discovery/nearby" in response.url):
        pass
    with live.db() as session:
        session.execute(delete(Announcement).where(Announcement.device_uid == printer.device_id))
        session.commit()
    page.get_by_role("button", name=f"Link this printer: “{printer.name}”").click()
    expect(page.get_by_role("alert")).to_contain_text("No printer with this id")
    expect(page).to_have_title("Error: Printers near you · tsd-server")


@pytest.mark.parametrize("shown_by", ["opening", "a refused link"])
def test_an_open_printers_near_you_list_turns_into_the_refusal(live, page, user, shown_by):
    """Switched off while the list is open: at its next refresh the cards and their Link
    buttons are gone and the page is the refusal, without a strategy's name or code or the
    operator's words. Shown by a Link that was refused (a POST's answer), the list turns
    into it too, without posting again."""
    Printer(live.base_url, "Printer by the door").announce()
    gone = Printer(live.base_url, "Printer that went away")
    gone.announce()
    log_in(page, user["email"])
    posts: list[str] = []
    page.on("request", lambda request: posts.append(request.url)
            if request.method == "POST" else None)
    page.goto("/printers/nearby")
    link = page.get_by_role("button", name="Link this printer")
    expect(link).to_have_count(2)
    if shown_by == "a refused link":
        refused_link(live, page, gone)
        expect(link).to_have_count(1)
    posted = list(posts)

    live.switch("ip_match", enabled=False, reason=OPERATOR_REASON)
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Linking printers near you is switched off right now",
        timeout=(SETTINGS["IP_MATCH_POLL_INTERVAL"] + 2) * 1000)  # the next refresh, and a margin
    expect(page.locator("li.device")).to_have_count(0)
    expect(link).to_have_count(0)
    expect(page.get_by_text("Switched off by an administrator.")).to_be_visible()
    assert offered(page) == [SHOW_CODE, ENTER_CODE, QR]
    html = page.content()
    assert [word for word in ("strategy_disabled", "ip_match", OPERATOR_REASON)
            if word in html] == []
    assert urlsplit(page.url).path == "/printers/nearby"
    assert posts == posted, "the refused link was posted again"


def test_an_open_list_waits_out_switches_that_cannot_be_read(live, page, user):
    """The switches cannot be read for a moment (the database): every strategy counts as
    off, and the list's refresh is answered 503 ``flag_store_unreadable`` with
    Retry-After. That is not a switch-off: the list stays, and goes on once they can be
    read again, instead of turning into a refusal page that never comes back by itself."""
    Printer(live.base_url, "Printer by the door").announce()
    log_in(page, user["email"])
    page.goto("/printers/nearby")
    link = page.get_by_role("button", name="Link this printer")
    expect(link).to_have_count(1)

    def refreshed(status: int):
        return page.expect_response(lambda response: "/api/v1/discovery/nearby" in response.url
                                    and response.status == status)

    with flags_table_renamed(live.app):
        for _ in range(2):  # the second comes only if the first left the page as it was
            with refreshed(503) as answer:
                pass
            assert answer.value.json()["disabled_by"] == "flag_store_unreadable"
    with refreshed(200):
        pass
    expect(page.get_by_role("heading", level=1)).to_have_text("Printers near you")
    expect(link).to_have_count(1)


def confirmed_offer(live, page, user, name: str) -> tuple[Printer, str]:
    """A printer nearby, picked and its code typed: the page waits for it to check in."""
    printer = open_offer(live, page, user, name)
    code = printer.announce().json["confirmation"]["code"]
    page.get_by_label("Code shown on the printer").fill(code)
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_text("Confirmed.")).to_be_visible()
    return printer, page.url


def test_a_page_waiting_for_the_printer_turns_into_the_refusal(live, page, user):
    """Switched off while the offer page waits for the printer: refresh.js, which asks for
    the page in the background, opens the refusal it is answered with."""
    confirmed_offer(live, page, user, "Printer that waits")
    live.switch("ip_match", enabled=False, reason=OPERATOR_REASON)
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Linking printers near you is switched off right now",
        timeout=(SETTINGS["IP_MATCH_POLL_INTERVAL"] + 2) * 1000)
    assert offered(page) == [SHOW_CODE, ENTER_CODE, QR]


def test_a_page_waiting_for_the_printer_waits_out_switches_that_cannot_be_read(live, page,
                                                                             user):
    """Answered 503 with Retry-After (the switches cannot be read for a moment), the waiting
    page stays as it is, and opens the news once they can be read and there is some."""
    printer, offer_url = confirmed_offer(live, page, user, "Printer that waits it out")

    def answered(status: int):
        return page.expect_response(lambda response: response.url == offer_url
                                    and response.status == status)

    with flags_table_renamed(live.app):
        for _ in range(2):  # the second comes only if the first left the page as it was
            with answered(503) as answer:
                pass
            assert answer.value.headers.get("retry-after")
    expect(page.get_by_role("heading", level=1)).to_have_text("Link “Printer that waits it out”")
    assert printer.announce().json["status"] == "linked"
    page.wait_for_url(live.url("/"))
    expect(page.get_by_text("“Printer that waits it out” is now linked")).to_be_visible()
