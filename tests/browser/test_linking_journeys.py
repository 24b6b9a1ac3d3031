"""The three ways of linking a printer, end to end: a person in chromium, a printer on HTTP.

Each journey starts where a person starts (the dashboard or "Add printer"), uses only what
the pages show, and ends with the printer holding a working token and the dashboard
listing it. Sign-up, log-in, log-out and the dashboard's own actions come last.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from playwright.sync_api import expect

from tests.browser.conftest import log_in
from tests.browser.live import PASSWORD, SETTINGS, Printer

GRANT_PENDING = "authorization_pending"
# What a QR link shows when this browser may not have opened it itself.
ASKED_FIRST = "Did you just scan your printer's QR code?"


def device_card(page, printer: Printer):
    return page.locator(f'li.device[data-device="{printer.device_id}"]')


def start_from_add_printer(page, way: str) -> None:
    page.goto("/")
    page.get_by_role("link", name="Add a printer").click()
    page.get_by_role("link", name=way).click()


def assert_linked(live, page, printer: Printer, user: dict, via_title: str) -> None:
    """The printer's token works and names the owner; My printers lists it."""
    me = printer.me()
    assert me.status == 200, me.body
    assert me.json["device"]["id"] == printer.device_id
    page.goto("/")
    card = device_card(page, printer)
    expect(card.get_by_role("heading")).to_have_text(printer.name)
    expect(card.locator("[data-linked-via]")).to_have_text(via_title)
    expect(card).to_contain_text("from 127.0.0.1")
    [device] = [d for d in live.devices_of(user["id"]) if d.device_uid == printer.device_id]
    assert device.token_hash is not None


def test_printers_near_you_confirmed_with_the_code_the_printer_shows(live, page, user):
    log_in(page, user["email"])
    start_from_add_printer(page, "Printers near you")
    expect(page.get_by_role("heading", name="Printers near you")).to_be_visible()
    expect(page.locator("[data-without-script]")).to_be_hidden()  # nearby.js runs

    # The printer starts announcing after the page is open: the list updates by itself.
    printer = Printer(live.base_url, name="Prusa near you")
    assert printer.announce().json["status"] == "waiting"
    card = device_card(page, printer)
    expect(card).to_be_visible()
    card.get_by_role("button", name="Link this printer").click()
    expect(page.get_by_role("heading", name="Link “Prusa near you”")).to_be_visible()

    shown = printer.announce().json
    assert shown["status"] == "confirm" and shown["confirmation"]["account"] == user["name"]
    page.get_by_label("Code shown on the printer").fill(shown["confirmation"]["code"])
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_text("Confirmed.")).to_be_visible()
    expect(page.locator("[data-without-script]")).to_be_hidden()  # refresh.js runs
    expect(page.get_by_text("This page checks again by itself")).to_be_visible()

    linked = printer.announce().json
    assert linked["status"] == "linked" and linked["access_token"]
    # The waiting page checks again by itself and ends on My printers.
    page.wait_for_url(live.url("/"))
    assert_linked(live, page, printer, user, "Printers near you")


def test_code_shown_on_the_web_typed_into_the_printer(live, page, user):
    log_in(page, user["email"])
    start_from_add_printer(page, "Show a code for the printer")
    page.get_by_role("button", name="Get a code").click()
    code = page.locator("[data-pairing-code]").inner_text()
    assert re.fullmatch(r"[B-DF-HJ-NP-TV-XZ]{4}-[B-DF-HJ-NP-TV-XZ]{4}", code)
    expect(page.locator(".countdown")).to_contain_text(re.compile(r"\d+:\d\d left\."))

    printer = Printer(live.base_url, name="Voron in the garage", model="2.4")
    typed_sloppily = code.lower().replace("-", " ")
    assert printer.redeem(typed_sloppily).status == 201
    assert printer.redeem(code).status == 400  # once only
    assert_linked(live, page, printer, user, "Pairing code")


def test_code_shown_by_the_printer_typed_at_link_and_approved(live, page, user):
    printer = Printer(live.base_url, name="Ender in the hall", model="3 V2")
    started = printer.authorize()
    assert printer.poll(started["device_code"]).json["error"] == GRANT_PENDING

    log_in(page, user["email"])
    start_from_add_printer(page, "Enter the printer's code")
    page.get_by_label("Code shown on the printer").fill(started["user_code"])
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", name="Link this printer to your account?")).to_be_visible()
    expect(page.locator("#device-heading")).to_have_text(
        "The printer calls itself: Ender in the hall")
    expect(page.get_by_text("3 V2")).to_be_visible()
    expect(page.locator("#approving-account")).to_contain_text(user["email"])
    expect(page.locator("#other-network-notice")).to_have_count(0)
    # Nothing is linked by typing the code alone.
    assert printer.poll(started["device_code"]).json["error"] in (GRANT_PENDING, "slow_down")

    page.get_by_role("button", name="Approve").click()
    page.wait_for_url(live.url("/"))
    expect(page.get_by_role("status")).to_contain_text("Approved.")
    assert printer.poll(started["device_code"]).status == 200
    assert_linked(live, page, printer, user, "Pairing code")


def test_a_printer_asking_from_another_network_is_flagged_and_denied(live, page, user):
    """RFC 8628 §5.4: a code sent by someone elsewhere comes from their network."""
    printer = Printer(live.base_url, name="Voron far away", source="127.0.0.3")
    started = printer.authorize()

    log_in(page, user["email"])
    start_from_add_printer(page, "Enter the printer's code")
    page.get_by_label("Code shown on the printer").fill(started["user_code"])
    page.get_by_role("button", name="Continue").click()
    notice = page.locator("#other-network-notice")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("another network than the one you are on now")
    expect(notice).to_contain_text("(it asked from 127.0.0.3/32; you are on 127.0.0.1/32)")
    # The warning comes before the buttons it is about.
    notice_box = notice.bounding_box()
    assert notice_box["y"] < page.get_by_role("button", name="Approve").bounding_box()["y"]

    page.get_by_role("button", name="Deny").click()
    page.wait_for_url(live.url("/"))
    expect(page.get_by_role("status")).to_contain_text("Denied.")
    assert printer.poll(started["device_code"]).json["error"] == "access_denied"


def test_qr_link_opened_on_a_phone_and_approved(live, open_context, user):
    printer = Printer(live.base_url, name="Bambu on the shelf", model="P1S")
    started = printer.authorize()
    phone = open_context(phone=True).new_page()

    # The phone is not logged in yet: log in, and come back to the link.
    phone.goto(started["verification_uri_complete"])
    expect(phone).to_have_url(re.compile(r"/login\?next="))
    phone.get_by_label("Email").fill(user["email"])
    phone.get_by_label("Password").fill(PASSWORD)
    phone.get_by_role("button", name="Log in").tap()
    expect(phone.get_by_role("heading", name="Link this printer to your account?")).to_be_visible()
    expect(phone.locator("dd.code")).to_have_text(started["user_code"])
    assert fits_the_screen(phone)

    phone.get_by_role("button", name="Approve").tap()
    phone.wait_for_url(live.url("/"))
    expect(phone.get_by_role("status")).to_contain_text("Approved.")
    assert printer.poll(started["device_code"]).status == 200
    assert_linked(live, phone, printer, user, "Scan the printer's QR code")
    assert fits_the_screen(phone)
    # The link was for one use.
    again = phone.goto(started["verification_uri_complete"])
    assert again.status == 400


def test_a_qr_link_sent_through_the_login_form_asks_first(live, open_context, user, hostile):
    """Phishing: another site sends a phone that is not logged in to this site's login form,
    with a stranger's QR link as ``next``. The redirect back after logging in is
    same-origin, but the phone never opened that link itself: it is asked first, and the
    link is not spent until it answers."""
    theirs = Printer(live.base_url, "Office printer")
    started = theirs.authorize()
    link = started["verification_uri_complete"]
    qr_path = urlsplit(link).path
    hostile.pages["/win"] = (f'<!doctype html><title>Claim your prize</title>'
                             f'<a href="{live.url("/login?next=" + qr_path)}">Log in</a>')
    phone = open_context(phone=True).new_page()

    phone.goto(hostile.base_url + "/win")
    phone.get_by_role("link", name="Log in").tap()
    phone.get_by_label("Email").fill(user["email"])
    phone.get_by_label("Password").fill(PASSWORD)
    phone.get_by_role("button", name="Log in").tap()
    expect(phone.get_by_role("heading", name=ASKED_FIRST)).to_be_visible()
    expect(phone.get_by_role("button", name="Approve")).to_have_count(0)
    assert theirs.poll(started["device_code"]).json["error"] in (GRANT_PENDING, "slow_down")
    # Someone who did scan it goes on from here, to the approval page.
    phone.get_by_role("link", name="Yes, I scanned it: continue").tap()
    expect(phone.get_by_role("heading", name="Link this printer to your account?")).to_be_visible()
    assert live.devices_of(user["id"]) == []


def test_over_plain_http_a_qr_scan_is_asked_about_once_and_links(live, open_context, user,
                                                                 over_http):
    """A LAN server over plain http (the README's QR walkthrough): chromium sends it no
    Fetch Metadata, so a scan cannot say the person started it. A phone that is not logged
    in logs in and is asked once, "Did you just scan...?"; its answer leads to the
    approval page (no loop back to the question), and approving links the printer."""
    address = urlsplit(over_http).hostname
    printer = Printer(over_http, name="Prusa on the LAN", source=address)
    started = printer.authorize()
    link = started["verification_uri_complete"]
    assert link.startswith(over_http + "/link/qr/")
    phone = open_context(phone=True).new_page()
    sent = []
    phone.on("request", lambda r: sent.append(r.all_headers()) if r.url == link else None)

    phone.goto(link)  # the scan
    assert sent and not [name for name in sent[0] if name.startswith("sec-fetch-")]
    expect(phone).to_have_url(re.compile(r"/login\?next="))
    phone.get_by_label("Email").fill(user["email"])
    phone.get_by_label("Password").fill(PASSWORD)
    phone.get_by_role("button", name="Log in").tap()
    expect(phone.get_by_role("heading", name=ASKED_FIRST)).to_be_visible()
    assert printer.poll(started["device_code"]).json["error"] in (GRANT_PENDING, "slow_down")
    phone.get_by_role("link", name="Yes, I scanned it: continue").tap()
    expect(phone.get_by_role("heading", name="Link this printer to your account?")).to_be_visible()
    expect(phone.locator("dd.code")).to_have_text(started["user_code"])
    phone.get_by_role("button", name="Approve").tap()
    phone.wait_for_url(over_http + "/")
    expect(phone.get_by_role("status")).to_contain_text("Approved.")
    assert printer.poll(started["device_code"]).status == 200
    assert [d.device_uid for d in live.devices_of(user["id"])] == [printer.device_id]


def fits_the_screen(page) -> bool:
    """No sideways scrolling: the page is no wider than the viewport."""
    return page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth")


def test_sign_up_log_in_and_log_out(live, page):
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login"))
    page.get_by_role("link", name="Sign up").first.click()
    page.get_by_label("Email").fill("grace@example.org")
    page.get_by_label("Your name").fill("Grace")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Repeat password").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_role("status")).to_contain_text("Account created")

    page.get_by_label("Email").fill("grace@example.org")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("Email or password is not right.")
    log_in(page, "grace@example.org")
    expect(page.get_by_role("heading", name="My printers")).to_be_visible()
    expect(page.get_by_text("No printers linked yet.")).to_be_visible()

    copied = [c for c in page.context.cookies() if c["name"] == "session"]
    assert copied
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("status")).to_contain_text(
        "You are logged out, on every browser where you were logged in.")
    page.goto("/printers/add")
    expect(page).to_have_url(re.compile(r"/login"))

    # A copy of the cookie taken before the logout logs nobody in elsewhere either.
    elsewhere = page.context.browser.new_context()
    try:
        elsewhere.add_cookies(copied)
        other = elsewhere.new_page()
        other.goto(live.base_url + "/printers/add")
        expect(other).to_have_url(re.compile(r"/login"))
    finally:
        elsewhere.close()


def test_an_account_locked_by_the_operator_is_logged_out_and_told_at_log_in(live, page, user):
    log_in(page, user["email"])
    expect(page.get_by_role("heading", name="My printers")).to_be_visible()
    result = live.app.test_cli_runner().invoke(
        args=["lock-account", user["email"], "--reason", "browser test"])
    assert result.exit_code == 0, result.output

    page.goto("/printers/add")
    expect(page).to_have_url(re.compile(r"/login"))
    page.get_by_label("Email").fill(user["email"])
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text(
        "This account is locked by the server's operator. Ask them why.")
    expect(page).to_have_url(re.compile(r"/login"))


def test_an_open_printers_near_you_list_goes_to_log_in_when_the_session_ends(live, page, user):
    """The session ends while the list is open (here the operator locks the account; a
    password change or a log-out elsewhere does the same): at its next refresh the page is
    the log-in page, not a list of Link buttons that would be refused under "(reason:
    login_required)"."""
    Printer(live.base_url, "Printer by the door").announce()
    log_in(page, user["email"])
    page.goto("/printers/nearby")
    link = page.get_by_role("button", name="Link this printer")
    expect(link).to_have_count(1)
    result = live.app.test_cli_runner().invoke(
        args=["lock-account", user["email"], "--reason", "browser test"])
    assert result.exit_code == 0, result.output

    expect(page).to_have_url(re.compile(r"/login"),
                             timeout=(SETTINGS["IP_MATCH_POLL_INTERVAL"] + 2) * 1000)
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    expect(link).to_have_count(0)
    assert "login_required" not in page.content()


def test_change_the_password_and_another_browser_is_logged_out(live, page, user):
    log_in(page, user["email"])
    elsewhere = page.context.browser.new_context(base_url=live.base_url)
    try:
        other = elsewhere.new_page()
        log_in(other, user["email"])

        page.get_by_role("link", name="Password").click()
        page.get_by_label("Current password").fill("not it")
        page.get_by_label("New password", exact=True).fill("a new passphrase here")
        page.get_by_label("Repeat new password").fill("a new passphrase here")
        page.get_by_role("button", name="Change password").click()
        expect(page.get_by_role("alert")).to_contain_text("The current password is not right.")

        page.get_by_label("Current password").fill(PASSWORD)
        page.get_by_label("New password", exact=True).fill("a new passphrase here")
        page.get_by_label("Repeat new password").fill("a new passphrase here")
        page.get_by_role("button", name="Change password").click()
        expect(page.get_by_role("status")).to_contain_text("Password changed")
        expect(page.get_by_role("heading", name="My printers")).to_be_visible()

        other.goto("/printers/add")
        expect(other).to_have_url(re.compile(r"/login"))
        log_in(other, user["email"], "a new passphrase here")
        expect(other.get_by_role("heading", name="My printers")).to_be_visible()
    finally:
        elsewhere.close()


def test_dashboard_shows_details_renames_unlinks_and_asks_for_a_relink(live, page, user):
    from tsd_server import devices
    from tsd_server.discovery.link_service import link_device
    from tsd_server.extensions import db
    from tsd_server.models import Device, User

    kept, lost = Printer(live.base_url, "Kept"), Printer(live.base_url, "Lost")
    with live.app.test_request_context(environ_base={"REMOTE_ADDR": "1.1.1.1"}):
        owner = db.session.get(User, user["id"])
        for printer, strategy in ((kept, "qr_code"), (lost, "ip_match")):
            result = link_device(owner=owner, device_uid=printer.device_id, name=printer.name,
                                 model="MK4", strategy=strategy, actor=f"user:{owner.id}",
                                 address=None)
            printer.access_token = result.access_token
        # An incident revoke took the second printer's token.
        lost_row = db.session.scalars(db.select(Device).where(
            Device.device_uid == lost.device_id)).one()
        devices.revoke_token(lost_row, actor="admin:1", detail="incident", needs_relink=True)
        db.session.commit()
    assert kept.me().status == 200  # the printer uses its token: last seen is now

    log_in(page, user["email"])
    kept_card, lost_card = device_card(page, kept), device_card(page, lost)
    expect(kept_card.locator("[data-linked-via]")).to_have_text("Scan the printer's QR code")
    expect(kept_card).to_contain_text("MK4")
    expect(kept_card.locator("dd").last).not_to_have_text("never")
    expect(lost_card).to_contain_text("Needs re-link")
    expect(lost_card.get_by_role("button")).to_have_count(0)

    kept_card.get_by_label("New name").fill("Kept, renamed")
    kept_card.get_by_role("button", name="Rename").click()
    expect(page.get_by_role("status")).to_contain_text("Renamed to Kept, renamed.")
    expect(kept_card.get_by_role("heading")).to_have_text("Kept, renamed")

    kept_card.get_by_role("link", name="Unlink the printer “Kept, renamed”", exact=True).click()
    page.get_by_role("button", name="Yes, unlink the printer “Kept, renamed”").click()
    expect(page.get_by_role("status")).to_contain_text("is unlinked")
    expect(kept_card).to_have_count(0)
    assert kept.me().status == 401


def test_unlink_all_needs_the_box_ticked_then_cuts_off_every_printer(live, page, user):
    from tsd_server.discovery.link_service import link_device
    from tsd_server.extensions import db
    from tsd_server.models import User

    printers = [Printer(live.base_url, name) for name in ("First", "Second")]
    with live.app.test_request_context():
        owner = db.session.get(User, user["id"])
        for printer in printers:
            printer.access_token = link_device(
                owner=owner, device_uid=printer.device_id, name=printer.name, model=None,
                strategy="pairing_code", actor=f"user:{owner.id}", address=None).access_token

    log_in(page, user["email"])
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    unlink_all = page.get_by_role("button", name="Unlink all printers")
    box = page.get_by_label("Yes, unlink all my printers")
    unlink_all.click()  # the box is not ticked: the browser does not send the form
    assert box.evaluate("element => element.validity.valueMissing") is True
    assert [printer.me().status for printer in printers] == [200, 200]

    box.check()
    unlink_all.click()
    expect(page.get_by_role("status")).to_contain_text("Unlinked 2 printers")
    # Only the ticked submission was ever sent (a first one would have been logged first).
    assert [url.rsplit("/", 2)[-2:] for url in posts] == [["printers", "unlink-all"]]
    expect(page.get_by_text("No printers linked yet.")).to_be_visible()
    expect(page.get_by_role("button", name="Unlink all printers")).to_have_count(0)
    assert [printer.me().status for printer in printers] == [401, 401]
