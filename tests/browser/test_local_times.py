"""Times on the pages read in the browser's own time zone, with its name; without
JavaScript they stay in UTC and say so. The zone is the browser context's (timezone_id), as
a person's computer or phone sets it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import log_in
from tests.browser.live import Printer

# 20:45 UTC is the next day in Kolkata (+05:30) and mid-afternoon in New York (-05:00 in
# January): the date, the hour and a half-hour offset all have to come out right.
LINKED_AT = datetime(2026, 1, 15, 20, 45, 10, tzinfo=UTC)
LOCAL = {"America/New_York": "2026-01-15 15:45 Eastern Standard Time",
         "Asia/Kolkata": "2026-01-16 02:15 India Standard Time"}
# Each zone's name in words, (standard time, daylight saving time), as chromium gives it.
ZONE_NAMES = {"America/New_York": ("Eastern Standard Time", "Eastern Daylight Time"),
              "Asia/Kolkata": ("India Standard Time", "India Standard Time")}


def linked_at(live, user_id: int, name: str, at: datetime) -> Printer:
    from sqlalchemy import update

    from tsd_server.models import Device

    printer = live.linked_printer(user_id, name)
    with live.db() as session:
        session.execute(update(Device).where(Device.device_uid == printer.device_id)
                        .values(linked_at=at))
        session.commit()
    return printer


def shown_in(zone: str, machine_time: str, pattern: str) -> str:
    """What a page should show for ``<time datetime=machine_time>`` in ``zone``."""
    local = datetime.fromisoformat(machine_time.replace("Z", "+00:00")).astimezone(
        ZoneInfo(zone))
    return f"{local.strftime(pattern)} {ZONE_NAMES[zone][bool(local.dst())]}"


@pytest.mark.parametrize("zone", list(LOCAL))
def test_my_printers_shows_link_times_in_the_browsers_zone(live, open_context, user, zone):
    printer = linked_at(live, user["id"], "Clocked printer", LINKED_AT)
    page = open_context(timezone_id=zone).new_page()
    log_in(page, user["email"])
    linked = page.locator(f'li[data-device="{printer.device_id}"] time').first
    expect(linked).to_have_text(LOCAL[zone])
    expect(linked).to_have_attribute("datetime", "2026-01-15T20:45:10Z")
    expect(linked).to_have_attribute("title", "2026-01-15 20:45 UTC")  # the UTC kept

    page.get_by_role("link", name="Unlink the printer “Clocked printer”").click()
    expect(page.locator("time").first).to_have_text(LOCAL[zone])


def test_without_javascript_times_stay_in_utc_and_say_so(live, open_context, user):
    printer = linked_at(live, user["id"], "Clocked printer", LINKED_AT)
    page = open_context(javascript=False, timezone_id="Asia/Kolkata").new_page()
    log_in(page, user["email"])
    linked = page.locator(f'li[data-device="{printer.device_id}"] time').first
    expect(linked).to_have_text("2026-01-15 20:45 UTC")
    expect(linked).to_have_attribute("datetime", "2026-01-15T20:45:10Z")


@pytest.mark.parametrize("zone", list(LOCAL))
def test_the_approval_page_shows_when_the_printer_asked_in_the_browsers_zone(
        live, open_context, user, zone):
    started = Printer(live.base_url, "Asking printer").authorize()
    page = open_context(timezone_id=zone).new_page()
    log_in(page, user["email"])
    page.goto("/link")
    page.get_by_label("Code shown on the printer").fill(started["user_code"])
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", name="Link this printer to your account?")
           ).to_be_visible()
    asked, expires = page.locator("dd time").nth(0), page.locator("dd time").nth(1)
    for element, pattern in ((asked, "%Y-%m-%d %H:%M:%S"), (expires, "%H:%M:%S")):
        machine_time = element.get_attribute("datetime")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", machine_time)
        expect(element).to_have_text(shown_in(zone, machine_time, pattern))
