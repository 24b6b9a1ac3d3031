"""Small screens and large text: the code to compare with a printer's screen is whole, long
printer names wrap, two-column lists become one, wide admin tables say they scroll, and the
admin pages fit 320 px with the text at 200 %.

Large text is the browser's own text-size setting (chromium's default font size, set over
CDP as a person's settings would): a page whose text is sized in px ignores it.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import log_in
from tests.browser.live import PASSWORD, Printer
from tests.browser.test_pages_on_a_phone import overflowing

LONG_NAME = "PrusaMK4WorkshopLeftShelfSecondFromTopNearTheWindowXYZ"
# (viewport width, text size in %): the reviewer's phone widths and text sizes.
SIZES = [(320, 100), (320, 200), (390, 125), (390, 150), (390, 200)]

# Where each character of the code is drawn, and whether any of it is cut off or hidden.
CODE_LAYOUT = """element => {
    const text = element.textContent.trim();
    const node = Array.from(element.childNodes).find(n => n.nodeType === Node.TEXT_NODE
                                                         && n.data.trim());
    const start = node.data.indexOf(text);
    const box = element.getBoundingClientRect();
    const chars = Array.from(text, (_, i) => {
        const range = document.createRange();
        range.setStart(node, start + i);
        range.setEnd(node, start + i + 1);
        const r = range.getBoundingClientRect();
        return {top: Math.round(r.top), left: r.left, right: r.right};
    });
    return {text, chars, right: box.right, viewport: document.documentElement.clientWidth,
            scrollWidth: element.scrollWidth, clientWidth: element.clientWidth,
            fontSize: parseFloat(getComputedStyle(element).fontSize)};
}"""


def text_size(page, percent: int) -> None:
    """The browser's text size setting (Settings > Appearance > Font size), as a person sets
    it: the default font size, which rem and em follow (and em media queries)."""
    if percent == 100:
        return
    session = page.context.new_cdp_session(page)
    session.send("Page.setFontSizes", {"fontSizes": {"standard": 16 * percent // 100,
                                                     "fixed": 13 * percent // 100}})


def new_page(open_context, width: int, percent: int = 100, height: int = 800):
    page = open_context().new_page()
    page.set_viewport_size({"width": width, "height": height})
    text_size(page, percent)
    return page


def assert_code_whole(page, selector: str, code: str, where: str) -> None:
    layout = page.locator(selector).evaluate(CODE_LAYOUT)
    assert layout["text"] == code, where
    assert layout["scrollWidth"] <= layout["clientWidth"], f"{where}: the code is cut off"
    assert layout["right"] <= layout["viewport"], f"{where}: the code runs off the screen"
    for char in layout["chars"]:
        assert 0 <= char["left"] and char["right"] <= layout["viewport"] + 0.5, (
            f"{where}: a letter of the code is off the screen: {layout}")
    # One line, or two broken after the dash: each half stays whole.
    tops = [char["top"] for char in layout["chars"]]
    dash = code.index("-")
    assert len(set(tops[:dash + 1])) == 1 and len(set(tops[dash + 1:])) == 1, (
        f"{where}: the code breaks inside a half: {tops}")


@pytest.mark.parametrize(("width", "percent"), SIZES)
def test_the_code_on_the_approval_page_is_whole(live, open_context, user, width, percent):
    printer = Printer(live.base_url, "Reflow printer")
    started = printer.authorize()
    page = new_page(open_context, width, percent)
    log_in(page, user["email"])
    page.goto(started["verification_uri_complete"])
    expect(page.locator("dd.code")).to_have_text(started["user_code"])
    where = f"approval page at {width}px, {percent}% text"
    assert_code_whole(page, "dd.code", started["user_code"], where)
    assert overflowing(page) == [], where


@pytest.mark.parametrize(("width", "percent"), SIZES)
def test_the_pairing_code_shown_for_the_printer_is_whole(live, open_context, user, width,
                                                         percent):
    page = new_page(open_context, width, percent)
    log_in(page, user["email"])
    page.goto("/printers/add/code")
    page.get_by_role("button", name="Get a code").click()
    code = page.locator("[data-pairing-code]")
    expect(code).to_have_text(re.compile(r"^[A-Z]{4}-[A-Z]{4}$"))
    where = f"code page at {width}px, {percent}% text"
    assert_code_whole(page, "[data-pairing-code]", code.inner_text(), where)
    assert overflowing(page) == [], where


def test_text_follows_the_browsers_text_size(live, open_context, user):
    page = new_page(open_context, 390, 200)
    page.goto("/login")
    sizes = page.evaluate("""() => [document.body, document.querySelector("main p, label"),
                                     document.querySelector("input#email")]
        .map(element => parseFloat(getComputedStyle(element).fontSize))""")
    assert sizes == [32, 32, 32], sizes


def test_a_long_printer_name_does_not_widen_the_page(live, open_context, user):
    page = new_page(open_context, 390, height=844)
    log_in(page, user["email"])
    nearby = Printer(live.base_url, LONG_NAME)
    assert nearby.announce().status == 200
    page.goto("/printers/nearby")
    card = page.locator(f'li.device[data-device="{nearby.device_id}"]')
    expect(card.get_by_role("heading")).to_have_text(LONG_NAME)
    assert overflowing(page) == [], "Printers near you"

    card.get_by_role("button", name="Link this printer").click()
    expect(page.get_by_role("heading", name=f"Link “{LONG_NAME}”")).to_be_visible()
    assert overflowing(page) == [], "the offer page"

    started = Printer(live.base_url, LONG_NAME).authorize()
    page.goto(started["verification_uri_complete"])
    expect(page.locator("#device-heading")).to_contain_text(LONG_NAME)
    assert overflowing(page) == [], "the approval page"

    live.linked_printer(user["id"], LONG_NAME)
    page.goto("/")
    assert overflowing(page) == [], "My printers"


def test_the_approval_details_are_one_column_on_a_phone(live, open_context, user):
    started = Printer(live.base_url, "Two columns").authorize()
    page = new_page(open_context, 390)
    log_in(page, user["email"])
    page.goto(started["verification_uri_complete"])
    boxes = page.evaluate("""() => Array.from(document.querySelectorAll("#device-heading ~ dl > *"),
        element => element.getBoundingClientRect().left)""")
    assert len(set(round(left) for left in boxes)) == 1, "terms and details side by side"

    # With room, and normal text, they stay side by side.
    page.set_viewport_size({"width": 1280, "height": 800})
    left = page.evaluate("""() => Array.from(document.querySelectorAll("#device-heading ~ dl > *"),
        element => Math.round(element.getBoundingClientRect().left))""")
    assert len(set(left)) == 2


def test_proxy_settings_are_one_column_on_a_phone(live, open_context, admin):
    page = new_page(open_context, 390, height=844)
    log_in(page, admin["email"], PASSWORD)
    page.goto("/admin/diagnostics")
    widths = page.evaluate("""() => {
        const list = document.querySelector("dl.settings");
        return {list: list.clientWidth,
                details: Array.from(list.querySelectorAll("dd"), dd => dd.clientWidth)};
    }""")
    assert widths["details"], "no settings listed"
    for width in widths["details"]:
        assert width >= widths["list"] - 1, f"an explanation is squeezed: {widths}"
    assert overflowing(page) == []


def test_the_audit_table_says_it_scrolls_and_its_scroll_bar_is_in_view(live, open_context,
                                                                      admin):
    from tsd_server import audit
    from tsd_server.extensions import db

    with live.app.test_request_context(environ_base={"REMOTE_ADDR": "127.0.0.1"}):
        for number in range(40):
            audit.record("ip_match_nearby", actor="user:1", outcome="listed",
                         device_uid=f"tsd-{number:016x}", strategy="ip_match",
                         detail=f"listed: tsd-{number:016x}, tsd-{number + 1:016x}")
        db.session.commit()
    page = new_page(open_context, 1280)
    log_in(page, admin["email"])
    page.goto("/admin/audit")
    wrap = page.get_by_role("region", name="Audit log table")
    expect(wrap).to_be_visible()
    wrap.scroll_into_view_if_needed()
    box = wrap.evaluate("""element => ({
        scrollWidth: element.scrollWidth, clientWidth: element.clientWidth,
        height: element.getBoundingClientRect().height, viewport: window.innerHeight})""")
    assert box["scrollWidth"] > box["clientWidth"], "the table fits: nothing to check"
    # The box is no taller than the screen: its sideways scroll bar can be seen and used.
    assert box["height"] <= box["viewport"], box

    # By keyboard: Tab reaches the box, and the arrow keys scroll it to Detail.
    for _ in range(40):
        page.keyboard.press("Tab")
        if wrap.evaluate("element => element === document.activeElement"):
            break
    expect(wrap).to_be_focused()
    outline = wrap.evaluate("element => getComputedStyle(element).outlineStyle")
    assert outline != "none"
    for _ in range(60):
        page.keyboard.press("ArrowRight")
    detail = page.get_by_role("columnheader", name="Detail")
    expect(detail).to_be_in_viewport()
    assert wrap.evaluate("element => element.scrollLeft") > 0


@pytest.mark.parametrize("path", ["/admin/kill-switches", "/admin/audit"])
def test_admin_pages_fit_320px_with_the_text_at_200_percent(live, open_context, admin, path):
    """WCAG 1.4.10: a kill switch's button kept its words on one line, and the audit log's
    filters were 13rem columns (416 px at 200 %): both wider than the screen."""
    page = new_page(open_context, 320, 200)
    log_in(page, admin["email"])
    page.goto(path)
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    assert overflowing(page) == [], path
