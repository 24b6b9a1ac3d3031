"""What a keyboard or screen-reader user meets: focus rings and borders that can be seen
(WCAG 1.4.11, 3:1), controls named after their printer, forms tied to their hints and
errors, a safe choice that does not look dangerous, live regions that speak only when
there is news, and waiting pages that do not reload under the reader.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from playwright.sync_api import expect

from tests.browser.conftest import log_in
from tests.browser.live import PASSWORD, Printer

# The WCAG contrast ratio of two computed colours ("rgb(r, g, b)"), in the page.
CONTRAST = """
    const channels = colour => colour.match(/[\\d.]+/g).slice(0, 3).map(Number);
    const luminance = colour => {
        const [r, g, b] = channels(colour).map(value => {
            const c = value / 255;
            return c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
        });
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const contrast = (a, b) => {
        const [light, dark] = [luminance(a), luminance(b)].sort((x, y) => y - x);
        return (light + 0.05) / (dark + 0.05);
    };
    // The first opaque background behind an element.
    const behind = element => {
        for (let at = element; at; at = at.parentElement) {
            const colour = getComputedStyle(at).backgroundColor;
            if (colour !== "rgba(0, 0, 0, 0)" && colour !== "transparent") return colour;
        }
        return "rgb(255, 255, 255)";
    };
"""
DANGER_RED = "rgb(179, 38, 30)"


def focus_ring(page) -> dict:
    """The focused element's outline, and its contrast with what is around it."""
    return page.evaluate("() => {" + CONTRAST + """
        const element = document.activeElement;
        const style = getComputedStyle(element);
        const around = behind(element.parentElement);
        return {tag: element.tagName.toLowerCase(), id: element.id,
                label: element.getAttribute("aria-label"),
                style: style.outlineStyle, width: parseFloat(style.outlineWidth),
                contrast: contrast(style.outlineColor, around),
                page: contrast(style.outlineColor, behind(document.body))};
    }""")


def tab_until(page, matches, limit: int = 40) -> dict:
    for _ in range(limit):
        page.keyboard.press("Tab")
        now = focus_ring(page)
        if matches(now):
            return now
    raise AssertionError(f"Tab never reached the control; last: {focus_ring(page)}")


def test_focus_rings_and_input_borders_can_be_seen(live, page, user):
    page.goto("/login")
    for target in (lambda el: el["id"] == "password", lambda el: el["tag"] == "button"):
        ring = tab_until(page, target)
        assert ring["style"] != "none" and ring["width"] >= 2, ring
        assert ring["contrast"] >= 3 and ring["page"] >= 3, ring
    borders = page.evaluate("() => {" + CONTRAST + """
        return Array.from(document.querySelectorAll("main input:not([type=hidden])"),
            input => contrast(getComputedStyle(input).borderTopColor, behind(input.parentElement)));
    }""")
    assert borders and min(borders) >= 3, borders

    # A link in the header, on the white bar.
    log_in(page, user["email"])
    ring = tab_until(page, lambda el: el["tag"] == "a")
    assert ring["style"] != "none" and ring["contrast"] >= 3, ring


def test_deny_is_the_neutral_choice_and_the_name_is_the_printers_own(live, page, user):
    printer = Printer(live.base_url, "Totally your printer")
    started = printer.authorize()
    log_in(page, user["email"])
    page.goto(started["verification_uri_complete"])
    heading = page.locator("#device-heading")
    expect(heading).to_have_text("The printer calls itself: Totally your printer")
    deny = page.get_by_role("button", name="Deny")
    approve = page.get_by_role("button", name="Approve")
    colours = {name: button.evaluate("element => getComputedStyle(element).backgroundColor")
               for name, button in (("deny", deny), ("approve", approve))}
    assert colours["deny"] != DANGER_RED, colours
    assert colours["deny"] != colours["approve"], colours
    # Still a button to see: its border stands out from the page.
    border = deny.evaluate("element => {" + CONTRAST + """
        return contrast(getComputedStyle(element).borderTopColor, behind(element.parentElement));
    }""")
    assert border >= 3


def test_the_question_after_a_qr_link_has_a_title_and_two_answers_to_tap(live, open_context,
                                                                          user):
    started = Printer(live.base_url, "Office printer").authorize()
    phone = open_context(phone=True).new_page()
    # Through the login form's next: this browser did not open the link itself.
    phone.goto("/login?next=" + urlsplit(started["verification_uri_complete"]).path)
    phone.get_by_label("Email").fill(user["email"])
    phone.get_by_label("Password").fill(PASSWORD)
    phone.get_by_role("button", name="Log in").tap()
    expect(phone.get_by_role("heading", name="Did you just scan your printer's QR code?")
           ).to_be_visible()
    expect(phone).to_have_title("Did you just scan your printer's QR code? · tsd-server")
    yes = phone.get_by_role("link", name="Yes, I scanned it: continue")
    no = phone.get_by_role("link", name="No, back to my printers")
    for answer in (yes, no):
        assert answer.bounding_box()["height"] >= 44
    colours = [answer.evaluate("element => getComputedStyle(element).backgroundColor")
               for answer in (yes, no)]
    assert colours[0] == "rgb(11, 95, 255)", colours  # the primary button
    assert colours[1] != colours[0] and colours[1] != DANGER_RED, colours


def test_the_code_page_says_the_code_is_for_your_own_printer_only(live, page, user):
    log_in(page, user["email"])
    page.goto("/printers/add/code")
    warning = page.locator("#own-printer-only")
    expect(warning).to_contain_text("Type this code only into your own printer, in front of you.")
    page.get_by_role("button", name="Get a code").click()
    expect(page.locator("[data-pairing-code]")).to_be_visible()
    expect(warning).to_contain_text("Never read it out or send it to anyone")
    # Next to the code, before the rest of what the card says.
    code_box = page.locator("[data-pairing-code]").bounding_box()
    warning_box = warning.bounding_box()
    assert 0 <= warning_box["y"] - (code_box["y"] + code_box["height"]) < 50


def test_the_pairing_code_countdown_speaks_only_at_one_minute_and_at_expiry(live, page, user):
    log_in(page, user["email"])
    page.clock.install()
    page.goto("/printers/add/code")
    page.get_by_role("button", name="Get a code").click()
    countdown = page.locator(".countdown")
    expect(countdown).to_contain_text(re.compile(r"\d+:\d\d left\."))
    expect(page.get_by_text("(in 10 minutes)")).to_be_visible()
    # Neither the ticking text nor anything around it is a live region.
    live_around = countdown.evaluate("""element => {
        for (let at = element; at; at = at.parentElement) {
            if (at.hasAttribute("aria-live") || ["status", "alert", "timer", "log"]
                    .includes(at.getAttribute("role"))) return at.outerHTML.slice(0, 80);
        }
        return null;
    }""")
    assert live_around is None
    announcer = page.locator("[data-countdown-announce]")
    expect(announcer).to_have_attribute("role", "status")
    expect(announcer).to_have_text("")
    page.clock.run_for(5_000)
    expect(announcer).to_have_text("")

    page.clock.fast_forward("08:58")  # the code is issued for 10 minutes
    page.clock.run_for(2_000)
    expect(countdown).to_contain_text(re.compile(r"^(1:00|0:5\d) left\.$"))
    expect(announcer).to_have_text("1 minute left for this code.")

    page.clock.fast_forward("01:01")
    page.clock.run_for(1_000)
    expect(countdown).to_have_text("This code has expired; get a new one.")
    expect(announcer).to_have_text("This code has expired; get a new one.")
    # "(in 10 minutes)" was true when the page was drawn, not any more.
    expect(page.get_by_text("(in 10 minutes)")).to_be_hidden()


def test_printers_near_you_keeps_the_focus_on_the_same_printer(live, page, user):
    first = Printer(live.base_url, name="Prusa by the door")
    second = Printer(live.base_url, name="Voron by the window")
    for printer in (first, second):
        assert printer.announce().json["status"] == "waiting"
    log_in(page, user["email"])
    page.goto("/printers/nearby")
    card = page.locator(f'li.device[data-device="{second.device_id}"]')
    button = card.get_by_role("button", name="Link this printer")
    expect(button).to_be_enabled()
    tab_until(page, lambda el: el["tag"] == "button" and page.evaluate(
        "document.activeElement.closest('li')?.dataset.device") == second.device_id)
    page.evaluate("document.activeElement.dataset.marked = 'yes'")
    fetched: list[str] = []
    page.on("response", lambda r: fetched.append(r.url) if "/api/" in r.url
            and "nearby" in r.url else None)
    # The printers keep announcing (their last-seen time changes), the page keeps asking.
    for _ in range(3):
        for printer in (first, second):
            printer.announce()
        seen = len(fetched)
        page.wait_for_timeout(2_000 + 300)  # a poll interval of the live app
        assert len(fetched) > seen, "the page did not ask again"
        assert page.evaluate("document.activeElement.dataset.marked") == "yes", (
            "the focus left the button (its card was drawn again)")

    # A third printer comes: the focus stays on the same printer's button.
    third = Printer(live.base_url, name="Ender on the shelf")
    assert third.announce().json["status"] == "waiting"
    expect(page.locator("li.device")).to_have_count(3)
    expect(button).to_be_enabled()  # held for a moment if the list moved, then released
    expect(button).to_be_focused()


def test_printers_near_you_announces_only_the_count_and_names_each_button(live, page, user):
    first = Printer(live.base_url, name="Prusa by the door")
    assert first.announce().json["status"] == "waiting"
    log_in(page, user["email"])
    page.goto("/printers/nearby")
    expect(page.locator("[aria-live]")).to_have_count(0)
    count = page.locator("#nearby-count")
    expect(count).to_have_attribute("role", "status")
    expect(count).to_have_text("1 printer found")
    # Each button says whose it is, the name quoted (a printer may call itself anything).
    expect(page.get_by_role("button", name="Link this printer: “Prusa by the door”",
                            exact=True)).to_have_count(1)

    # A card that nearby.js adds says it the same way.
    second = Printer(live.base_url, name="all printers")
    assert second.announce().json["status"] == "waiting"
    expect(count).to_have_text("2 printers found")
    expect(page.get_by_role("button", name="Link this printer: “all printers”",
                            exact=True)).to_have_count(1)
    # Picked in another tab: nearby.js redraws its card here with a link to type the code.
    other = page.context.new_page()
    other.goto("/printers/nearby")
    other.get_by_role("button", name="Link this printer: “all printers”").click()
    other.wait_for_url("**/printers/nearby/offers/*")
    expect(page.get_by_role("link", name="Enter the code of “all printers”", exact=True)
           ).to_have_count(1)
    # The list itself is not read out: nothing in it is live.
    expect(page.locator("#nearby-devices [role=status], #nearby-devices [role=alert]")
           ).to_have_count(0)


def test_dashboard_controls_say_which_printer_they_are_for(live, page, user):
    live.linked_printer(user["id"], "Kitchen printer")
    live.linked_printer(user["id"], "Garage printer")
    log_in(page, user["email"])
    for name in ("Kitchen printer", "Garage printer"):
        expect(page.get_by_role("link", name=f"Unlink the printer “{name}”", exact=True)
               ).to_have_count(1)
        expect(page.get_by_role("button", name=f"Rename the printer “{name}”", exact=True)
               ).to_have_count(1)
        expect(page.get_by_label(f"New name for the printer “{name}”", exact=True)
               ).to_have_value(name)


def test_account_forms_help_password_managers_and_name_their_errors(live, page, user):
    page.goto("/login")
    expect(page.get_by_label("Email")).to_have_attribute("autocomplete", "username")
    expect(page.get_by_label("Password")).to_have_attribute("autocomplete", "current-password")

    page.goto("/register")
    expect(page.get_by_label("Email")).to_have_attribute("autocomplete", "username")
    password = page.get_by_label("Password", exact=True)
    expect(password).to_have_attribute("autocomplete", "new-password")
    expect(page.get_by_label("Repeat password")).to_have_attribute("autocomplete",
                                                                   "new-password")
    expect(password).to_have_accessible_description("At least 10 characters.")

    # Errors are tied to their fields: a screen reader reads them with the field.
    page.get_by_label("Email").fill("grace@example.org")
    page.get_by_label("Your name").fill("Grace")
    password.fill("short")
    page.get_by_label("Repeat password").fill("other")
    page.get_by_role("button", name="Sign up").click()
    password = page.get_by_label("Password", exact=True)
    expect(password).to_have_attribute("aria-invalid", "true")
    expect(password).to_have_accessible_description(re.compile(
        r"^At least 10 characters\. .*\b10\b"))
    expect(page.get_by_label("Repeat password")).to_have_accessible_description(
        "Passwords differ.")
    expect(page.get_by_label("Email")).not_to_have_attribute("aria-describedby",
                                                             re.compile(".*"))

    log_in(page, user["email"])
    page.goto("/account/password")
    expect(page.get_by_label("Current password")).to_have_attribute("autocomplete",
                                                                    "current-password")
    expect(page.get_by_label("New password", exact=True)).to_have_attribute(
        "autocomplete", "new-password")
    expect(page.get_by_label("New password", exact=True)).to_have_accessible_description(
        "At least 10 characters.")
    expect(page.get_by_label("Repeat new password")).to_have_attribute("autocomplete",
                                                                       "new-password")


def test_the_page_waiting_for_the_printer_keeps_the_focus_where_it_is(live, page, user):
    """It reloaded itself every poll interval until the printer checked in (for up to 5
    minutes, if the printer is off): each time, the focus and a screen reader's place went
    back to the top of the page (WCAG 2.2.1, F41). It asks in the background now, and
    opens the page only once there is news."""
    printer = Printer(live.base_url, name="Printer slow to check in")
    assert printer.announce().json["status"] == "waiting"
    log_in(page, user["email"])
    page.goto("/printers/nearby")
    page.get_by_role("button", name="Link this printer: “Printer slow to check in”").click()
    page.wait_for_url("**/printers/nearby/offers/*")
    offer_url = page.url
    code = printer.announce().json["confirmation"]["code"]
    page.get_by_label("Code shown on the printer").fill(code)
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_text("Confirmed.")).to_be_visible()
    expect(page.get_by_role("status").filter(has_text="checks again by itself")).to_be_visible()

    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.resource_type) if r.url == offer_url else None)
    mine = page.locator("main").get_by_role("link", name="My printers")
    mine.focus()
    page.evaluate("document.activeElement.dataset.marked = 'yes'")
    page.wait_for_timeout(2 * 2_000 + 500)  # two poll intervals of the live app
    assert asked.count("fetch") >= 2 and "document" not in asked, asked
    expect(mine).to_be_focused()
    assert page.evaluate("document.activeElement.dataset.marked") == "yes", "reloaded"

    # The printer checks in and is linked: the page opens My printers, which says so.
    assert printer.announce().json["status"] == "linked"
    page.wait_for_url(live.url("/"))
    expect(page.get_by_role("status").filter(has_text="is now linked")).to_have_text(
        "“Printer slow to check in” is now linked to your account.")


def test_the_status_line_of_printers_near_you_says_why_in_words(live, page, user):
    """It ended with the reason's code ("(reason: household_limit)"), which means nothing
    to a person and is read out too; the words before it say it all."""
    log_in(page, user["email"])
    page.goto("/printers/nearby")
    words = "More unlinked printers are announcing from here than allowed."
    page.route("**/api/v1/discovery/nearby", lambda route: route.fulfill(json={
        "eligible": False, "reason": "household_limit", "message": words, "household": None,
        "poll_interval": 2, "devices": []}))
    status = page.locator("#nearby-status")
    expect(status).to_be_visible()  # the next refresh
    expect(status).to_have_text(words)
    expect(status).to_have_attribute("data-reason", "household_limit")  # for support


def test_a_notice_stands_out_from_the_text_around_it(live, page, user):
    """The approval page's note that the printer's network could not be checked had the
    class "notice" and no style of its own: it read as one more paragraph."""
    from sqlalchemy import update

    from tsd_server.models import DeviceAuthorization

    printer = Printer(live.base_url, name="Printer on the other address family")
    started = printer.authorize()
    with live.db() as session:  # as for a printer on IPv4 and a phone on IPv6
        session.execute(update(DeviceAuthorization).values(requested_household=None))
        session.commit()
    log_in(page, user["email"])
    page.goto("/link")
    page.get_by_label("Code shown on the printer").fill(started["user_code"])
    page.get_by_role("button", name="Continue").click()
    notice = page.locator("#unchecked-network-notice")
    expect(notice).to_be_visible()
    style = notice.evaluate("""element => {
        const style = getComputedStyle(element);
        return {background: style.backgroundColor, padding: parseFloat(style.paddingLeft),
                page: getComputedStyle(element.parentElement).backgroundColor,
                body: getComputedStyle(document.body).backgroundColor};
    }""")
    assert style["background"] not in ("rgba(0, 0, 0, 0)", style["body"]), style
    assert style["padding"] > 0, style
