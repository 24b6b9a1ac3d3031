"""Two people of one household pick the same printer at the same moment: one gets the offer,
the other a clear 409 ``offer_pending``, never a 500. The first request's offer is written
but not committed yet when the second one's insert meets it (on PostgreSQL the unique index
makes the second wait, then fail; on SQLite the first holds the only write lock)."""

from __future__ import annotations

import pytest

from tests.support import held_requests, ip_match_fixtures
from tests.support.held_requests import THIEF, Running, wait_until_waiting_for_a_lock

world = ip_match_fixtures.world
hold = held_requests.hold


@pytest.fixture
def app_config():
    return dict(ip_match_fixtures.UNLIMITED)


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
