"""Double-clickjacking: another site's "double-click me" button whose first click opens one
of our pages (top-level, so frame-ancestors does not help) and whose second click lands on a
button drawn there. static/click_guard.js holds the buttons marked data-click-guard disabled
for a moment each time a page is shown, so that second click presses nothing.

The attacker knows where a button is drawn from an account of their own; here its place is
measured on the person's own page before the game.
"""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.conftest import log_in
from tests.browser.live import Printer, double_click_game

# After the second click, time enough for a form post to reach the server had it been sent.
SETTLE_MS = 1000
# Headless chromium never hides a page or moves its window back: the test says it did.
SHOW = """state => {
    Object.defineProperty(document, "visibilityState", {value: state, configurable: true});
    document.dispatchEvent(new Event("visibilitychange"));
    return document.querySelector("[data-click-guard]").disabled;
}"""
FOCUS = """() => {
    window.dispatchEvent(new Event("focus"));
    return document.querySelector("[data-click-guard]").disabled;
}"""


def centre(locator) -> tuple[float, float]:
    box = locator.bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def open_unlink_page(page, name: str) -> None:
    """From the dashboard, the page that asks before unlinking the printer ``name``."""
    page.get_by_role("link", name=f"Unlink the printer “{name}”", exact=True).click()
    expect(page.get_by_role("heading", name=f"Unlink the printer “{name}”?")).to_be_visible()


def double_click_from(page, hostile, x: float, y: float, url: str) -> list[str]:
    """The person double-clicks the other site's button at (x, y); returns the form posts
    the browser sent after it."""
    hostile.pages["/game"] = double_click_game(x, y, url)
    page.goto(hostile.base_url + "/game")
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.mouse.click(x, y)
    page.wait_for_url(url)
    page.mouse.click(x, y)
    page.wait_for_timeout(SETTLE_MS)
    return posts


def test_a_double_click_on_another_site_cannot_unlink_a_printer(live, page, user, hostile):
    """The dashboard's Unlink only opens the page that asks; the button that unlinks is on
    that page, which another site can open with the first click just as well."""
    printer = live.linked_printer(user["id"])
    log_in(page, user["email"])
    open_unlink_page(page, "Target")
    asking_page = page.url
    unlink = page.get_by_role("button", name="Yes, unlink the printer “Target”", exact=True)
    x, y = centre(unlink)

    assert double_click_from(page, hostile, x, y, asking_page) == []
    assert printer.me().status == 200

    # The click was aimed right: pressed on purpose a moment later, the same spot unlinks.
    expect(unlink).to_be_enabled()
    page.mouse.click(x, y)
    expect(page.get_by_role("status")).to_contain_text("is unlinked")
    assert printer.me().status == 401


def test_a_double_click_on_another_site_cannot_press_a_kill_switch(live, page, admin, hostile):
    """ip_match was switched off in an incident; the other site wants the admin to press its
    "Switch on". The reason is required, so even an unheld press would only ask for one; the
    guard keeps the press from reaching the form at all (it would focus the empty reason)."""
    from tsd_server.discovery import kill_switch

    live.switch("ip_match", enabled=False, reason="Incident 7")
    log_in(page, admin["email"])
    page.goto("/admin/kill-switches")
    section = page.locator('section[data-strategy="ip_match"]')
    reason = section.get_by_label("Reason to enable ip_match")
    x, y = centre(section.get_by_role("button", name="Switch on"))

    assert double_click_from(page, hostile, x, y, live.url("/admin/kill-switches")) == []
    expect(reason).not_to_be_focused()
    with live.app.app_context():
        assert not kill_switch.state("ip_match", fresh=True).enabled

    # Pressed on purpose, the button asks for the reason, and with it switches back on.
    page.mouse.click(x, y)
    expect(reason).to_be_focused()
    reason.fill("Proxy fixed")
    section.get_by_role("button", name="Switch on").click()
    expect(page.get_by_role("status")).to_contain_text("ip_match: switched on")


def test_a_deliberate_click_works_once_the_page_has_been_shown_a_moment(live, page, user):
    """Held again each time the page is shown again: a hidden tab brought back, or its
    window back in front (a pop-up over it closed). Released each time after the moment."""
    printer = live.linked_printer(user["id"])
    log_in(page, user["email"])
    open_unlink_page(page, "Target")
    unlink = page.get_by_role("button", name="Yes, unlink the printer “Target”", exact=True)
    expect(unlink).to_be_enabled()

    assert page.evaluate(SHOW, "hidden") is True
    page.wait_for_timeout(SETTLE_MS)
    expect(unlink).to_be_disabled()  # hidden: held until shown
    assert page.evaluate(SHOW, "visible") is True
    expect(unlink).to_be_enabled()
    assert page.evaluate(FOCUS) is True
    expect(unlink).to_be_enabled()

    unlink.click()
    expect(page.get_by_role("status")).to_contain_text("is unlinked")
    assert printer.me().status == 401


# Records, each time the near-you list's script redraws the list, whether its buttons were
# held (observer callbacks run once the redrawing script is done).
WATCH_REDRAWS = """() => {
    window.redraws = [];
    const list = document.getElementById("nearby-devices");
    new MutationObserver(() => window.redraws.push(
        Array.from(list.querySelectorAll("button"), button => button.disabled)))
        .observe(list, {childList: true});
}"""


def test_printers_near_you_redrawn_under_the_cursor_are_held(live, page, user):
    """The list refreshes by itself: when a printer appears, the buttons move, and a click
    meant for one must not press the one drawn in its place. A refresh that changes nothing
    shown (the printer only announced again) redraws and holds nothing: a deliberate click
    is not dropped every few seconds."""
    first = Printer(live.base_url, name="First near you")
    assert first.announce().json["status"] == "waiting"
    log_in(page, user["email"])
    page.goto("/printers/nearby")
    link = page.get_by_role("button", name="Link this printer")
    expect(link).to_have_count(1)
    expect(link).to_be_enabled()
    page.evaluate(WATCH_REDRAWS)
    asked: list[str] = []
    page.on("response", lambda r: asked.append(r.url) if "/api/" in r.url
            and "nearby" in r.url else None)

    assert first.announce().json["status"] == "waiting"  # its last-seen time changes
    page.wait_for_timeout(2 * 2_000 + 500)  # two poll intervals of the live app
    assert asked, "the list was not refreshed"
    assert page.evaluate("window.redraws") == []
    expect(link).to_be_enabled()

    second = Printer(live.base_url, name="Second near you")
    assert second.announce().json["status"] == "waiting"
    expect(link).to_have_count(2)
    assert page.evaluate("window.redraws")[-1] == [True, True]
    expect(link.first).to_be_enabled()  # released after the moment
    expect(link.last).to_be_enabled()
