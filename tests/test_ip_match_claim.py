"""ip_match user side: nearby, link, confirm with the code, and completion on announce."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tests.support import ip_match_fixtures
from tests.support.flags import switched_off_by_hand
from tests.support.ip_match_world import (
    db_value,
    link_and_confirm,
    listed,
    offer_row,
    parallel_wrong_codes,
    pending_offer,
    refused_with,
    wrong,
)

app_config = ip_match_fixtures.app_config
world = ip_match_fixtures.world

HOME_A, HOME_B = "8.8.8.8", "1.1.1.1"


def device_count(app) -> int:
    from tsd_server.models import Device

    return db_value(app, select(func.count()).select_from(Device))


def test_the_whole_way_from_announce_to_token_and_every_step_audited(app, world, client):
    printer, anna = world.printer(HOME_A, "Anna's Mk4"), world.person(HOME_A)
    assert printer.announce().json["status"] == "waiting"
    seen = anna.nearby().json
    assert seen["eligible"] is True and seen["reason"] is None
    [device] = seen["devices"]
    assert (device["device_id"], device["name"], device["model"]) == (
        printer.device_id, "Anna's Mk4", "Mk4")
    assert device["offer"] is None and device["busy"] is False

    offer = anna.link(printer.device_id).json
    assert offer["status"] == "awaiting_confirmation" and len(offer["offer_id"]) >= 32
    shown = printer.announce().json
    assert shown["status"] == "confirm"
    confirmation = shown["confirmation"]
    assert confirmation["account"] == anna.display_name
    assert len(confirmation["code"]) == 6 and confirmation["code"].isdigit()
    assert 0 < confirmation["expires_in"] <= 300
    assert printer.announce().json["confirmation"]["code"] == confirmation["code"]  # stable
    assert device_count(app) == 0
    assert anna.confirm(offer["offer_id"], confirmation["code"]).json == {"status": "confirmed"}
    assert device_count(app) == 0  # the link completes on the device's next announce
    linked = printer.announce().json
    assert linked["status"] == "linked" and linked["token_type"] == "Bearer"
    assert linked["device"]["id"] == printer.device_id
    me = client.get("/api/v1/device/me",
                    headers={"Authorization": f"Bearer {linked['access_token']}"})
    assert me.status_code == 200 and me.get_json()["owner"]["display_name"] == anna.display_name
    assert listed(anna.nearby()) == []  # linked devices are not offered any more

    for event, outcome in [("ip_match_announce", "registered"), ("ip_match_nearby", "listed"),
                           ("ip_match_offer", "awaiting_confirmation"),
                           ("ip_match_code_shown", "ok"), ("confirmation", "ok"),
                           ("link", "ok")]:
        rows = world.audit_events(event)
        assert outcome in [row.outcome for row in rows], event
        assert all(row.household == "8.8.8.8/32" for row in rows), event
    [link] = world.audit_events("link")
    assert (link.user_id, link.strategy, link.device_uid) == (
        anna.user_id, "ip_match", printer.device_id)


def test_other_households_see_nothing_and_cannot_link_or_confirm(app, world):
    printer, anna, offer_id, code = pending_offer(world, HOME_A)
    ben = world.person(HOME_B)
    assert listed(ben.nearby()) == []
    stranger_link = ben.link(printer.device_id)
    assert stranger_link.status == 404 and stranger_link.json["error"] == "not_found"
    # Even with the right code and the offer id, Ben cannot confirm Anna's offer.
    stolen = ben.confirm(offer_id, code)
    assert stolen.status == 404
    assert offer_row(app, offer_id).attempts_left == 3
    assert [r.outcome for r in world.audit_events("link_failed")] == ["not_found"]
    assert "not_found" in [r.outcome for r in world.audit_events("confirmation")]


def test_ipv6_households_are_the_prefix(world):
    printer = world.printer("2001:4860:4860::8888")
    phone = world.person("2001:4860:4860::8844")  # same /64, different address
    elsewhere = world.person("2606:4700:4700::1111")
    printer.announce()
    seen = phone.nearby().json
    assert seen["household"] == "2001:4860:4860::/64"
    assert listed(phone.nearby()) == [printer.device_id]
    assert listed(elsewhere.nearby()) == []
    link_and_confirm(phone, printer)
    assert world.links() == [(phone.user_id, printer.device_id)]


def test_three_wrong_codes_void_the_offer(app, world):
    printer, anna, offer_id, code = pending_offer(world, HOME_A)
    for left in (2, 1, 0):
        reply = anna.confirm(offer_id, wrong(code))
        assert reply.status == 400 and reply.json["error"] == "wrong_code"
        assert reply.json["attempts_left"] == left
    assert offer_row(app, offer_id) is None
    assert anna.confirm(offer_id, code).status == 404
    assert printer.announce().json["status"] == "waiting"
    assert device_count(app) == 0
    ended = world.audit_events("ip_match_offer_ended")
    assert [(e.outcome, e.actor) for e in ended] == [("voided", f"user:{anna.user_id}")]
    # A new offer gets a new code and fresh tries.
    again = anna.link(printer.device_id).json
    assert again["offer_id"] != offer_id


def void_by_wrong_codes(person, printer) -> None:
    """Pick the printer, read the code it shows, and type three wrong ones."""
    offer_id = person.link(printer.device_id).json["offer_id"]
    code = printer.announce().json["confirmation"]["code"]
    for _ in range(3):
        assert person.confirm(offer_id, wrong(code)).json["error"] == "wrong_code"


def test_a_printer_takes_no_new_offers_after_nine_wrong_codes(app, world, clock):
    """Each offer has three tries, but a voided one could be opened again at once: without a
    bound per device, guessing was limited only by the claim rate limit per address. After
    nine wrong codes less than 24 hours apart, whoever typed them, the printer takes no new
    offers until 24 hours after the last (tests/test_ip_match_wrong_codes.py: however the
    offers ended)."""
    from sqlalchemy import update

    from tsd_server.discovery.ip_match import wrong_codes
    from tsd_server.extensions import db
    from tsd_server.models.ip_match import WrongCodeCount

    printer = world.printer(HOME_A)
    guesser, other_guesser, owner = (world.person(HOME_A) for _ in range(3))
    printer.announce()
    for person in (guesser, other_guesser, guesser):
        void_by_wrong_codes(person, printer)
        clock.advance(seconds=20)
        printer.announce()
    refused = owner.link(printer.device_id)
    assert refused.status == 429 and refused.json["error"] == "too_many_wrong_codes"
    retry_after = int(refused.headers["Retry-After"])
    assert 24 * 3600 - 120 < retry_after <= 24 * 3600 + 1
    failed = world.audit_events("link_failed")[-1]
    assert (failed.outcome, failed.user_id, failed.device_uid) == (
        "too_many_wrong_codes", owner.user_id, printer.device_id)
    # Once the window has passed (moved back by hand: the printer would have to announce
    # for a day), offers are made again, and a right code links as ever.
    with app.app_context():
        last = db.session.scalar(select(WrongCodeCount.last_wrong_code_at))
        db.session.execute(update(WrongCodeCount).values(
            last_wrong_code_at=last - wrong_codes.WINDOW - timedelta(seconds=1)))
        db.session.commit()
    link_and_confirm(owner, printer)
    assert world.links() == [(owner.user_id, printer.device_id)]


def test_two_voided_offers_do_not_lock_the_printer(app, world, clock):
    printer, guesser, owner = world.printer(HOME_A), world.person(HOME_A), world.person(HOME_A)
    printer.announce()
    for _ in range(2):
        void_by_wrong_codes(guesser, printer)
        clock.advance(seconds=20)
        printer.announce()
    link_and_confirm(owner, printer)
    assert world.links() == [(owner.user_id, printer.device_id)]


def test_parallel_wrong_guesses_get_no_more_than_three_tries(app, world, database):
    printer, anna, offer_id, code = pending_offer(world, HOME_A)
    results = parallel_wrong_codes(app, anna, offer_id, code, HOME_A)
    assert results.count(400) == 3 and results.count(404) == 5, results
    wrong_rows = [r for r in world.audit_events("confirmation") if r.outcome == "wrong_code"]
    assert len(wrong_rows) == 3
    assert len(world.audit_events("ip_match_offer_ended")) == 1
    assert offer_row(app, offer_id) is None
    assert anna.confirm(offer_id, code).status == 404
    assert device_count(app) == 0


def test_confirming_from_another_household_is_refused_and_costs_no_try(app, world):
    printer, anna, offer_id, code = pending_offer(world, HOME_A)
    anna.endpoint.ip = HOME_B  # Anna's phone switched to mobile data
    assert refused_with(anna.confirm(offer_id, code), "household_changed")
    assert offer_row(app, offer_id).attempts_left == 3
    anna.endpoint.ip = HOME_A
    assert anna.confirm(offer_id, code).json == {"status": "confirmed"}


@pytest.mark.parametrize("typed", ["12345", "1234567", "abcdef", "12 34 5", "１２３４５６", ""])
def test_malformed_codes_are_refused_without_costing_a_try(app, world, typed):
    printer, anna, offer_id, code = pending_offer(world, HOME_A)
    reply = anna.confirm(offer_id, typed)
    assert reply.status == 400 and reply.json["error"] in ("invalid_field", "missing_field")
    assert offer_row(app, offer_id).attempts_left == 3


def test_codes_may_be_typed_with_a_space_or_dash(world):
    printer, anna, offer_id, code = pending_offer(world, HOME_A)
    assert anna.confirm(offer_id, f"{code[:3]} {code[3:]}").json == {"status": "confirmed"}


def test_the_code_is_not_stored_in_clear(app, world):
    printer, anna, offer_id, code = pending_offer(world, HOME_A)
    row = offer_row(app, offer_id)
    assert row.code_masked != int(code)
    assert code not in {str(value) for value in vars(row).values()}


def test_confirmation_off_links_on_the_next_announce(app, world):
    app.config["IP_MATCH_REQUIRE_CONFIRMATION"] = False
    printer, anna = world.printer(HOME_A), world.person(HOME_A)
    printer.announce()
    offer = anna.link(printer.device_id).json
    assert offer["status"] == "pending_device"
    no_code = anna.confirm(offer["offer_id"], "123456")
    assert no_code.status == 409 and no_code.json["error"] == "not_awaiting_confirmation"
    linked = printer.announce().json
    assert linked["status"] == "linked" and linked["access_token"]
    [link] = world.audit_events("link")
    assert "confirmation off" in link.detail


def test_switching_ip_match_off_stops_a_confirmed_link_from_completing(app, world):
    from tsd_server.discovery import kill_switch

    printer, anna, offer_id, code = pending_offer(world, HOME_A)
    assert anna.confirm(offer_id, code).json == {"status": "confirmed"}
    with app.test_request_context():
        kill_switch.set_flag("ip_match", enabled=False, reason="test", actor="cli")
    refused = printer.announce()
    assert refused.status == 503 and refused.json["error"] == "strategy_disabled"
    assert anna.nearby().status == 503
    assert anna.link(printer.device_id).status == 503
    assert device_count(app) == 0


def test_completion_rechecks_the_kill_switch_itself(app, world):
    """The route guard reads a cache; completion must read the flag fresh."""
    from tsd_server.discovery import kill_switch
    from tsd_server.discovery.ip_match import offers

    printer, anna, offer_id, code = pending_offer(world, HOME_A)
    anna.confirm(offer_id, code)
    switched_off_by_hand(app, "ip_match")  # set_flag would withdraw the offer first
    # Call the service as a request that got past a stale route guard would.
    from tsd_server.discovery.ip_match import announcements

    with app.test_request_context(environ_base={"REMOTE_ADDR": HOME_A}):
        request = announcements.AnnounceRequest(printer.device_id, printer.secret,
                                                printer.name, "Mk4", "test")
        with pytest.raises(kill_switch.StrategyDisabled):
            announcements.announce(request)
        assert offers  # imported for the service under test
    assert device_count(app) == 0
    failed = world.audit_events("link_failed")
    assert [r.outcome for r in failed] == ["strategy_disabled"]


def test_user_calls_need_a_login_and_a_csrf_token(app, world, client):
    printer, anna = world.printer(HOME_A), world.person(HOME_A)
    printer.announce()
    anonymous = client.get("/api/v1/discovery/nearby", environ_base={"REMOTE_ADDR": HOME_A})
    assert anonymous.status_code == 401 and anonymous.get_json()["error"] == "login_required"
    no_token = anna.endpoint.request("POST", f"/api/v1/discovery/nearby/{printer.device_id}/link")
    assert no_token.status == 400 and no_token.json["error"] == "csrf_failed"
    from tsd_server.models.ip_match import Offer

    assert db_value(app, select(func.count()).select_from(Offer)) == 0


def test_offer_ids_are_long_random_and_distinct(world):
    ids = set()
    for _ in range(3):
        printer, anna = world.printer(HOME_A), world.person(HOME_A)
        printer.announce()
        ids.add(anna.link(printer.device_id).json["offer_id"])
        printer.announce()
    assert len(ids) == 3 and all(len(offer_id) >= 32 for offer_id in ids)


@pytest.mark.parametrize("confirmed", [True, False])
def test_a_deleted_account_cannot_complete(app, world, confirmed):
    from tsd_server.extensions import db
    from tsd_server.models import User

    printer, anna, offer_id, code = pending_offer(world, HOME_A)
    if confirmed:
        anna.confirm(offer_id, code)
    with app.app_context():
        db.session.delete(db.session.get(User, anna.user_id))
        db.session.commit()
    assert printer.announce().json == {"status": "waiting", "poll_interval": 5}
    assert device_count(app) == 0


def test_a_code_typed_for_an_ended_offer_cannot_confirm_the_offer_that_took_its_id(
        app, world, monkeypatch):
    """Anna's confirmation loads her offer; before it writes, her offer ends and Carl (same
    household) picks the printer, and Carl's new offer has the id of Anna's deleted one (as
    SQLite gave it before migration 0008). Anna's right code must not confirm Carl's offer:
    every write names the offer by its random public id too."""
    from sqlalchemy import delete, update

    from tsd_server.discovery.ip_match import offers
    from tsd_server.extensions import db
    from tsd_server.models.ip_match import Offer

    printer, anna, anna_offer, code = pending_offer(world, HOME_A)
    carl = world.person(HOME_A)
    original, swapped = offers.owned_offer, {}

    def load_then_swap(user, public_id):
        found = original(user, public_id)
        if found is not None and not swapped:
            old_id = found.id
            with app.app_context():  # Anna's offer ends (as at expiry) ...
                db.session.execute(delete(Offer).where(Offer.id == old_id))
                db.session.commit()
            picked = threading.Thread(target=lambda: swapped.update(  # ... and Carl picks
                offer=carl.link(printer.device_id).json["offer_id"]))
            picked.start()
            picked.join()
            with app.app_context():  # ids are not reused any more (migration 0008): the
                db.session.execute(update(Offer)  # old one is given back by hand
                                   .where(Offer.public_id == swapped["offer"])
                                   .values(id=old_id))
                db.session.commit()
                swapped["id"] = db.session.scalar(select(Offer.id).where(
                    Offer.public_id == swapped["offer"]))
            swapped["old_id"] = old_id
        return found

    monkeypatch.setattr(offers, "owned_offer", load_then_swap)
    answer = anna.confirm(anna_offer, code)
    monkeypatch.setattr(offers, "owned_offer", original)
    assert swapped["id"] == swapped["old_id"]  # the premise: Carl's offer has Anna's old id
    assert answer.status < 500 and answer.json != {"status": "confirmed"}, answer.json
    carls = offer_row(app, swapped["offer"])
    assert carls.status == "awaiting_confirmation" and carls.confirmed_at is None
    assert printer.announce().json["status"] != "linked"
    assert world.links() == []
