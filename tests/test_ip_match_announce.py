"""ip_match device side: announce, the bound device_secret, TTL, purge, caps, bad input."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import event, select

from tests.support import ip_match_fixtures
from tests.support.ip_match_world import (
    Printer,
    link_and_confirm,
    listed,
    refused_with,
)
from tests.support.rows import count_rows
from tests.support.sent_statements import SESSION, SINGLE, sent_statements

app_config = ip_match_fixtures.app_config
world = ip_match_fixtures.world

HOME_A, HOME_B, HOME_C = "8.8.8.8", "1.1.1.1", "9.9.9.9"


def rows(app, model):
    from tsd_server.extensions import db

    with app.app_context():
        found = list(db.session.scalars(select(model)))
        db.session.remove()
    return found


def impostor_of(printer: Printer, endpoint, name: str = "Impostor") -> Printer:
    """Same device_id, its own secret."""
    impostor = Printer(endpoint, printer.home, name)
    impostor.device_id = printer.device_id
    return impostor


def test_first_announce_binds_the_secret_and_stores_only_its_hash(app, world):
    from tsd_server.models.ip_match import Announcement

    printer = world.printer(HOME_A, "Anna's Mk4")
    reply = printer.announce()
    assert reply.status == 200
    assert reply.json == {"status": "waiting", "poll_interval": 5}
    [row] = rows(app, Announcement)
    assert row.device_uid == printer.device_id and row.household == "8.8.8.8/32"
    assert row.secret_hash == hashlib.sha256(printer.secret.encode()).hexdigest()
    assert printer.secret not in {str(value) for value in vars(row).values()}
    [registered] = world.audit_events("ip_match_announce")
    assert (registered.outcome, registered.actor, registered.device_uid, registered.household) \
        == ("registered", "device", printer.device_id, "8.8.8.8/32")


def test_another_secret_for_a_bound_device_id_gets_409_and_changes_nothing(app, world):
    from tsd_server.models.ip_match import Announcement

    printer = world.printer(HOME_A, "Anna's Mk4")
    assert printer.announce().status == 200
    impostor = impostor_of(printer, world.endpoint(HOME_A))
    reply = impostor.announce()
    assert reply.status == 409 and reply.json["error"] == "device_id_taken"
    [row] = rows(app, Announcement)
    assert row.name == "Anna's Mk4"
    assert [e.outcome for e in world.audit_events("ip_match_announce")] == [
        "registered", "secret_mismatch"]


def test_code_and_token_go_only_to_the_holder_of_the_secret(app, world):
    from tsd_server.models import Device

    printer = world.printer(HOME_A)
    anna = world.person(HOME_A)
    impostor = impostor_of(printer, world.endpoint(HOME_A))
    assert printer.announce().status == 200
    offer = anna.link(printer.device_id).json
    stolen = impostor.announce()
    assert stolen.status == 409 and "confirmation" not in stolen.json
    code = printer.announce().json["confirmation"]["code"]
    assert anna.confirm(offer["offer_id"], code).json == {"status": "confirmed"}
    stolen = impostor.announce()
    assert stolen.status == 409 and "access_token" not in stolen.json
    assert count_rows(app, Device) == 0  # the impostor's announce did not complete the link
    linked = printer.announce()
    assert linked.json["status"] == "linked" and linked.json["access_token"]


def test_the_token_is_delivered_once(app, world, client):
    from tsd_server.models import Device

    printer, anna = world.printer(HOME_A), world.person(HOME_A)
    printer.announce()
    token = link_and_confirm(anna, printer)
    again = printer.announce()
    assert again.status == 200 and again.json == {"status": "waiting", "poll_interval": 5}
    assert count_rows(app, Device) == 1
    me = client.get("/api/v1/device/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.get_json()["device"]["id"] == printer.device_id
    assert me.get_json()["device"]["linked_via"] == "ip_match"


def test_a_repeat_announce_within_the_write_interval_writes_nothing(app, world, clock):
    from tsd_server.extensions import db

    printer = world.printer(HOME_A)
    writes: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().split(" ", 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            writes.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        assert printer.announce().status == 200
        assert writes, "the first announce must store the announcement"
        writes.clear()
        interval = app.config["IP_MATCH_LAST_SEEN_WRITE_INTERVAL"]
        clock.advance(seconds=interval - 1)
        assert printer.announce().json["status"] == "waiting"
        assert writes == []
        clock.advance(seconds=1)
        printer.announce()
        assert len(writes) == 1 and writes[0].lstrip().upper().startswith(
            "UPDATE IP_MATCH_ANNOUNCEMENTS")
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_listed_and_bound_for_the_ttl_after_an_unwritten_last_announce(world, clock):
    """last_seen_at lags the last announce by up to the write interval (15 s); the TTL
    (30 s) still counts from the announce itself, for the list and for the binding."""
    printer, anna = world.printer(HOME_A), world.person(HOME_A)
    printer.announce()  # registered: last_seen_at written
    clock.advance(seconds=14)
    printer.announce()  # its last announce, within the write interval: not written
    clock.advance(seconds=29)
    assert listed(anna.nearby()) == [printer.device_id]
    assert impostor_of(printer, world.endpoint(HOME_A)).announce().status == 409
    clock.advance(seconds=2)  # TTL + write interval after the written one
    assert listed(anna.nearby()) == []


def test_gone_and_unbound_at_most_ttl_plus_write_interval_after_the_last_announce(
        world, clock):
    printer, anna = world.printer(HOME_A), world.person(HOME_A)
    printer.announce()  # written: the longest case, TTL + write interval = 45 s
    clock.advance(seconds=44)
    assert listed(anna.nearby()) == [printer.device_id]
    clock.advance(seconds=1)
    assert listed(anna.nearby()) == []
    # The binding went with the announcement: a fresh secret may take the device_id now.
    newcomer = impostor_of(printer, world.endpoint(HOME_A), "Reset printer")
    assert newcomer.announce().json["status"] == "waiting"
    assert printer.announce().status == 409


def test_a_device_announcing_every_few_seconds_never_drops_out(world, clock):
    printer, anna = world.printer(HOME_A), world.person(HOME_A)
    for _ in range(20):
        printer.announce()
        clock.advance(seconds=3)  # written only every 15 s: last_seen lags up to 14 s
        assert listed(anna.nearby()) == [printer.device_id]
    clock.advance(seconds=26)  # 29 s after the last announce (57 s; last written at 45 s)
    assert listed(anna.nearby()) == [printer.device_id]
    clock.advance(seconds=16)  # TTL + write interval after the last announce
    assert listed(anna.nearby()) == []


def test_expired_announcements_and_their_offers_are_purged(app, world, clock):
    from tsd_server.models.ip_match import Announcement, Offer

    for home in (HOME_A, HOME_A, HOME_B, HOME_B):
        world.printer(home).announce()
    anna = world.person(HOME_A)
    assert anna.link(world.printers[0].device_id).status == 200
    assert (count_rows(app, Announcement), count_rows(app, Offer)) == (4, 1)
    clock.advance(seconds=46)  # beyond TTL + write interval
    world.printer(HOME_C).announce()
    assert (count_rows(app, Announcement), count_rows(app, Offer)) == (1, 0)


GOOD = {"device_id": "printer-0001", "device_secret": "s" * 43, "name": "Printer"}


@pytest.mark.parametrize("body, error", [
    ({}, "missing_field"),
    ({**GOOD, "device_secret": None}, "missing_field"),
    ({**GOOD, "device_secret": "s" * 21}, "invalid_field"),
    ({**GOOD, "device_secret": "s" * 129}, "invalid_field"),
    ({**GOOD, "device_secret": "with spaces" * 4}, "invalid_field"),
    ({**GOOD, "device_secret": 12345678901234567890123}, "invalid_field"),
    ({**GOOD, "device_id": "short"}, "invalid_field"),
    ({**GOOD, "device_id": "a/b" * 5}, "invalid_field"),
    ({**GOOD, "name": ""}, "missing_field"),
    ({**GOOD, "name": "n" * 81}, "invalid_field"),
    ({**GOOD, "name": "bell\x07"}, "invalid_field"),
    ({**GOOD, "model": 4}, "invalid_field"),
    ({**GOOD, "agent_version": "v" * 41}, "invalid_field"),
])
def test_bad_announce_bodies_get_a_clear_400_and_store_nothing(app, client, body, error):
    from tsd_server.models.ip_match import Announcement

    reply = client.post("/api/v1/discovery/announce", json=body,
                        environ_base={"REMOTE_ADDR": HOME_A})
    assert reply.status_code == 400 and reply.get_json()["error"] == error
    assert count_rows(app, Announcement) == 0


@pytest.mark.parametrize("raw", [b"", b"[]", b'"x"', b"{not json", b"[" * 5000])
def test_non_object_bodies_are_invalid_json(app, client, raw):
    reply = client.post("/api/v1/discovery/announce", data=raw,
                        content_type="application/json", environ_base={"REMOTE_ADDR": HOME_A})
    assert reply.status_code == 400 and reply.get_json()["error"] == "invalid_json"


def test_announce_needs_no_csrf_token_and_ignores_a_session_cookie(app, world, client):
    from tsd_server.models import Device

    world.person(HOME_A)
    anna_browser = world.people[0].endpoint.client  # carries Anna's session cookie
    reply = anna_browser.post("/api/v1/discovery/announce", json=GOOD,
                              environ_base={"REMOTE_ADDR": HOME_A})
    assert reply.status_code == 200 and reply.get_json()["status"] == "waiting"
    assert "Set-Cookie" not in reply.headers
    assert count_rows(app, Device) == 0


@pytest.mark.parametrize("environ, reason", [
    ({"REMOTE_ADDR": "192.168.1.20"}, "non_public_address"),
    ({"REMOTE_ADDR": "10.1.2.3"}, "non_public_address"),
    ({"REMOTE_ADDR": "100.64.0.1"}, "non_public_address"),
    ({"REMOTE_ADDR": "127.0.0.1"}, "non_public_address"),
    ({"REMOTE_ADDR": "fd00::1"}, "non_public_address"),
    ({"REMOTE_ADDR": HOME_A, "HTTP_X_FORWARDED_FOR": HOME_B}, "untrusted_forwarded_header"),
    ({"REMOTE_ADDR": HOME_A, "HTTP_X_REAL_IP": HOME_B}, "untrusted_forwarded_header"),
])
def test_ineligible_announces_are_refused_with_the_reason(app, client, environ, reason):
    from tsd_server.models.ip_match import Announcement

    reply = client.post("/api/v1/discovery/announce", json=GOOD, environ_base=environ)
    assert reply.status_code == 403
    assert reply.get_json()["error"] == "ip_match_ineligible"
    assert reply.get_json()["reason"] == reason
    assert count_rows(app, Announcement) == 0


def test_announces_are_rate_limited_per_address(app, client):
    app.config["IP_MATCH_ANNOUNCE_RATE_LIMIT"] = "3 per minute"
    for _ in range(3):
        assert client.post("/api/v1/discovery/announce", json=GOOD,
                           environ_base={"REMOTE_ADDR": HOME_A}).status_code == 200
    reply = client.post("/api/v1/discovery/announce", json=GOOD,
                        environ_base={"REMOTE_ADDR": HOME_A})
    assert reply.status_code == 429 and reply.get_json()["error"] == "rate_limited"
    assert reply.headers.get("Retry-After")
    # A sentence, as the pairing limits say it, not Flask-Limiter's "3 per 1 minute".
    assert reply.get_json()["message"] == ("Too many announcements from this address; wait "
                                           "before trying again (see Retry-After).")


def test_one_device_over_the_household_cap_hides_all_and_more_are_refused(app, world):
    from tsd_server.models.ip_match import Announcement

    printers = [world.printer(HOME_A) for _ in range(4)]
    for printer in printers:
        assert printer.announce().status == 200
    [limit] = world.audit_events("ip_match_household_limit")
    assert limit.household == "8.8.8.8/32" and limit.device_uid == printers[3].device_id
    assert refused_with(world.printer(HOME_A).announce(), "household_limit")
    assert count_rows(app, Announcement) == 4
    anna = world.person(HOME_A)
    seen = anna.nearby().json
    assert (seen["eligible"], seen["reason"], seen["devices"]) == (False, "household_limit", [])
    assert refused_with(anna.link(printers[0].device_id), "household_limit")
    # Another household is not affected.
    ben_printer, ben = world.printer(HOME_B), world.person(HOME_B)
    ben_printer.announce()
    assert listed(ben.nearby()) == [ben_printer.device_id]


def test_a_printer_announcing_between_the_count_and_the_list_does_not_break_the_cap(
        app, world, monkeypatch):
    """nearby counts the household's printers, then lists them: a fourth that begins
    announcing in between must not be listed as the fourth of three."""
    from tsd_server.discovery.ip_match import announcements, listing
    from tsd_server.extensions import db
    from tsd_server.models.ip_match import Announcement

    for printer in [world.printer(HOME_A) for _ in range(3)]:
        assert printer.announce().status == 200
    listed_as_usual = announcements.live_in_household

    def a_fourth_arrives_first(household, settings, now):
        with db.engine.begin() as connection:
            connection.execute(Announcement.__table__.insert().values(
                device_uid="tsd-late-printer-0001", secret_hash="0" * 64, household=household,
                client_ip=HOME_A, name="late", first_seen_at=now, last_seen_at=now))
        return listed_as_usual(household, settings, now)

    monkeypatch.setattr(listing.announcements, "live_in_household", a_fourth_arrives_first)
    seen = world.person(HOME_A).nearby().json
    assert (seen["eligible"], seen["reason"], seen["devices"]) == (False, "household_limit", [])


def test_a_device_that_moves_household_loses_its_pending_offer(world):
    printer, anna = world.printer(HOME_A), world.person(HOME_A)
    printer.announce()
    offer = anna.link(printer.device_id).json
    assert printer.announce().json["status"] == "confirm"
    printer.endpoint.ip = HOME_B  # the printer is now on another connection
    moved = printer.announce()
    assert moved.json == {"status": "waiting", "poll_interval": 5}
    ended = world.audit_events("ip_match_offer_ended")
    assert [(e.outcome, e.household) for e in ended] == [("voided", "1.1.1.1/32")]
    assert anna.confirm(offer["offer_id"], "123456").status == 404
    assert listed(anna.nearby()) == []


@pytest.mark.parametrize("bad", [
    {"IP_MATCH_ANNOUNCE_TTL": 10, "IP_MATCH_POLL_INTERVAL": 5,
     "IP_MATCH_LAST_SEEN_WRITE_INTERVAL": 5},
    {"IP_MATCH_CODE_ATTEMPTS": 0},
    {"IP_MATCH_OFFER_TTL": 5},
    {"IP_MATCH_MAX_ACCOUNTS_PER_HOUSEHOLD": 0},
])
def test_unusable_ip_match_settings_stop_start_up(database, bad):
    from tsd_server import create_app
    from tsd_server.config import ConfigurationError

    with pytest.raises(ConfigurationError, match="TSD_IP_MATCH_"):
        create_app({"TESTING": True, "SECRET_KEY": "x" * 32, "DATABASE_URL": database, **bad})


def test_a_quiet_repeat_is_answered_from_one_statement(app, world):
    printer = world.printer(HOME_A)
    assert printer.announce().status == 200
    with sent_statements(app) as sent:
        assert printer.announce().json == {"status": "waiting", "poll_interval": 5}
    assert sent == {SESSION: [], SINGLE: ["SELECT"]}


def test_a_repeat_that_differs_only_in_the_secret_still_gets_409_and_is_audited(app, world):
    """The quiet repeat never answers for another secret: the full way refuses and audits."""
    from tsd_server.models.ip_match import Announcement

    printer = world.printer(HOME_A, "Anna's Mk4")
    assert printer.announce().status == 200
    impostor = impostor_of(printer, world.endpoint(HOME_A), printer.name)
    reply = impostor.announce()
    assert reply.status == 409 and reply.json["error"] == "device_id_taken"
    [row] = rows(app, Announcement)
    assert row.secret_hash == hashlib.sha256(printer.secret.encode()).hexdigest()
    mismatch = world.audit_events("ip_match_announce")[-1]
    assert (mismatch.outcome, mismatch.device_uid, mismatch.household) == (
        "secret_mismatch", printer.device_id, "8.8.8.8/32")
    assert printer.announce().json["status"] == "waiting"


def test_a_change_within_the_write_interval_is_written_at_once(app, world, clock):
    from tsd_server.models.ip_match import Announcement

    printer, anna = world.printer(HOME_A, "Old name"), world.person(HOME_A)
    printer.announce()
    clock.advance(seconds=1)
    printer.name = "New name"
    assert printer.announce().json["status"] == "waiting"
    [row] = rows(app, Announcement)
    assert (row.name, row.last_seen_at) == ("New name", clock())
    assert [device["name"] for device in anna.nearby().json["devices"]] == ["New name"]
