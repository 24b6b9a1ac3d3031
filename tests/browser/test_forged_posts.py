"""Forged cross-origin form posts (CSRF) are refused, in a real browser with real cookies.

The hostile page is served from another origin and posts a form to the app as soon as it
loads, while the person is logged in. Two origins: 127.0.0.2 is another site (the browser
withholds the SameSite=Lax session cookie as well), and 127.0.0.1 on another port is the
same site (the cookie IS sent, like from a sibling subdomain): only the CSRF token stops it.
Each attack is also tried as the real page's button, to show the action would have worked.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from playwright.sync_api import expect

from tests.browser.conftest import log_in
from tests.browser.live import (
    OtherSite,
    Printer,
    double_click_game,
    forged_form_page,
    serving,
)

# What a QR link opened by another site shows instead of the approval page.
ASKED_FIRST = "Did you just scan your printer's QR code?"


def visit_forgery(page, hostile: OtherSite, action: str, fields: dict[str, str]) -> None:
    """The person opens the hostile page; it posts to the app and the browser follows."""
    hostile.pages["/win"] = forged_form_page(action, fields)
    page.goto(hostile.base_url + "/win")
    page.wait_for_url(action)
    expect(page.get_by_role("heading", name="Form expired")).to_be_visible()


def test_forged_unlink_is_refused(live, page, user, hostile):
    from tsd_server.discovery.link_service import link_device
    from tsd_server.extensions import db
    from tsd_server.models import User

    printer = Printer(live.base_url, "Target")
    with live.app.test_request_context():
        result = link_device(owner=db.session.get(User, user["id"]),
                             device_uid=printer.device_id, name=printer.name, model=None,
                             strategy="pairing_code", actor="cli", address=None)
        printer.access_token, device_pk = result.access_token, result.device.id
    log_in(page, user["email"])
    action = live.url(f"/printers/{device_pk}/unlink")
    for forged_token in ("", "forged-token"):
        visit_forgery(page, hostile, action, {"csrf_token": forged_token})
    assert printer.me().status == 200
    [device] = live.devices_of(user["id"])
    assert device.token_hash is not None

    # The same action from the app's own page works: the forgery was refused, not broken,
    # and the person is still logged in (the refusal did not replace their session).
    page.goto("/")
    expect(page.get_by_role("heading", name="My printers")).to_be_visible()
    page.get_by_role("link", name="Unlink the printer “Target”", exact=True).click()
    page.get_by_role("button", name="Yes, unlink the printer “Target”", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("is unlinked")
    assert printer.me().status == 401


def test_forged_unlink_all_is_refused(live, page, user, hostile):
    """The box is ticked in the forged form too: only the CSRF token stops it."""
    printer = live.linked_printer(user["id"])
    log_in(page, user["email"])
    for forged_token in ("", "forged-token"):
        visit_forgery(page, hostile, live.url("/printers/unlink-all"),
                      {"csrf_token": forged_token, "confirm": "y"})
    assert printer.me().status == 200


def test_forged_approval_of_a_waiting_printer_is_refused(live, page, user, hostile):
    """The person typed a printer's code and sees the approval page; a forged post tries to
    press Approve for them."""
    printer = Printer(live.base_url, "Stranger's printer")
    started = printer.authorize()
    log_in(page, user["email"])
    page.goto("/link")
    page.get_by_label("Code shown on the printer").fill(started["user_code"])
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("button", name="Approve")).to_be_visible()

    visit_forgery(page, hostile, live.url("/link/confirm"), {"decision": "approve"})
    assert printer.poll(started["device_code"]).json["error"] in ("authorization_pending",
                                                                  "slow_down")
    assert live.devices_of(user["id"]) == []

    page.goto("/link/confirm")
    page.get_by_role("button", name="Deny").click()
    assert printer.poll(started["device_code"]).json["error"] == "access_denied"


def test_a_qr_link_opened_by_another_site_cannot_take_the_approval(live, page, user, hostile):
    """The person is on the approval page of their own printer. Another site opens the
    attacker's QR link in a new tab (a top-level GET: the session cookie goes along), so
    that the session's pending request would become the attacker's. The link is not spent
    (the person is asked first), and Approve, pressed on the page the person still sees,
    approves their own printer only."""
    mine, theirs = Printer(live.base_url, "My Prusa"), Printer(live.base_url, "My Prusa")
    my_request, their_request = mine.authorize(), theirs.authorize()
    log_in(page, user["email"])
    page.goto("/link")
    page.get_by_label("Code shown on the printer").fill(my_request["user_code"])
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("button", name="Approve")).to_be_visible()

    link = their_request["verification_uri_complete"]
    hostile.pages["/qr"] = f'<!doctype html><script>location.href = "{link}";</script>'
    other_tab = page.context.new_page()
    other_tab.goto(hostile.base_url + "/qr")
    other_tab.wait_for_url(link)
    expect(other_tab.get_by_role("heading", name=ASKED_FIRST)).to_be_visible()
    other_tab.close()

    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("status")).to_contain_text("Approved")
    assert theirs.poll(their_request["device_code"]).json["error"] in (
        "authorization_pending", "slow_down")
    assert mine.poll(my_request["device_code"]).status == 200
    assert [d.device_uid for d in live.devices_of(user["id"])] == [mine.device_id]


def test_a_double_click_on_another_site_cannot_approve_a_strangers_printer(
        live, page, open_context, user, hostile):
    """Double-clickjacking, no frame needed: the first click of a double-click on the other
    site's button sends the person to the stranger's QR link, and the second lands where
    Approve would be. The browser says another site started the navigation (Sec-Fetch-Site),
    so the person is asked first and no approval page is drawn."""
    theirs = Printer(live.base_url, "Office printer")
    started = theirs.authorize()
    link = started["verification_uri_complete"]
    # Where Approve is drawn: the attacker looks at an approval page of their own.
    _, attacker_email = live.make_user(display_name="Mallory")
    calibration = open_context().new_page()
    log_in(calibration, attacker_email)
    calibration.goto(Printer(live.base_url, "Office printer").authorize()[
        "verification_uri_complete"])
    box = calibration.get_by_role("button", name="Approve").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    hostile.pages["/game"] = double_click_game(x, y, link)
    seen = []
    page.on("request", lambda r: seen.append(r.all_headers().get("sec-fetch-site"))
            if r.url == link else None)
    log_in(page, user["email"])
    page.goto(hostile.base_url + "/game")
    page.mouse.click(x, y)
    page.wait_for_url(link)
    page.mouse.click(x, y)
    expect(page.get_by_role("heading", name=ASKED_FIRST)).to_be_visible()
    assert seen and seen[0] in ("cross-site", "same-site")
    assert theirs.poll(started["device_code"]).json["error"] in (
        "authorization_pending", "slow_down")
    assert live.devices_of(user["id"]) == []
    # The page's own link is reported same-origin: a person who did scan goes on from here.
    page.get_by_role("link", name="Yes, I scanned it: continue").click()
    expect(page.get_by_role("button", name="Approve")).to_be_visible()


def test_over_plain_http_another_sites_qr_link_is_asked_about(live, page, user, over_http):
    """Chromium sends no Sec-Fetch-Site at all to a plain-http server that is not loopback
    (a LAN address, as self-hosters run it): the open cannot say who started it, so the
    person is asked first, and nothing is bound. Once this let another site send a
    logged-in person straight to a stranger's approval page."""
    from sqlalchemy import select

    from tsd_server.models import AuditEvent

    theirs = Printer(over_http, "Office printer", source=urlsplit(over_http).hostname)
    started = theirs.authorize()
    link = started["verification_uri_complete"]
    assert link.startswith(over_http + "/link/qr/")
    other_site = OtherSite()
    other_site.pages["/qr"] = f'<!doctype html><script>location.href = "{link}";</script>'
    sent = []
    page.on("request", lambda r: sent.append(r.all_headers()) if r.url == link else None)
    log_in(page, user["email"], base_url=over_http)
    with serving(other_site, "127.0.0.2") as other_base:
        page.goto(other_base + "/qr")
        page.wait_for_url(link)
    expect(page.get_by_role("heading", name=ASKED_FIRST)).to_be_visible()
    expect(page.get_by_text("did not say whether you opened this link")).to_be_visible()
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    # The real browser's proof: a navigation from another site, and no Fetch Metadata.
    assert sent and sent[0].get("referer", "").startswith(other_base)
    assert not [name for name in sent[0] if name.startswith("sec-fetch-")], sent[0]
    assert theirs.poll(started["device_code"]).json["error"] in (
        "authorization_pending", "slow_down")
    assert live.devices_of(user["id"]) == []
    with live.db() as session:
        details = session.scalars(select(AuditEvent.detail).where(
            AuditEvent.event == "qr_link_cross_site",
            AuditEvent.device_uid == theirs.device_id)).all()
    assert details == ["Sec-Fetch-Site: not sent"]
    # The question's own link (no header either: it carries a one-time value) leads on.
    page.get_by_role("link", name="Yes, I scanned it: continue").click()
    expect(page.get_by_role("button", name="Approve")).to_be_visible()


def test_forged_kill_switch_toggle_is_refused(live, page, admin, hostile):
    from tsd_server.discovery import kill_switch

    log_in(page, admin["email"])
    visit_forgery(page, hostile, live.url("/admin/kill-switches"),
                  {"target": "all", "action": "disable", "reason": "forged"})
    with live.app.app_context():
        assert kill_switch.state("ip_match", fresh=True).enabled
