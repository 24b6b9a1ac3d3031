"""The anomaly breaker: per-household block, global trip, shared by every process."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.support import ip_match_fixtures
from tests.support.ip_match_world import (
    InProcessEndpoint,
    layout_direct,
    link_and_confirm,
    listed,
    refused_with,
)
from tests.support.sent_statements import SESSION, SINGLE, sent_statements

app_config = ip_match_fixtures.app_config
world = ip_match_fixtures.world

HOMES = ["8.8.8.8", "1.1.1.1", "9.9.9.9", "8.8.4.4", "1.0.0.1"]


def crowd(world, home, accounts):
    """``accounts`` people at ``home`` each looking for printers once."""
    people = [world.person(home) for _ in range(accounts)]
    return people, [person.nearby().json for person in people]


def ip_match_state(app):
    from tsd_server.discovery import kill_switch

    with app.test_request_context():
        return kill_switch.state("ip_match", fresh=True)


def test_more_accounts_than_allowed_block_the_household(app, world):
    printer = world.printer(HOMES[0])
    printer.announce()
    people, answers = crowd(world, HOMES[0], 4)
    assert [answer["eligible"] for answer in answers] == [True, True, True, False]
    assert answers[3]["reason"] == "household_blocked" and answers[3]["devices"] == []
    for person in people:
        assert person.nearby().json["reason"] == "household_blocked"
        assert refused_with(person.link(printer.device_id), "household_blocked")
    assert refused_with(printer.announce(), "household_blocked")
    [trip] = world.audit_events("breaker_trip")
    assert (trip.actor, trip.outcome, trip.strategy, trip.household) == (
        "auto", "household_blocked", "ip_match", "8.8.8.8/32")
    assert "4 accounts" in trip.detail
    # Other households carry on.
    other_printer, other = world.printer(HOMES[1]), world.person(HOMES[1])
    other_printer.announce()
    assert listed(other.nearby()) == [other_printer.device_id]
    assert ip_match_state(app).enabled


@pytest.mark.parametrize("elsewhere", ["cross-site", "same-site"])
def test_people_another_site_sends_to_nearby_are_not_counted(world, elsewhere):
    """A site that sends four people of one office to "Printers near you" (a link or a
    redirect: their session cookie comes along) must not block the office. And a request
    that says it came from elsewhere sees nothing, so nobody can look uncounted by saying so.
    """
    printer = world.printer(HOMES[0])
    printer.announce()
    sent_here = {"Sec-Fetch-Site": elsewhere}
    for person in [world.person(HOMES[0]) for _ in range(4)]:
        for path in ("/printers/nearby", "/api/v1/discovery/nearby"):
            reply = person.endpoint.request("GET", path, headers=sent_here)
            assert reply.status == 200 and "opened_from_another_site" in str(reply.body)
            assert printer.device_id not in str(reply.body)
        assert person.endpoint.request("GET", "/printers/nearby", headers={
            "Sec-Fetch-Site": elsewhere}).body.count('data-looked="no"') == 1
    assert world.audit_events("breaker_trip") == []
    looking = world.person(HOMES[0])
    assert listed(looking.nearby()) == [printer.device_id]  # counted: the 1st of 3
    page = looking.endpoint.request("GET", "/printers/nearby",
                                    headers={"Sec-Fetch-Site": "same-origin"})
    assert printer.device_id in page.body and 'data-looked="yes"' in page.body


def test_link_and_confirm_count_as_looking_too(world):
    printer = world.printer(HOMES[0])
    printer.announce()
    people = [world.person(HOMES[0]) for _ in range(4)]
    for person in people[:3]:
        assert person.link(printer.device_id).status in (200, 409)
    assert refused_with(people[3].link(printer.device_id), "household_blocked")


def test_the_same_account_again_and_again_does_not_trip(world):
    person = world.person(HOMES[0])
    for _ in range(50):
        assert person.nearby().json["eligible"] is True
    assert world.audit_events("breaker_trip") == []


def test_accounts_spread_beyond_the_window_do_not_trip(world, clock):
    crowd(world, HOMES[0], 3)
    clock.advance(seconds=961)  # window + sighting resolution
    _, answers = crowd(world, HOMES[0], 3)
    assert all(answer["eligible"] for answer in answers)
    assert world.audit_events("breaker_trip") == []


def test_an_account_counts_for_the_whole_window_after_its_last_look(world, clock):
    """Its sighting is rewritten once a minute, so the last written one may be 59 s older
    than its last look: the count reaches back that much further, towards blocking."""
    first = world.person(HOMES[0])
    for _ in range(6):  # looks at 0, 10, ..., 50 s (written only at 0 s)
        assert first.nearby().json["eligible"] is True
        clock.advance(seconds=10)
    clock.advance(seconds=889)  # 899 s after its last look, 949 s after its sighting
    _, answers = crowd(world, HOMES[0], 3)
    assert answers[-1]["reason"] == "household_blocked"
    [trip] = world.audit_events("breaker_trip")
    assert "4 accounts" in trip.detail


def test_the_block_lifts_after_the_cooldown(world, clock):
    people, _ = crowd(world, HOMES[0], 4)
    clock.advance(seconds=3599)
    assert people[0].nearby().json["reason"] == "household_blocked"
    clock.advance(seconds=2)
    assert people[0].nearby().json["eligible"] is True


def test_a_blocked_household_cannot_complete_a_confirmed_link(app, world):
    printer, anna = world.printer(HOMES[0]), world.person(HOMES[0])
    printer.announce()
    offer = anna.link(printer.device_id).json
    code = printer.announce().json["confirmation"]["code"]
    assert anna.confirm(offer["offer_id"], code).json == {"status": "confirmed"}
    crowd(world, HOMES[0], 3)  # the fourth account trips the breaker
    assert refused_with(printer.announce(), "household_blocked")
    assert world.links() == []


def test_enough_tripped_households_switch_ip_match_off_for_everyone(app, world):
    for home in HOMES[:2]:
        crowd(world, home, 4)
    assert ip_match_state(app).enabled
    crowd(world, HOMES[2], 4)
    state = ip_match_state(app)
    assert not state.enabled and state.disabled_by == "runtime"
    assert state.changed_by == "auto" and "3 households" in state.reason
    outcomes = [(t.outcome, t.actor) for t in world.audit_events("breaker_trip")]
    assert outcomes == [("household_blocked", "auto")] * 3 + [("global", "auto")]
    [toggle] = world.audit_events("flag_toggle")
    assert (toggle.actor, toggle.outcome, toggle.strategy) == ("auto", "disabled", "ip_match")
    # Everyone, in every household, is refused now; the other strategies are untouched.
    bystander = world.person(HOMES[4])
    assert bystander.nearby().status == 503
    assert bystander.nearby().json["error"] == "strategy_disabled"
    from tsd_server.discovery import kill_switch

    with app.test_request_context():
        assert kill_switch.is_enabled("pairing_code", fresh=True)


def test_after_an_admin_switches_it_on_old_trips_are_forgiven(app, world, clock):
    from tsd_server.discovery import kill_switch

    for home in HOMES[:3]:
        crowd(world, home, 4)
    assert not ip_match_state(app).enabled
    with app.test_request_context():
        kill_switch.set_flag("ip_match", enabled=True, reason="checked the proxy",
                             actor="admin:1")
    clock.advance(seconds=1)
    crowd(world, HOMES[3], 4)  # one more trip within the window
    assert ip_match_state(app).enabled
    crowd(world, HOMES[4], 4)
    crowd(world, "2001:4860:4860::8888", 4)
    assert not ip_match_state(app).enabled  # three new trips: off again


def test_block_state_is_shared_between_processes(app, world, database):
    """A second app (another gunicorn worker) on the same database sees the block."""
    from tsd_server import create_app

    crowd(world, HOMES[0], 4)
    other = create_app({"TESTING": True, "SECRET_KEY": app.config["SECRET_KEY"],
                        "DATABASE_URL": database, "CLOCK": app.config["CLOCK"]})
    from tests.support.ip_match_world import Person

    user_id, email, password = world.make_user("someone")
    elsewhere = Person(InProcessEndpoint(other, HOMES[0], layout_direct), HOMES[0], user_id,
                       email, password, "someone")
    assert elsewhere.nearby().json["reason"] == "household_blocked"
    with other.app_context():
        from tsd_server.extensions import db

        db.session.remove()
        db.engine.dispose()


def test_tripping_twice_at_once_blocks_and_audits_once(app, world, clock):
    from tsd_server.discovery.ip_match import breaker
    from tsd_server.discovery.ip_match.settings import current

    with app.test_request_context(environ_base={"REMOTE_ADDR": HOMES[0]}):
        settings = current()
        breaker.trip("8.8.8.8/32", 4, settings, clock())
        breaker.trip("8.8.8.8/32", 5, settings, clock())
        assert breaker.is_blocked("8.8.8.8/32", clock())
    assert len(world.audit_events("breaker_trip")) == 1


def test_sightings_outside_the_window_are_deleted(app, world, clock):
    from tsd_server.extensions import db
    from tsd_server.models.ip_match import HouseholdAccount

    crowd(world, HOMES[0], 2)
    clock.advance(seconds=961)  # window + sighting resolution
    crowd(world, HOMES[1], 1)
    with app.app_context():
        rows = list(db.session.scalars(select(HouseholdAccount)))
        db.session.remove()
    assert [row.household for row in rows] == ["1.1.1.1/32"]


def test_an_honest_family_of_three_is_fine(world):
    printer = world.printer(HOMES[0])
    printer.announce()
    family = [world.person(HOMES[0]) for _ in range(3)]
    for person in family:
        assert listed(person.nearby()) == [printer.device_id]
    link_and_confirm(family[1], printer)
    assert world.links() == [(family[1].user_id, printer.device_id)]


def test_nearby_reads_the_breaker_at_once_and_notes_the_account_only_when_due(app, world,
                                                                              clock):
    printer, anna = world.printer(HOMES[0]), world.person(HOMES[0])
    printer.announce()
    assert listed(anna.nearby()) == [printer.device_id]
    clock.advance(seconds=59)
    printer.announce()
    with sent_statements(app) as sent:
        assert listed(anna.nearby()) == [printer.device_id]
    # The user; the breaker's and the cap's reads; the list. No transaction, no write.
    assert sent == {SESSION: [], SINGLE: ["SELECT"] * 3}
    [sighting] = household_accounts(app)
    assert sighting.last_seen_at == clock() - timedelta(seconds=59)
    clock.advance(seconds=1)
    with sent_statements(app) as sent:
        assert listed(anna.nearby()) == [printer.device_id]
    assert "INSERT" in sent[SESSION] and "COMMIT" not in sent[SINGLE]
    [sighting] = household_accounts(app)
    assert (sighting.user_id, sighting.last_seen_at) == (anna.user_id, clock())
    assert len(world.audit_events("ip_match_nearby")) == 1  # the same answer: audited once


def test_returning_accounts_count_again_once_their_sightings_left_the_window(world, clock):
    people, _ = crowd(world, HOMES[0], 3)
    clock.advance(seconds=961)  # window + sighting resolution
    assert all(person.nearby().json["eligible"] for person in people)
    newcomer = world.person(HOMES[0])
    assert newcomer.nearby().json["reason"] == "household_blocked"
    [trip] = world.audit_events("breaker_trip")
    assert "4 accounts" in trip.detail


def household_accounts(app):
    from tsd_server.extensions import db
    from tsd_server.models.ip_match import HouseholdAccount

    with app.app_context():
        found = list(db.session.scalars(select(HouseholdAccount)))
        db.session.remove()
    return found


def test_two_requests_switching_it_off_for_everyone_at_once_do_it_once(
        app, world, clock, monkeypatch):
    """Both counted the tripped households and read ip_match on; the second to switch it
    off finds it off, holding the switches' lock, and writes nothing: one global trip, one
    switch-off in the audit log."""
    from tests.support.held_requests import Hold, Running
    from tsd_server.discovery import kill_switch
    from tsd_server.discovery.ip_match import breaker
    from tsd_server.discovery.ip_match.settings import current

    for home in HOMES[:2]:
        crowd(world, home, 4)
    held = Hold("first")
    monkeypatch.setattr(kill_switch, "set_flag", held.wrap(kill_switch.set_flag, before=True))

    def third_household_trips() -> None:
        with app.test_request_context(environ_base={"REMOTE_ADDR": HOMES[2]}):
            breaker.trip(f"{HOMES[2]}/32", 4, current(), clock())

    first = Running("first", third_household_trips)
    first.start()
    assert held.reached.wait(30)  # it counted three households and read ip_match on
    try:
        with app.test_request_context(environ_base={"REMOTE_ADDR": HOMES[3]}):
            breaker._maybe_trip_globally(current(), clock())  # the second switches it off
    finally:
        held.release.set()
    first.result()
    assert not ip_match_state(app).enabled
    assert [t.outcome for t in world.audit_events("breaker_trip")].count("global") == 1
    assert len(world.audit_events("flag_toggle")) == 1
