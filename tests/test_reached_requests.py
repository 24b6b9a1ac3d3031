"""A printer's request that a person reached (by its code or its QR link) but has not
decided yet, across a switch-off of the way it was reached.

The first account to reach a request holds it. Before, a switch-off withdrew only approvals
not yet collected: a request reached but undecided stayed held, and was approved once the
way was on again (after the incident's window), or at once through the other way: the
code a QR page shows, typed on /link, approved as pairing_code a QR link opened before QR
linking was switched off, and an incident query for qr_code did not find the link.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from tests.support import device_flow_fixtures
from tests.support.flags import switched_off_by_hand
from tests.support.pairing import (
    FRESH_SCAN,
    audit_rows,
    decide,
    enter_code,
    poll,
    poll_error,
    qr_path,
    shown_request,
    started,
    switch,
)
from tsd_server import incident
from tsd_server.extensions import db
from tsd_server.models import Device, DeviceAuthorization

app_config = device_flow_fixtures.app_config
owner = device_flow_fixtures.owner


def withdrawn(app) -> list[tuple[str, str]]:
    return [(row.strategy, row.device_uid) for row in audit_rows(app, "revocation")
            if row.outcome == "withdrawn"]


def test_a_qr_link_opened_before_a_qr_switch_off_cannot_be_approved_by_its_code(
        app, client, clock, owner):
    _, session = owner
    answer = started(client)
    page = session.get(qr_path(answer), headers=FRESH_SCAN)
    assert answer["user_code"] in page.get_data(as_text=True)
    switch(app, "qr_code", False)
    assert withdrawn(app) == [("qr_code", "printer-0002")]
    typed = enter_code(session, answer["user_code"])  # pairing_code is still on
    assert typed.status_code == 400  # no request waits with that code any more
    clock.advance(seconds=10)
    assert poll_error(poll(client, answer["device_code"])) == "access_denied"


def test_a_request_reached_by_its_code_does_not_link_after_the_switch_on(
        app, client, clock, owner):
    """Reached during a switch-off's cause (a guess that hit during a wave of guesses, say),
    it is denied with the switch-off: switched on again, it cannot be approved."""
    _, session = owner
    answer = started(client)
    assert enter_code(session, answer["user_code"]).status_code == 302
    switch(app, "pairing_code", False)
    assert withdrawn(app) == [("pairing_code", "printer-0002")]
    switch(app, "pairing_code", True)
    assert enter_code(session, answer["user_code"]).status_code == 400
    clock.advance(seconds=10)
    assert poll_error(poll(client, answer["device_code"])) == "access_denied"
    assert [row.event for row in audit_rows(app) if row.event == "link"] == []


def test_a_request_reached_by_neither_way_is_left_to_the_printer(app, client, clock, owner):
    """Nobody reached it before the switch-off: nothing to deny, and once the way is on
    again a person can still reach and approve it."""
    _, session = owner
    answer = started(client)
    switch(app, "pairing_code", False)
    switch(app, "pairing_code", True)
    assert withdrawn(app) == []
    enter_code(session, answer["user_code"])
    assert decide(session, "approve").status_code == 302
    clock.advance(seconds=10)
    assert poll(client, answer["device_code"]).status_code == 200


def test_the_code_of_a_qr_page_approves_as_qr_code_and_an_incident_finds_it(
        app, client, clock, owner):
    """Typed on /link after the QR link was opened, the code still names the scan's
    request: the decision, the link and an incident query say qr_code."""
    _, session = owner
    since = clock()
    answer = started(client)
    session.get(qr_path(answer), headers=FRESH_SCAN)
    enter_code(session, answer["user_code"])
    assert decide(session, "approve").status_code == 302
    clock.advance(seconds=10)
    assert poll(client, answer["device_code"]).status_code == 200
    assert audit_rows(app, "device_flow_decision")[-1].strategy == "qr_code"
    with app.app_context():
        assert db.session.scalars(select(Device.linked_via)).all() == ["qr_code"]
        until = clock() + timedelta(seconds=1)
        assert [row.device_uid for row in incident.affected("qr_code", since, until)] == [
            "printer-0002"]


def test_with_qr_off_and_nothing_withdrawn_its_code_approves_nothing(
        app, client, clock, owner):
    """The flag written by hand (a switch-off whose withdrawal failed, or a process that
    has not seen it): the approval reads the switch of the way the request was reached."""
    _, session = owner
    answer = started(client)
    session.get(qr_path(answer), headers=FRESH_SCAN)
    enter_code(session, answer["user_code"])
    shown = shown_request(session.get("/link/confirm").get_data(as_text=True))
    switched_off_by_hand(app, "qr_code")
    refused = decide(session, "approve", shown=shown)
    assert refused.status_code == 503
    assert "QR code" in refused.get_data(as_text=True)  # the way it was reached is off
    assert audit_rows(app, "device_flow_decision")[-1].outcome == "strategy_disabled"
    clock.advance(seconds=10)
    assert poll_error(poll(client, answer["device_code"])) == "authorization_pending"


def test_with_qr_off_the_approval_page_of_its_code_says_so(app, client, owner):
    _, session = owner
    answer = started(client)
    session.get(qr_path(answer), headers=FRESH_SCAN)
    enter_code(session, answer["user_code"])
    switched_off_by_hand(app, "qr_code")
    page = session.get("/link/confirm")
    assert page.status_code == 503 and "QR code" in page.get_data(as_text=True)


def test_a_binding_made_as_its_way_is_switched_off_is_refused(
        app, client, monkeypatch, owner, make_user, login):
    """The code is typed as pairing_code is switched off (here: by the deployment setting,
    between the binding's write and its commit). The binding re-reads the switch before it
    commits, so it cannot land after the switch-off's withdrawal and hold the request."""
    from tsd_server.discovery.pairing import approvals

    uid, session = owner
    answer = started(client)
    real_get = approvals.get

    def switched_off_meanwhile(authorization_id):
        app.config["DISCOVERY_DISABLED"] = "pairing_code"
        return real_get(authorization_id)

    monkeypatch.setattr(approvals, "get", switched_off_meanwhile)
    refused = enter_code(session, answer["user_code"])
    assert refused.status_code == 503
    assert [(row.event, row.outcome) for row in audit_rows(app)
            if row.event == "device_flow_opened"] == [("device_flow_opened",
                                                       "strategy_disabled")]
    with app.app_context():
        row = db.session.scalars(select(DeviceAuthorization)).one()
        assert (row.bound_to_id, row.bound_at) == (None, None)


def test_its_code_typed_after_the_scan_is_audited_as_qr_code(app, client, owner):
    """Binding and a too-late answer name the way the request was reached, as the decision
    does: an operator searching qr_code rows finds all of them."""
    _, session = owner
    answer = started(client)
    session.get(qr_path(answer), headers=FRESH_SCAN)
    enter_code(session, answer["user_code"])
    shown = shown_request(session.get("/link/confirm").get_data(as_text=True))
    switch(app, "qr_code", False)  # denies it
    assert decide(session, "approve", shown=shown).status_code == 503
    rows = [(row.event, row.outcome, row.strategy) for row in audit_rows(app)
            if row.event in ("device_flow_opened", "device_flow_decision")]
    assert rows == [("device_flow_opened", "bound", "qr_code"),
                    ("device_flow_opened", "bound", "qr_code"),
                    ("device_flow_decision", "too_late", "qr_code")]


def revoked_in(app, clock, strategy: str, since, until) -> int:
    clock.now = until + incident.SETTLED
    with app.app_context():
        return incident.revoke(strategy, since, until, actor="cli").withdrawn


def test_an_incident_window_finds_a_request_by_when_each_way_reached_it(app, client, clock,
                                                                         owner):
    """A qr_code window denies a request whose QR link was opened in it, though its code
    was typed before; a pairing_code window one first reached by its code in it, though its
    QR link was opened after. Neither denies a request the other way first reached."""
    _, session = owner
    code_first, qr_first = started(client), started(client, device_id="printer-0003")
    enter_code(session, code_first["user_code"])
    clock.advance(minutes=1)
    window_start = clock()
    session.get(qr_path(code_first), headers=FRESH_SCAN)
    session.get(qr_path(qr_first), headers=FRESH_SCAN)
    clock.advance(minutes=1)
    window_end = clock()
    assert revoked_in(app, clock, "pairing_code", window_start, window_end) == 0
    assert revoked_in(app, clock, "qr_code", window_start, window_end) == 2
    with app.app_context():
        assert set(db.session.scalars(select(DeviceAuthorization.status))) == {"denied"}


def test_a_pairing_code_window_finds_a_request_reached_by_code_then_scanned(
        app, client, clock, owner):
    _, session = owner
    since = clock()
    answer = started(client)
    enter_code(session, answer["user_code"])
    clock.advance(minutes=1)
    until = clock()
    session.get(qr_path(answer), headers=FRESH_SCAN)  # after the window
    assert revoked_in(app, clock, "qr_code", since, until) == 0
    assert revoked_in(app, clock, "pairing_code", since, until) == 1
