"""Keyboard only: log in, type a printer's code and approve it with Tab, typing and Enter.

No clicks and no focus set by the test: focus moves only by the page (autofocus) and the
Tab key. Each control reached must show where the focus is (a visible outline).
"""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.live import PASSWORD, Printer

MAX_TABS = 30


def focused(page) -> dict:
    return page.evaluate("""() => {
        const el = document.activeElement;
        const style = getComputedStyle(el);
        return {tag: el.tagName.toLowerCase(), id: el.id, text: el.textContent.trim(),
                outline: style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0};
    }""")


def tab_to(page, matches) -> dict:
    """Press Tab until the focused element matches (it may be focused already)."""
    for _ in range(MAX_TABS):
        now = focused(page)
        if matches(now):
            assert now["outline"], f"no visible focus on {now}"
            return now
        page.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached the control; last focus: {focused(page)}")


def test_code_entry_form_by_keyboard_only(live, page, user):
    printer = Printer(live.base_url, "Keyboard printer")
    started = printer.authorize()

    page.goto("/login")
    tab_to(page, lambda el: el["id"] == "email")
    page.keyboard.type(user["email"])
    tab_to(page, lambda el: el["id"] == "password")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="My printers")).to_be_visible()

    # From the dashboard to the code form, by keyboard.
    tab_to(page, lambda el: el["text"] == "Add a printer")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Add a printer")).to_be_visible()
    tab_to(page, lambda el: el["text"] == "Enter the printer's code")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Link a printer")).to_be_visible()

    # A typo first: the error is announced and the code can be typed again.
    tab_to(page, lambda el: el["id"] == "code")
    page.keyboard.type("BCDF-GHJK")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("No printer is waiting with this code")
    tab_to(page, lambda el: el["id"] == "code")
    page.keyboard.press("Control+A")
    page.keyboard.type(started["user_code"].lower())
    page.keyboard.press("Enter")

    expect(page.locator("#device-heading")).to_have_text(
        "The printer calls itself: Keyboard printer")
    # Approve is held (disabled, so Tab skips it) for a moment after the page is shown
    # (static/click_guard.js); a person reading the page first never meets that.
    expect(page.get_by_role("button", name="Approve")).to_be_enabled()
    tab_to(page, lambda el: el["tag"] == "button" and el["text"] == "Approve")
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("Approved.")
    reply = printer.poll(started["device_code"])
    assert reply.status == 200, reply.body
    assert [d.device_uid for d in live.devices_of(user["id"])] == [printer.device_id]
