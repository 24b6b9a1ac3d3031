"""A switch-off leaves nothing behind that a request running across it prepared or linked.

A switch-off withdraws every link waiting to happen through the strategy (a web code, a
device-flow approval, an ip_match offer), so none completes once the strategy is switched
on again, outside the incident's window. A request that read the switch as on a moment
before the switch-off committed must not slip one past that withdrawal: it re-reads the
switch before it commits, holding the switches' lock shared (``kill_switch.hold_enabled``).
So either it is refused, or it commits first and the withdrawal finds what it made. The
same holds for a device's link itself: none commits after the switch-off.
"""

from __future__ import annotations

import pytest

from tests.support import held_requests, ip_match_fixtures
from tests.support.held_requests import (
    THIEF,
    Running,
    request_across_after_its_switch_read,
    wait_until_waiting_for_a_lock,
)
from tests.support.pairing import LOOSE_LIMITS, audit_rows, issue_code, redeem, switch

world = ip_match_fixtures.world
hold = held_requests.hold
scene_for = held_requests.scene_for

STRATEGY_OF = {"web_code": "pairing_code", "approval": "pairing_code",
               "ip_match_offer": "ip_match"}


@pytest.fixture
def app_config():
    return {**LOOSE_LIMITS, **ip_match_fixtures.UNLIMITED}


@pytest.mark.parametrize("action", sorted(STRATEGY_OF))
def test_a_link_prepared_across_a_switch_off_is_refused(app, monkeypatch, hold, scene_for,
                                                        action):
    """The request read the switch as on; the switch-off commits and withdraws before the
    request writes anything. The request is refused, and after the switch-on nothing it
    would have prepared works."""
    scene = scene_for(action)
    status, answer = request_across_after_its_switch_read(
        monkeypatch, hold(), scene, lambda: switch(app, STRATEGY_OF[action], False))
    assert scene.refused_as_switched_off(status, answer), (status, answer)
    if action == "approval":  # the switch-off denied the request it had reached first
        decisions = audit_rows(app, "device_flow_decision")
        assert [(row.outcome, row.detail) for row in decisions] == [
            ("too_late", "denied already")]
    switch(app, STRATEGY_OF[action], True)
    scene.assert_nothing_usable(answer)


@pytest.mark.parametrize("action", sorted(STRATEGY_OF))
def test_a_link_prepared_while_a_switch_off_waits_is_withdrawn(app, monkeypatch, hold,
                                                                scene_for, action):
    """The request holds the switches' lock when the switch-off starts: the switch-off
    waits for the request's commit, and its withdrawal then finds what it prepared."""
    from tsd_server.discovery import kill_switch

    scene = scene_for(action)
    held = hold()
    monkeypatch.setattr(kill_switch, "hold_enabled", held.wrap(kill_switch.hold_enabled))
    thief = Running(THIEF, scene.request)
    thief.start()
    assert held.reached.wait(30)
    switch_off = Running("switch-off", lambda: switch(app, STRATEGY_OF[action], False))
    switch_off.start()
    wait_until_waiting_for_a_lock(app, switch_off)
    held.release.set()
    status, answer = thief.result()
    assert status in (200, 201, 302), (status, answer)  # it committed first
    switch_off.result()
    switch(app, STRATEGY_OF[action], True)
    scene.assert_nothing_usable(answer)


def test_a_redemption_racing_a_switch_off_links_before_it_or_not_at_all(
        app, client, monkeypatch, hold, make_user, login):
    """A device redeems a web code while pairing_code is switched off: its link is written
    and audited, not committed yet. On PostgreSQL the switch-off commits, and its
    withdrawal waits for the code the redemption holds; the redemption then reads the
    switch again and is refused, and the code is withdrawn. On SQLite the redemption's
    writes keep the switch-off out, so the link commits before it."""
    from tsd_server import audit
    from tsd_server.extensions import db

    _, email, password = make_user("owner@example.org")
    code = issue_code(login(email, password, REMOTE_ADDR="1.1.1.1"))["code"]
    held = hold()
    monkeypatch.setattr(audit, "record", held.wrap(
        audit.record, only=lambda event, **fields: event == "link"))
    device = Running(THIEF, lambda: redeem(client, code, device_id="thief-dev-1", ip="6.6.6.6"))
    device.start()
    assert held.reached.wait(30)
    switch_off = Running("switch-off", lambda: switch(app, "pairing_code", False))
    switch_off.start()
    wait_until_waiting_for_a_lock(app, switch_off)
    held.release.set()
    answer = device.result()
    switch_off.result()
    order = [row.event for row in audit_rows(app) if row.event in ("link", "flag_toggle")]
    with app.app_context():
        postgresql = db.engine.dialect.name == "postgresql"
    if postgresql:
        assert answer.status_code == 503 and answer.get_json()["error"] == "strategy_disabled"
        assert order == ["flag_toggle"]
        switch(app, "pairing_code", True)
        again = redeem(client, code, device_id="thief-dev-1", ip="6.6.6.6")
        assert again.status_code == 400 and again.get_json()["error"] == "invalid_code"
    else:
        assert answer.status_code == 201, answer.get_json()
        assert order == ["link", "flag_toggle"]
