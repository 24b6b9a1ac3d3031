"""At most nine wrong confirmation codes per printer in any 24 hours, however offers end.

An offer that expired or was withdrawn ("Unlink all printers") after two wrong codes used
to count nothing, and the next offer brought fresh tries: one same-household stranger got
20 wrong codes in 10 minutes. Every wrong code now counts against the printer's device_id,
in a table of its own: neither its announcement expiring nor a link ending it (even a fake
printer's, under the same id) wipes the count.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from sqlalchemy import select

from tests.support import ip_match_fixtures
from tests.support.ip_match_world import parallel_wrong_codes, wrong

app_config = ip_match_fixtures.app_config
world = ip_match_fixtures.world

HOME = "8.8.8.8"
AWAY = "9.9.9.9"
BOUND = 9


def let_it_expire(clock, printer) -> None:
    """The offer runs out while the printer keeps announcing."""
    for _ in range(16):
        clock.advance(seconds=20)
        assert printer.announce().status == 200


def unlink_all(person) -> None:
    """The guesser's own "Unlink all printers": withdraws the guesser's offer."""
    reply = person.endpoint.request("POST", "/printers/unlink-all",
                                    data={"csrf_token": person.csrf, "confirm": "y"})
    assert reply.status == 302, reply.body


def eight_wrong_codes(guesser, printer) -> None:
    """Two wrong codes in each of four offers, each withdrawn by the guesser's Unlink all."""
    for _ in range(4):
        offer_id = guesser.link(printer.device_id).json["offer_id"]
        code = printer.announce().json["confirmation"]["code"]
        for _ in range(2):
            assert guesser.confirm(offer_id, wrong(code)).status == 400
        unlink_all(guesser)


def guess_until_stopped(printer, people, end_offer) -> tuple[int, object]:
    """Pick the printer, type two wrong codes, end the offer some other way; again and
    again. Returns the wrong codes answered as such and the answer that stopped it."""
    answered = 0
    for round_number in range(20):
        person = people[round_number % len(people)]
        offer = person.link(printer.device_id)
        if offer.status != 200:
            return answered, offer
        code = printer.announce().json["confirmation"]["code"]
        for _ in range(2):
            reply = person.confirm(offer.json["offer_id"], wrong(code))
            assert reply.status == 400 and reply.json["error"] == "wrong_code", reply.body
            answered += 1
            if reply.json["attempts_left"] == 0:
                break
        end_offer(person)
    raise AssertionError("twenty offers and never stopped")


def count_row(app, printer):
    """The printer's wrong-code count: kept by device_id, apart from its announcement."""
    from tsd_server.extensions import db
    from tsd_server.models.ip_match import WrongCodeCount

    with app.app_context():
        row = db.session.get(WrongCodeCount, printer.device_id)
        db.session.expunge_all()
        db.session.remove()
    return row


def count_of(app, printer) -> int:
    return count_row(app, printer).wrong_codes


def set_count(app, printer, count: int, last) -> None:
    from tsd_server.extensions import db
    from tsd_server.models.ip_match import WrongCodeCount

    with app.app_context():
        db.session.merge(WrongCodeCount(device_uid=printer.device_id, wrong_codes=count,
                                        last_wrong_code_at=last))
        db.session.commit()
        db.session.remove()


def assert_stopped_at_the_bound(world, printer, answered, stop, owner) -> None:
    assert answered == BOUND
    assert stop.status == 429 and stop.json["error"] == "too_many_wrong_codes", stop.body
    assert 23 * 3600 < int(stop.headers["Retry-After"]) <= 24 * 3600 + 1
    # The printer's owner is refused too: the bound is the printer's, not the guesser's.
    refused = owner.link(printer.device_id)
    assert refused.status == 429 and refused.json["error"] == "too_many_wrong_codes"
    wrong_rows = [r for r in world.audit_events("confirmation") if r.outcome == "wrong_code"]
    assert len(wrong_rows) == BOUND
    assert f"{BOUND} of {BOUND} for the printer" in wrong_rows[-1].detail
    failed = [r for r in world.audit_events("link_failed")
              if r.outcome == "too_many_wrong_codes"]
    assert [r.device_uid for r in failed] == [printer.device_id] * 2
    assert world.links() == []


def test_offers_left_to_expire_after_two_wrong_codes_stop_at_nine(app, world, clock):
    printer = world.printer(HOME)
    guessers = [world.person(HOME), world.person(HOME)]  # whoever sends them
    owner = world.person(HOME)
    printer.announce()
    answered, stop = guess_until_stopped(printer, guessers,
                                         lambda person: let_it_expire(clock, printer))
    assert_stopped_at_the_bound(world, printer, answered, stop, owner)
    ended = [e.outcome for e in world.audit_events("ip_match_offer_ended")]
    assert ended == ["expired"] * 4 + ["voided"]
    assert count_of(app, printer) == BOUND


def test_offers_withdrawn_by_unlink_all_after_two_wrong_codes_stop_at_nine(app, world, clock):
    printer, guesser, owner = world.printer(HOME), world.person(HOME), world.person(HOME)
    printer.announce()
    answered, stop = guess_until_stopped(printer, [guesser], unlink_all)
    assert_stopped_at_the_bound(world, printer, answered, stop, owner)
    withdrawn = [r for r in world.audit_events("revocation") if r.outcome == "withdrawn"]
    assert len(withdrawn) == 4


def test_parallel_wrong_codes_cannot_pass_the_printers_bound(app, world, clock):
    printer, guesser = world.printer(HOME), world.person(HOME)
    printer.announce()
    eight_wrong_codes(guesser, printer)
    offer_id = guesser.link(printer.device_id).json["offer_id"]
    code = printer.announce().json["confirmation"]["code"]
    results = parallel_wrong_codes(app, guesser, offer_id, code, HOME)
    assert results.count(400) == 1 and set(results) <= {400, 404, 429}, results
    wrong_rows = [r for r in world.audit_events("confirmation") if r.outcome == "wrong_code"]
    assert len(wrong_rows) == BOUND
    assert count_of(app, printer) == BOUND
    assert guesser.link(printer.device_id).status == 429


def test_parallel_transactions_each_count_and_none_passes_the_bound(app, world, clock):
    """The service itself: a guess holds the printer's row until it commits, so a parallel
    one sees the new count, not the one it would have read before."""
    from tsd_server.discovery.ip_match import wrong_codes
    from tsd_server.extensions import db

    printer = world.printer(HOME)
    printer.announce()
    set_count(app, printer, BOUND - 2, clock())
    device_uid, now = printer.device_id, clock()
    counted: list[int | None] = []

    def guess() -> None:
        with app.app_context():
            if wrong_codes.hold(device_uid, now):
                time.sleep(0.3)  # compare the code, slowly: the others must wait
                counted.append(wrong_codes.count_wrong(device_uid, now))
            else:
                counted.append(None)
            db.session.commit()
            db.session.remove()

    threads = [threading.Thread(target=guess) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(counted, key=str) == [BOUND - 1, BOUND, None, None], counted
    assert count_of(app, printer) == BOUND


def test_at_the_bound_even_the_right_code_is_refused_and_costs_no_try(app, world, clock):
    from tsd_server.extensions import db
    from tsd_server.models.ip_match import Offer

    printer, owner = world.printer(HOME), world.person(HOME)
    printer.announce()
    offer_id = owner.link(printer.device_id).json["offer_id"]
    code = printer.announce().json["confirmation"]["code"]
    set_count(app, printer, BOUND, clock() - timedelta(hours=1))
    refused = owner.confirm(offer_id, code)
    assert refused.status == 429 and refused.json["error"] == "too_many_wrong_codes"
    assert 22 * 3600 < int(refused.headers["Retry-After"]) <= 23 * 3600 + 1
    [row] = [r for r in world.audit_events("confirmation")
             if r.outcome == "too_many_wrong_codes"]
    assert (row.user_id, row.device_uid) == (owner.user_id, printer.device_id)
    with app.app_context():
        assert db.session.scalar(select(Offer.attempts_left)
                                 .where(Offer.public_id == offer_id)) == 3
        db.session.remove()
    assert printer.announce().json["status"] == "confirm"
    assert world.links() == []


def test_a_right_code_is_not_counted(app, world, clock):
    printer, owner = world.printer(HOME), world.person(HOME)
    printer.announce()
    set_count(app, printer, BOUND - 1, clock())
    offer_id = owner.link(printer.device_id).json["offer_id"]
    code = printer.announce().json["confirmation"]["code"]
    assert owner.confirm(offer_id, code).json == {"status": "confirmed"}
    assert count_of(app, printer) == BOUND - 1
    assert printer.announce().json["status"] == "linked"


def test_the_count_starts_again_only_after_a_day_without_wrong_codes(app, world, clock):
    printer, guesser = world.printer(HOME), world.person(HOME)
    printer.announce()
    # Eight wrong codes, the last almost a day ago: the next one still makes nine.
    set_count(app, printer, BOUND - 1, clock() - timedelta(hours=23, minutes=59))
    offer_id = guesser.link(printer.device_id).json["offer_id"]
    code = printer.announce().json["confirmation"]["code"]
    assert guesser.confirm(offer_id, wrong(code)).json["attempts_left"] == 0
    assert count_of(app, printer) == BOUND
    assert guesser.link(printer.device_id).status == 429
    # A day after the last one, the count starts again from one.
    set_count(app, printer, BOUND, clock() - timedelta(hours=24, seconds=1))
    offer_id = guesser.link(printer.device_id).json["offer_id"]
    code = printer.announce().json["confirmation"]["code"]
    assert guesser.confirm(offer_id, wrong(code)).json["attempts_left"] == 2
    row = count_row(app, printer)
    assert (row.wrong_codes, row.last_wrong_code_at) == (1, clock())
    assert guesser.confirm(offer_id, code).json == {"status": "confirmed"}


def test_keeping_the_printer_from_announcing_does_not_wipe_its_count(app, world, clock):
    """The attack: nine wrong codes, then trip the household breaker with four accounts.
    The server refuses the printer's announces until its announcement expires, and another
    device registering meanwhile purges expired ones; the printer, back after the cooldown,
    must come back with its count, not with nine fresh guesses."""
    printer, guesser = world.printer(HOME), world.person(HOME)
    helpers = [world.person(HOME) for _ in range(3)]
    printer.announce()
    answered, stop = guess_until_stopped(printer, [guesser], unlink_all)
    assert (answered, stop.status) == (BOUND, 429)
    for person in [guesser, *helpers]:
        person.nearby()  # four accounts in one household: the breaker trips
    assert world.audit_events("breaker_trip")
    for _ in range(62 * 6):  # the printer keeps announcing, refused, past the cooldown
        clock.advance(seconds=10)
        printer.announce()
    world.printer(HOME).announce()  # another device registers: expired rows are purged
    printer.announce()
    assert (count_of(app, printer), guesser.link(printer.device_id).status) \
        == (BOUND, 429)
    # A day after the last wrong code the count has run out, and the printer is free again;
    # the next registration (the printer's own, expired meanwhile) purges the count's row.
    clock.advance(hours=24)
    printer.announce()
    assert count_row(app, printer) is None
    assert guesser.link(printer.device_id).status == 200


def test_a_fake_printer_linked_under_the_printers_id_does_not_wipe_its_count(app, world, clock):
    """The attack: eight wrong codes, then the printer is kept from announcing past the TTL.
    A fake printer elsewhere registers with the printer's device_id, the attacker links it
    with the right code (which counts nothing), and linking ends the announcement. The count
    is the device_id's, not the announcement's: the real printer comes back with it."""
    printer, guesser = world.printer(HOME), world.person(HOME)
    printer.announce()
    eight_wrong_codes(guesser, printer)
    clock.advance(minutes=30)  # the printer is off (or refused) past its announcement's TTL
    fake, attacker = world.printer(AWAY, "fake"), world.person(AWAY)
    fake.device_id = printer.device_id
    assert fake.announce().status == 200
    offer_id = attacker.link(fake.device_id).json["offer_id"]
    code = fake.announce().json["confirmation"]["code"]
    assert attacker.confirm(offer_id, code).json == {"status": "confirmed"}
    assert fake.announce().json["status"] == "linked"
    assert printer.announce().status == 200  # the real printer is back
    answered, stop = guess_until_stopped(printer, [guesser], unlink_all)
    assert (answered, stop.status) == (1, 429), (answered, stop.body)
    assert 23 * 3600 < int(stop.headers["Retry-After"]) <= 24 * 3600 + 1
    assert count_of(app, printer) == BOUND
