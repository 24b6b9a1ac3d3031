"""ip_match offers' lifetime: they expire (also while the link waits for the account's
lock), end with their printer's announcement (not before the TTL after its last announce),
are purged with a silent printer (and audited), and a device has one open offer at a
time."""

from __future__ import annotations

from sqlalchemy import select

from tests.support import ip_match_fixtures
from tests.support.ip_match_world import db_value, offer_row, pending_offer

app_config = ip_match_fixtures.app_config
world = ip_match_fixtures.world

HOME_A, HOME_B = "8.8.8.8", "1.1.1.1"


def test_offers_expire(app, world, clock):
    printer, anna, offer_id, code = pending_offer(world, HOME_A)
    for _ in range(15):  # the printer keeps announcing; only the offer runs out
        clock.advance(seconds=20)
        printer.announce()
    clock.advance(seconds=5)
    assert printer.announce().json["status"] == "waiting"
    assert offer_row(app, offer_id) is None
    assert anna.confirm(offer_id, code).status == 404
    ended = world.audit_events("ip_match_offer_ended")
    assert [(e.outcome, e.user_id) for e in ended] == [("expired", anna.user_id)]


def test_an_offer_ends_with_its_announcement(app, world, clock):
    printer, anna, offer_id, code = pending_offer(world, HOME_A)
    clock.advance(seconds=46)  # silent beyond TTL + write interval (45 s)
    assert printer.announce().json["status"] == "waiting"  # registered afresh
    assert offer_row(app, offer_id) is None
    ended = world.audit_events("ip_match_offer_ended")
    assert [(e.outcome, e.user_id, e.device_uid, e.household) for e in ended] == [
        ("expired", anna.user_id, printer.device_id, f"{HOME_A}/32")]


def test_a_confirmed_offer_outlives_a_pause_of_the_printer_shorter_than_the_ttl(
        app, world, clock):
    """The TTL counts from the last announce, not from the last-seen write before it."""
    printer, anna, offer_id, code = pending_offer(world, HOME_A)
    clock.advance(seconds=14)
    printer.announce()  # the last announce before the pause: within the write interval
    assert anna.confirm(offer_id, code).json == {"status": "confirmed"}
    clock.advance(seconds=29)  # offline for less than the TTL (30 s)
    assert printer.announce().json["status"] == "linked"
    assert world.audit_events("ip_match_offer_ended") == []


def test_an_offer_that_expires_while_the_link_waits_for_the_account_does_not_link(
        app, world, clock, monkeypatch):
    """As for codes and device-flow tokens: the time is read after the account's lock."""
    from tsd_server import devices
    from tsd_server.models import Device

    printer, anna, offer_id, code = pending_offer(world, HOME_A)
    for _ in range(14):  # the printer keeps announcing; 280 s of the offer's 300 pass
        clock.advance(seconds=20)
        printer.announce()
    assert anna.confirm(offer_id, code).json == {"status": "confirmed"}
    clock.advance(seconds=19)  # one second left
    lock = devices.lock_links_of

    def slow_lock(user_id):  # a log-out held the account's row for 5 s
        lock(user_id)
        clock.advance(seconds=5)

    monkeypatch.setattr(devices, "lock_links_of", slow_lock)
    assert printer.announce().json["status"] == "waiting"
    assert db_value(app, select(Device.id)) is None
    assert offer_row(app, offer_id) is None
    [ended] = world.audit_events("ip_match_offer_ended")
    assert (ended.outcome, ended.user_id, ended.device_uid) == (
        "expired", anna.user_id, printer.device_id)
    assert "waited" in ended.detail


def test_an_offer_purged_with_its_silent_printer_is_audited_with_device_and_household(
        app, world, clock):
    """The purge runs inside another printer's announce: its row must still name the
    device and the household, like every ip_match row, so the audit log's filters and an
    incident query find it (docs/ip-match.md)."""
    printer, anna, offer_id, code = pending_offer(world, HOME_A)
    clock.advance(seconds=46)  # silent beyond TTL + write interval (45 s)
    world.printer(HOME_B).announce()  # purges the silent printer and its offer
    assert offer_row(app, offer_id) is None
    ended = world.audit_events("ip_match_offer_ended")
    assert [(e.outcome, e.user_id, e.device_uid, e.household, e.client_ip) for e in ended] \
        == [("expired", anna.user_id, printer.device_id, f"{HOME_A}/32", None)]


def test_an_expired_offer_found_at_confirm_is_410(app, world, clock):
    printer, anna, offer_id, code = pending_offer(world, HOME_A)
    clock.advance(seconds=25)
    printer.announce()
    clock.advance(seconds=280)  # offer expired, announcement still live
    reply = anna.confirm(offer_id, code)
    assert reply.status == 410 and reply.json["error"] == "offer_expired"


def test_one_open_offer_per_device(world):
    printer, anna, offer_id, _ = pending_offer(world, HOME_A)
    assert anna.link(printer.device_id).json["offer_id"] == offer_id  # same user: same offer
    carl = world.person(HOME_A)
    busy = carl.link(printer.device_id)
    assert busy.status == 409 and busy.json["error"] == "offer_pending"
    [device] = carl.nearby().json["devices"]
    assert device["busy"] is True and device["offer"] is None
    assert [r.outcome for r in world.audit_events("link_failed")] == ["offer_pending"]
