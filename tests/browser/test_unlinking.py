"""Unlinking one printer from My printers: one press only asks, on a page that names the
printer; the page's own button unlinks it, Cancel keeps it. With JavaScript on and off.

A printer names itself, so its name may be "all printers": no control of one printer may
then read like the one that unlinks them all.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import log_in


def posts_of(page) -> list[str]:
    """The form posts the page sends from now on (their paths)."""
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url.split("/", 3)[-1])
            if r.method == "POST" else None)
    return sent


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_unlink_asks_first_and_cancel_keeps_the_printer(live, open_context, user, javascript):
    printer = live.linked_printer(user["id"], "Kitchen printer")
    page = open_context(javascript=javascript).new_page()
    log_in(page, user["email"])
    sent = posts_of(page)
    # The printer's own Unlink control, whatever it is drawn as.
    unlink = page.locator("li.device").get_by_text("Unlink", exact=True)
    expect(unlink).to_have_accessible_name("Unlink the printer “Kitchen printer”")

    unlink.click()
    expect(page.get_by_role("heading", name="Unlink the printer “Kitchen printer”?")
           ).to_be_visible()
    asking_page = page.url
    assert sent == [] and printer.me().status == 200  # the press only asked
    page.get_by_role("link", name="Cancel").click()
    expect(page).to_have_url(live.url("/"))
    assert sent == [] and printer.me().status == 200

    unlink.click()
    page.get_by_role("button", name="Yes, unlink the printer “Kitchen printer”",
                     exact=True).click()
    expect(page.get_by_role("status")).to_have_text(
        "The printer “Kitchen printer” is unlinked; its token no longer works.")
    assert printer.me().status == 401
    assert len(sent) == 1 and sent[0].endswith("/unlink")

    # The asking page again (the back button, a second tab): nothing left to unlink there.
    page.goto(asking_page)
    expect(page).to_have_url(live.url("/"))
    expect(page.get_by_role("status")).to_have_text(
        "The printer “Kitchen printer” is not linked any more; nothing was changed.")


def test_a_printer_named_all_printers_is_told_apart_from_unlink_all(live, page, user):
    named = live.linked_printer(user["id"], "all printers")
    other = live.linked_printer(user["id"], "Garage")
    log_in(page, user["email"])

    # One control reads "Unlink all printers": the one in the box that unlinks them all.
    everything = page.get_by_role("button", name="Unlink all printers", exact=True)
    expect(everything).to_have_count(1)
    expect(page.locator("#unlink-all").get_by_role("button")).to_have_accessible_name(
        "Unlink all printers")
    expect(page.get_by_role("link", name="Unlink all printers", exact=True)).to_have_count(0)
    # Each printer's own controls name it, quoted.
    expect(page.get_by_role("button", name="Rename the printer “all printers”", exact=True)
           ).to_have_count(1)
    expect(page.get_by_label("New name for the printer “all printers”", exact=True)
           ).to_have_value("all printers")

    page.get_by_role("link", name="Unlink the printer “all printers”", exact=True).click()
    expect(page.get_by_role("heading", name="Unlink the printer “all printers”?")
           ).to_be_visible()
    page.get_by_role("button", name="Yes, unlink the printer “all printers”",
                     exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("The printer “all printers” is unlinked")
    assert named.me().status == 401
    assert other.me().status == 200  # only the printer named so
