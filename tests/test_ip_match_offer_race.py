"""Offers made at the same moment as something else touches the printer or the account.

- Two people of one household pick the same printer: one gets the offer, the other a clear
  409 ``offer_pending``, never a 500. The first request's offer is written but not
  committed yet when the second one's insert meets it (on PostgreSQL the unique index makes
  the second wait, then fail; on SQLite the first holds the only write lock).
- Someone picks a printer again after their own offer for it expired, while their account
  logs out everywhere: neither waits for the other (a deadlock on PostgreSQL would abort one
  of them after a second, a 500)."""

from __future__ import annotations

import pytest

from tests.support import held_requests, ip_match_fixtures
from tests.support.held_requests import THIEF, Running, wait_until_waiting_for_a_lock

world = ip_match_fixtures.world
hold = held_requests.hold


@pytest.fixture
def app_config():
    # Offers expire in 30 s; announcements stay live an hour, so a printer that has not
    # announced since still has its expired offer.
    return {**ip_match_fixtures.UNLIMITED, "IP_MATCH_OFFER_TTL": 30,
            "IP_MATCH_ANNOUNCE_TTL": 3600}


def test_the_second_of_two_simultaneous_offers_is_a_409_not_a_500(app, monkeypatch, hold,
                                                                   world):
    from tsd_server.auth import accounts

    printer = world.printer("8.8.8.8")
    first, second = world.person("8.8.8.8"), world.person("8.8.8.8")
    printer.announce()
    held = hold()
    monkeypatch.setattr(accounts, "require_session_current",
                        held.wrap(accounts.require_session_current))
    picking = Running(THIEF, lambda: first.link(printer.device_id))
    picking.start()
    assert held.reached.wait(30)  # its offer is flushed, not committed
    also = Running("second-person", lambda: second.link(printer.device_id))
    also.start()
    wait_until_waiting_for_a_lock(app, also)
    held.release.set()
    assert picking.result().status == 200
    answer = also.result()
    assert (answer.status, answer.json["error"]) == (409, "offer_pending"), answer.json


def test_replacing_ones_own_expired_offer_does_not_deadlock_a_log_out(app, clock, monkeypatch,
                                                                      hold, world):
    """The new offer's request ends the expired one first (a write), then checks its session
    under the account's row; the log-out holds that row and deletes the account's offers.
    The expired offer's end is committed on its own, so the log-out never waits for the
    request, and the request then finds its session ended."""
    from tsd_server.auth import accounts
    from tsd_server.discovery.ip_match import wrong_codes
    from tsd_server.extensions import db
    from tsd_server.models import User
    from tsd_server.models.ip_match import Offer

    printer, person = world.printer("8.8.8.8"), world.person("8.8.8.8")
    printer.announce()
    assert person.link(printer.device_id).status == 200
    clock.advance(seconds=31)  # the offer expired; the printer has not announced since
    held = hold()
    monkeypatch.setattr(wrong_codes, "locked_until", held.wrap(wrong_codes.locked_until))
    picking = Running(THIEF, lambda: person.link(printer.device_id))
    picking.start()
    assert held.reached.wait(30)  # it has ended the expired offer

    def log_out() -> None:
        with app.test_request_context():
            accounts.end_sessions(db.session.get(User, person.user_id))

    ending = Running("owner-ending", log_out)
    ending.start()
    ending.result()  # without waiting for the held request
    held.release.set()
    answer = picking.result()
    assert (answer.status, answer.json["error"]) == (401, "login_required"), answer.json
    with app.app_context():
        assert db.session.query(Offer).count() == 0
