"""The admin in a browser: a kill switch with a reason, the audit log, proxy diagnostics,
an incident revoke that leaves the owner's printer marked "needs re-link", revoking one
account's printers, and locking an account."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from playwright.sync_api import expect

from tests.browser.conftest import log_in
from tests.browser.live import PASSWORD, Printer

REASON = "Incident 42: the load balancer stopped passing X-Forwarded-For"


def way(page, key: str):
    return page.locator(f'li.way[data-way="{key}"]')


def test_admin_switches_ip_match_off_and_near_you_disappears(live, open_context, admin, user):
    member = open_context().new_page()
    log_in(member, user["email"])
    member.goto("/printers/add")
    expect(way(member, "ip_match")).to_be_visible()

    boss = open_context().new_page()
    log_in(boss, admin["email"])
    boss.get_by_role("link", name="Admin").click()
    section = boss.locator('section[data-strategy="ip_match"]')
    expect(section).to_contain_text("On")
    section.get_by_label("Reason to disable ip_match").fill(REASON)
    section.get_by_role("button", name="Switch off").click()
    expect(boss.get_by_role("status")).to_contain_text("ip_match: switched off")
    expect(section).to_contain_text(f"by admin:{admin['id']}")
    expect(section).to_contain_text(REASON)

    # The very next page the member loads no longer offers it, and says why.
    member.reload()
    expect(way(member, "ip_match")).to_have_count(0)
    expect(member.locator('[data-strategy-off="ip_match"]')).to_contain_text(
        "Switched off by an administrator.")
    expect(member.locator('[data-strategy-off="ip_match"]')).not_to_contain_text(REASON)
    expect(way(member, "pairing_code_show")).to_be_visible()
    assert member.goto("/printers/nearby").status == 503

    # The toggle is in the audit log with who and why.
    boss.get_by_role("link", name="Audit log").click()
    boss.get_by_label("Event").fill("flag_toggle")
    boss.get_by_label("Actor").fill(f"admin:{admin['id']}")
    boss.get_by_role("button", name="Filter").click()
    rows = boss.locator("table.audit tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(REASON)
    expect(rows.first).to_contain_text("ip_match")

    boss.get_by_role("link", name="Kill switches").click()
    section.get_by_label("Reason to enable ip_match").fill("Proxy fixed")
    section.get_by_role("button", name="Switch on").click()
    expect(boss.get_by_role("status")).to_contain_text("ip_match: switched on")
    member.goto("/printers/add")
    expect(way(member, "ip_match")).to_be_visible()


def test_proxy_diagnostics_shows_this_browsers_request(live, page, admin):
    log_in(page, admin["email"])
    page.goto("/admin/")
    page.get_by_role("link", name="Proxy diagnostics").click()
    expect(page.locator('[data-field="client_ip"]').first).to_have_text("127.0.0.1")
    expect(page.locator('[data-field="household"]').first).to_have_text("127.0.0.1/32")
    expect(page.locator("[data-verdict]").first).to_have_attribute("data-verdict", "works")
    page.get_by_label("Direct peer (an IP address, or unix: for gunicorn's unix socket)").fill(
        "127.0.0.1")
    page.get_by_label("X-Forwarded-For (optional)").fill("8.8.8.8")
    page.get_by_role("button", name="Show").click()
    example = page.locator("[data-example]")
    expect(example.locator("[data-verdict]")).to_have_attribute(
        "data-verdict", "untrusted_forwarded_header")


def test_incident_listing_and_revoke_mark_the_printer_for_relink(live, open_context, admin,
                                                                 user, monkeypatch):
    from tsd_server.clock import utcnow
    from tsd_server.discovery.link_service import link_device
    from tsd_server.extensions import db
    from tsd_server.incident import SETTLED
    from tsd_server.models import User

    printer = Printer(live.base_url, "Linked during the incident")
    with live.app.test_request_context():
        result = link_device(owner=db.session.get(User, user["id"]),
                             device_uid=printer.device_id, name=printer.name, model="MK4",
                             strategy="ip_match", actor=f"user:{user['id']}", address=None)
        printer.access_token = result.access_token
        now = utcnow()
    assert printer.me().status == 200

    boss = open_context().new_page()
    log_in(boss, admin["email"])
    boss.goto("/admin/incident")
    boss.get_by_label("Strategy").select_option("ip_match")
    boss.get_by_label("Since").fill((now - timedelta(minutes=5)).isoformat())
    boss.get_by_label("Until").fill((now + timedelta(seconds=1)).isoformat())
    # Only a window that ended a minute ago is revoked: the server's clock two minutes on.
    monkeypatch.setitem(live.app.config, "CLOCK",
                        lambda: datetime.now(UTC) + SETTLED + timedelta(minutes=1))
    boss.get_by_role("button", name="Show affected devices").click()
    row = boss.locator(f'table.incident tr:has-text("{printer.device_id}")')
    expect(row).to_contain_text(user["email"])
    expect(row).to_have_attribute("data-status", "active")

    boss.get_by_role("button", name="Revoke").click()
    expect(boss.locator("ul.notify")).to_contain_text(user["email"])
    boss.get_by_role("button", name="Yes, revoke").click()
    expect(boss.get_by_role("heading", name="Revoked")).to_contain_text("Revoked")
    assert printer.me().status == 401

    member = open_context().new_page()
    log_in(member, user["email"])
    card = member.locator(f'li.device[data-device="{printer.device_id}"]')
    expect(card).to_contain_text("Needs re-link")


def test_revoking_one_account_lists_its_printers_first(live, open_context, admin, user):
    printer = live.linked_printer(user["id"], "Linked with a leaked password")

    boss = open_context().new_page()
    log_in(boss, admin["email"])
    boss.goto("/admin/incident")
    boss.get_by_label("Account email").fill(user["email"])
    boss.get_by_label("Reason").fill("password leaked")
    boss.get_by_role("button", name="Show the account's printers").click()
    expect(boss.get_by_role("heading", name="Revoke 1 device(s)")).to_be_visible()
    expect(boss.locator("table.incident")).to_contain_text(printer.device_id)
    assert printer.me().status == 200  # nothing happens before the confirmation

    boss.get_by_role("button", name="Yes, revoke 1 device(s)").click()
    expect(boss.get_by_role("status")).to_contain_text(f"Revoked 1 device(s) of {user['email']}")
    assert printer.me().status == 401


def test_locking_an_account_logs_it_out_until_it_is_unlocked(live, open_context, admin, user):
    owner = open_context().new_page()
    log_in(owner, user["email"])
    expect(owner.get_by_role("heading", name="My printers")).to_be_visible()

    boss = open_context().new_page()
    log_in(boss, admin["email"])
    boss.goto("/admin/incident")
    boss.get_by_label("Email of the account").fill(user["email"])
    boss.get_by_label("Why").fill("abuse report")
    boss.get_by_role("button", name="Lock", exact=True).click()
    expect(boss.get_by_role("status")).to_contain_text(f"Locked {user['email']}")

    owner.goto("/")
    expect(owner).to_have_url(re.compile(r"/login"))
    owner.get_by_label("Email").fill(user["email"])
    owner.get_by_label("Password").fill(PASSWORD)
    owner.get_by_role("button", name="Log in").click()
    expect(owner.get_by_role("alert")).to_contain_text("This account is locked")

    boss.get_by_label("Email of the account").fill(user["email"])
    boss.get_by_label("Why").fill("cleared")
    boss.get_by_role("button", name="Unlock").click()
    expect(boss.get_by_role("status")).to_contain_text(f"Unlocked {user['email']}")
    log_in(owner, user["email"])
    expect(owner.get_by_role("heading", name="My printers")).to_be_visible()
