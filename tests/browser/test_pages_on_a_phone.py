"""Every main page on a phone: no sideways scrolling, nothing cut off, no CSP breakage.

With ``TSD_SCREENSHOTS=1`` the same walk also saves the screenshots shown in the README
(docs/screenshots/, phone and desktop widths); a normal run writes nothing:

    TSD_SCREENSHOTS=1 .venv/bin/pytest tests/browser/test_pages_on_a_phone.py --db sqlite
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import log_in
from tests.browser.live import Printer

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
SAVE = os.environ.get("TSD_SCREENSHOTS") == "1"
# Screenshots are cut at this height (px): the top of a long page says what it is.
MAX_HEIGHT = {"phone": 1100, "desktop": 900}


def overflowing(page) -> list[str]:
    """Elements wider than the viewport (what makes a phone scroll sideways)."""
    return page.evaluate("""() => {
        const width = document.documentElement.clientWidth;
        const wide = [];
        for (const el of document.querySelectorAll("body *")) {
            if (el.closest(".table-wrap")) continue;  // tables scroll inside their box
            const box = el.getBoundingClientRect();
            if (box.width && box.right > width + 1) {
                const name = `${el.tagName.toLowerCase()}.${el.className}`;
                wide.push(`${name} (${Math.round(box.right)}px)`);
            }
        }
        if (document.documentElement.scrollWidth > width) wide.push("document");
        return wide;
    }""")


def shoot(page, name: str, kind: str) -> None:
    assert overflowing(page) == [], f"{name} is wider than a {kind} screen"
    if not SAVE:
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    width = page.viewport_size["width"]
    height = min(MAX_HEIGHT[kind], page.evaluate("document.documentElement.scrollHeight"))
    page.screenshot(path=str(SCREENSHOTS / f"{name}-{kind}.png"),
                    clip={"x": 0, "y": 0, "width": width, "height": height}, full_page=True)


@pytest.fixture
def people(live):
    """Ada with two printers (one after an incident), a printer nearby, an admin."""
    from tsd_server import devices
    from tsd_server.discovery.link_service import link_device
    from tsd_server.extensions import db
    from tsd_server.models import User

    ada_id, ada = live.make_user(display_name="Ada Lovelace")
    _, root = live.make_user(is_admin=True, display_name="Operator")
    with live.app.test_request_context(environ_base={"REMOTE_ADDR": "127.0.0.1"}):
        owner = db.session.get(User, ada_id)
        from tsd_server import client_address

        here = client_address.for_request()
        for uid, name, model, strategy in (
                ("prusa-mk4-7f3a", "Prusa MK4 in the workshop", "Original Prusa MK4", "qr_code"),
                ("voron-24-c1d2", "Voron 2.4", "Voron 2.4 R2", "ip_match")):
            link_device(owner=owner, device_uid=uid, name=name, model=model,
                        strategy=strategy, actor=f"user:{ada_id}", address=here)
        lost = devices.devices_of(owner)[0]
        devices.revoke_token(lost, actor="admin:1", detail="incident", needs_relink=True)
        db.session.commit()
    nearby = Printer(live.base_url, "Ender 3 in the garage", "Ender-3 V2")
    assert nearby.announce().status == 200
    return {"ada": ada, "root": root, "nearby": nearby}


def test_main_pages_fit_a_phone(live, open_context, people):
    phone = open_context(phone=True).new_page()
    phone.goto("/login")
    assert overflowing(phone) == []
    log_in(phone, people["ada"])
    shoot(phone, "dashboard", "phone")
    phone.get_by_role("link", name="Unlink the printer “Prusa MK4 in the workshop”").click()
    assert overflowing(phone) == [], "the page asking before an unlink is too wide"
    phone.goto("/printers/add")
    shoot(phone, "add-printer", "phone")
    phone.goto("/printers/nearby")
    expect(phone.locator(f'[data-device="{people["nearby"].device_id}"]')).to_be_visible()
    shoot(phone, "printers-near-you", "phone")
    phone.goto("/printers/add/code")
    phone.get_by_role("button", name="Get a code").click()
    expect(phone.locator(".countdown")).to_contain_text("left.")
    shoot(phone, "pairing-code", "phone")

    started = Printer(live.base_url, "Bambu P1S", "P1S").authorize()
    phone.goto(started["verification_uri_complete"])
    expect(phone.locator("dd.code")).to_have_text(started["user_code"])
    shoot(phone, "approve-qr-link", "phone")
    phone.goto("/link")
    shoot(phone, "enter-code", "phone")
    live.switch("pairing_code", enabled=False)
    phone.goto("/link")
    expect(phone.get_by_role("heading", level=1)).to_contain_text("switched off right now")
    assert overflowing(phone) == [], "the page of a way switched off is too wide"

    admin = open_context(phone=True).new_page()
    log_in(admin, people["root"])
    for path, name in (("/admin/kill-switches", "admin-kill-switches"),
                       ("/admin/audit", "admin-audit-log"),
                       ("/admin/incident", "admin-incident"),
                       ("/admin/diagnostics", "admin-diagnostics")):
        admin.goto(path)
        assert overflowing(admin) == [], f"{name} is wider than a phone screen"


def test_main_pages_on_a_desktop(live, open_context, people):
    page = open_context().new_page()
    log_in(page, people["ada"])
    shoot(page, "dashboard", "desktop")
    page.goto("/printers/add")
    assert overflowing(page) == []

    admin = open_context().new_page()
    log_in(admin, people["root"])
    live.switch("ip_match", enabled=False, reason="Load balancer dropped X-Forwarded-For")
    admin.goto("/admin/kill-switches")
    shoot(admin, "admin-kill-switches", "desktop")
    admin.goto("/admin/audit")
    shoot(admin, "admin-audit-log", "desktop")
    admin.goto("/admin/diagnostics")
    shoot(admin, "admin-diagnostics", "desktop")
