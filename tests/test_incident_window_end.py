"""Where an incident window ends, and what a revoke leaves behind there.

The runbook ends a window at the switch-off; nothing that got through before it may fall
after that time. A revoke runs only on a window that has ended, withdraws what the window
set in motion that has not linked yet (an approval given in it, collected later, would be a
link outside it), and an owner's re-link landing while the revoke runs keeps its new link.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.support import held_requests
from tests.support.held_requests import Running, wait_until_waiting_for_a_lock
from tests.support.pairing import (
    FRESH_SCAN,
    decide,
    enter_code,
    issue_code,
    me,
    poll,
    qr_token,
    redeem,
    started,
    switch,
)
from tsd_server import incident
from tsd_server.discovery.link_service import link_device
from tsd_server.extensions import db
from tsd_server.models import Device, User

hold = held_requests.hold


def _link(app, owner_id: int, device_uid: str, strategy: str = "ip_match") -> str:
    with app.test_request_context(environ_base={"REMOTE_ADDR": "9.9.9.9"}):
        return link_device(owner=db.session.get(User, owner_id), device_uid=device_uid,
                           name="Printer", model=None, strategy=strategy,
                           actor=f"user:{owner_id}", address=None).access_token


def _revoke(app, strategy, since, until):
    with app.app_context():
        return incident.revoke(strategy, since, until, actor="cli")


def test_a_window_ending_at_the_switch_off_holds_every_link_that_got_through(
        app, client, clock, monkeypatch, hold, make_user, login):
    """A device links while the switch-off is on its way to the switches' lock. The
    switch-off's time is read once it holds the lock, so that link is inside
    [since, switch-off time): the runbook's window finds and revokes it."""
    from tsd_server.discovery import kill_switch
    from tsd_server.models import StrategyFlag

    _, email, password = make_user("owner@example.org")
    since = clock() - timedelta(minutes=1)
    code = issue_code(login(email, password, REMOTE_ADDR="1.1.1.1"))["code"]
    held = hold("switch-off")
    monkeypatch.setattr(kill_switch, "_lock_switches",
                        held.wrap(kill_switch._lock_switches, before=True))
    switch_off = Running("switch-off", lambda: switch(app, "pairing_code", False))
    switch_off.start()
    assert held.reached.wait(30)
    clock.advance(seconds=1)
    linked = redeem(client, code, device_id="printer-1", ip="6.6.6.6")
    assert linked.status_code == 201, linked.get_json()
    clock.advance(seconds=1)
    held.release.set()
    switch_off.result()
    with app.app_context():
        until = db.session.get(StrategyFlag, "pairing_code").changed_at
    clock.now = until + incident.SETTLED
    assert [row.device_uid for row in _revoke(app, "pairing_code", since, until).revoked] \
        == ["printer-1"]
    assert me(client, linked.get_json()["access_token"]).status_code == 401


@pytest.mark.parametrize("since_until", [-timedelta(hours=1), -timedelta(microseconds=1),
                                         incident.SETTLED - timedelta(microseconds=1)])
def test_a_window_that_has_not_ended_is_not_revoked(app, clock, make_user, since_until):
    """A window still open, or closed less than a minute ago (a link made as it ended may
    still be committing), is refused, dry run included; a minute later it is revoked."""
    uid, _, _ = make_user()
    token = _link(app, uid, "printer-1")
    since, until = clock() - timedelta(hours=1), clock() + timedelta(microseconds=1)
    clock.now = until + since_until
    with pytest.raises(ValueError, match="has not come yet"):
        _revoke(app, "ip_match", since, until)
    for extra in ([], ["--yes"]):  # the dry run says so too, before anyone relies on it
        result = app.test_cli_runner().invoke(args=[
            "incident", "revoke", "--strategy", "ip_match", "--since", since.isoformat(),
            "--until", until.isoformat(), *extra])
        assert result.exit_code == 2 and "has not come yet" in result.output, result.output
    assert me(app.test_client(), token).status_code == 200
    clock.now = until + incident.SETTLED  # ended a minute ago: revoked
    assert [row.device_uid for row in _revoke(app, "ip_match", since, until).revoked] \
        == ["printer-1"]


def test_the_admin_page_refuses_a_window_that_has_not_ended(app, clock, make_user, login):
    uid, _, _ = make_user()
    token = _link(app, uid, "printer-1")
    _, email, password = make_user("admin@example.org", is_admin=True)
    admin = login(email, password)
    window = {"strategy": "ip_match", "since": (clock() - timedelta(hours=1)).isoformat(),
              "until": (clock() + timedelta(hours=1)).isoformat(), "confirm": "yes"}
    answer = admin.form_post("/admin/incident/revoke", window)
    assert answer.status_code == 302
    page = admin.get("/admin/incident").get_data(as_text=True)
    assert "has not come yet" in page
    assert me(app.test_client(), token).status_code == 200


def test_a_revoke_withdraws_what_the_window_set_in_motion(app, client, clock, make_user,
                                                          login):
    """An approval given in the window, a web code issued in it and a printer's request a
    stranger reached in it by its code without deciding yet: the revoke withdraws all
    three, so nothing of them links a printer afterwards. An approval given before the
    window, and one through another strategy, are left."""
    _, email, password = make_user("owner@example.org")
    person = login(email, password, REMOTE_ADDR="1.1.1.1")
    _, stranger_email, stranger_password = make_user("stranger@example.org")
    stranger = login(stranger_email, stranger_password, REMOTE_ADDR="7.7.7.7")
    before = started(client, device_id="printer-before", ip="6.6.6.6")
    assert enter_code(person, before["user_code"]).status_code == 302
    assert decide(person).status_code == 302
    clock.advance(minutes=2)
    since = clock()
    inside = started(client, device_id="printer-inside", ip="6.6.6.6")
    assert enter_code(person, inside["user_code"]).status_code == 302
    assert decide(person).status_code == 302
    code = issue_code(person)["code"]
    by_qr = started(client, device_id="printer-qr", ip="6.6.6.6")
    assert person.get(f"/link/qr/{qr_token(by_qr)}", headers=FRESH_SCAN).status_code == 200
    assert decide(person).status_code == 302
    reached = started(client, device_id="printer-reached", ip="6.6.6.6")
    assert enter_code(stranger, reached["user_code"]).status_code == 302  # holds it
    clock.advance(minutes=1)
    until = clock()
    clock.advance(seconds=incident.SETTLED.total_seconds())

    result = _revoke(app, "pairing_code", since, until)
    assert result.withdrawn == 3 and result.revoked == []
    assert decide(stranger).status_code != 302  # nothing left to approve
    refused = poll(client, reached["device_code"], ip="6.6.6.6")
    assert refused.status_code == 400 and refused.get_json()["error"] == "access_denied"
    clock.advance(seconds=10)
    collected = poll(client, inside["device_code"], ip="6.6.6.6")
    assert collected.status_code == 400 and collected.get_json()["error"] == "access_denied"
    late = redeem(client, code, device_id="printer-code", ip="6.6.6.6")
    assert late.status_code == 400 and late.get_json()["error"] == "invalid_code"
    for outside in (before, by_qr):
        assert poll(client, outside["device_code"], ip="6.6.6.6").status_code == 200
    with app.app_context():
        assert sorted(db.session.scalars(select(Device.device_uid))) == \
            ["printer-before", "printer-qr"]



@pytest.mark.parametrize("decided_before_the_revoke", [False, True])
def test_a_request_expired_by_the_revoking_hosts_clock_is_withdrawn_too(
        app, client, clock, make_user, login, decided_before_the_revoke):
    """The revoke runs on a host whose clock says the stranger's request expired 5 s ago;
    the host that then decides it, and the one the printer polls, are 10 s behind. Reached
    or approved, it must not link the printer there. Not counted: by the revoking host's
    clock it was not usable."""
    _, email, password = make_user("stranger@example.org")
    stranger = login(email, password, REMOTE_ADDR="7.7.7.7")
    since = clock()
    reached = started(client, device_id="printer-reached", ip="6.6.6.6")
    assert enter_code(stranger, reached["user_code"]).status_code == 302
    if decided_before_the_revoke:
        assert decide(stranger).status_code == 302
    clock.advance(seconds=1)
    until = clock()
    clock.advance(seconds=reached["expires_in"] + 5 - 1)
    assert _revoke(app, "pairing_code", since, until).withdrawn == 0
    clock.advance(seconds=-10)  # the lagging host
    if not decided_before_the_revoke:
        assert decide(stranger).status_code != 302
    refused = poll(client, reached["device_code"], ip="6.6.6.6")
    assert refused.status_code == 400 and refused.get_json()["error"] == "access_denied"
    with app.app_context():
        assert list(db.session.scalars(select(Device.device_uid))) == []


@pytest.mark.parametrize("before_its_switch_read", [False, True])
def test_a_link_of_the_window_still_committing_when_the_revoke_starts_is_revoked(
        app, client, clock, monkeypatch, hold, make_user, login, before_its_switch_read):
    """A device redeems a code issued in the window: the code is claimed and the link
    written, with a time inside the window, but not committed when the revoke starts. The
    device holds the switches' lock shared (it re-read the switch) or not yet. Either way
    the revoke waits for it (for that lock, or for the code its withdrawal would spend),
    the link commits, and the revoke finds and revokes it, without a deadlock."""
    from tsd_server.discovery import kill_switch

    _, email, password = make_user("owner@example.org")
    since = clock()
    code = issue_code(login(email, password, REMOTE_ADDR="1.1.1.1"))["code"]
    clock.advance(seconds=1)
    held = hold("device")
    monkeypatch.setattr(kill_switch, "hold_enabled", held.wrap(
        kill_switch.hold_enabled, before=before_its_switch_read))
    device = Running("device", lambda: redeem(client, code, device_id="printer-1",
                                              ip="6.6.6.6"))
    device.start()
    assert held.reached.wait(30)
    until = clock() + timedelta(seconds=1)
    clock.now = until + incident.SETTLED
    revoking = Running("revoke", lambda: _revoke(app, "pairing_code", since, until))
    revoking.start()
    wait_until_waiting_for_a_lock(app, revoking)
    held.release.set()
    linked = device.result()
    assert linked.status_code == 201, linked.get_json()
    result = revoking.result()
    assert [row.device_uid for row in result.revoked] == ["printer-1"]
    assert result.withdrawn == 0  # redeemed before the withdrawal could spend it
    assert me(client, linked.get_json()["access_token"]).status_code == 401


def test_a_relink_while_a_revoke_runs_waits_and_keeps_its_new_link(
        app, clock, monkeypatch, hold, make_user):
    """The revoke has found the owner's printer linked in the window; the owner re-links
    it (after the window) at that moment. The re-link waits for the revoke, and its new
    token works: the revoke took the old one only."""
    uid, _, _ = make_user()
    since = clock()
    clock.advance(minutes=1)
    old = _link(app, uid, "printer-1")
    clock.advance(minutes=1)
    until = clock()
    clock.now = until + incident.SETTLED
    held = hold("revoke")
    monkeypatch.setattr(incident, "_find", held.wrap(incident._find))
    revoking = Running("revoke", lambda: _revoke(app, "ip_match", since, until))
    revoking.start()
    assert held.reached.wait(30)
    relink = Running("relink", lambda: _link(app, uid, "printer-1", strategy="pairing_code"))
    relink.start()
    wait_until_waiting_for_a_lock(app, relink)
    held.release.set()
    assert [row.device_uid for row in revoking.result().revoked] == ["printer-1"]
    fresh = relink.result()
    client = app.test_client()
    assert me(client, old).status_code == 401
    assert me(client, fresh).status_code == 200


# --- a window ended at the switch-off as the admin pages show it ---------------------------

SWITCHED_OFF_AT = re.compile(r"Off: runtime by admin:\d+ at (\S+ \S+ UTC)")


def _link_then_switch_off(app, clock, make_user, login):
    """A stranger's link 0.4 s into a second, the switch-off 0.4 s later in that second."""
    stranger, _, _ = make_user("stranger@example.org")
    clock.now = clock.now.replace(microsecond=400_000)
    _link(app, stranger, "victims-printer")
    with app.app_context():
        pk = db.session.scalar(select(Device.id).where(Device.device_uid == "victims-printer"))
    admin = login(*make_user("root@example.org", is_admin=True)[1:])
    clock.now = clock.now.replace(microsecond=800_000)
    assert admin.form_post("/admin/kill-switches", {
        "target": "ip_match", "action": "disable", "reason": "LB lost client IPs"}
    ).status_code == 302
    return pk, admin


def test_the_switch_off_the_kill_switch_page_shows_ends_a_window_that_holds_the_link(
        app, clock, make_user, login):
    """docs/incident-response.md: end the window at the switch-off. Shown cut to the
    second, it left out a link made earlier in that second (--until is exclusive)."""
    pk, admin = _link_then_switch_off(app, clock, make_user, login)
    shown = SWITCHED_OFF_AT.search(
        admin.get("/admin/kill-switches").get_data(as_text=True)).group(1)
    assert shown.endswith(".800000 UTC"), shown
    clock.advance(minutes=5)
    window = {"strategy": "ip_match", "since": "2000-01-01", "until": shown}
    listed = admin.get("/admin/incident", query_string=window).get_data(as_text=True)
    assert f'data-device-pk="{pk}"' in listed


def test_the_switch_off_the_audit_log_shows_ends_a_window_that_revokes_the_link(
        app, clock, make_user, login):
    pk, admin = _link_then_switch_off(app, clock, make_user, login)
    log = admin.get("/admin/audit", query_string={"event": "flag_toggle"}).get_data(
        as_text=True)
    shown = re.search(r'<time datetime="[^"]+">([^<]+)</time>', log).group(1)
    clock.advance(minutes=5)
    admin.form_post("/admin/incident/revoke", {
        "strategy": "ip_match", "since": "2000-01-01", "until": shown, "confirm": "yes"})
    with app.app_context():
        assert db.session.scalar(select(Device.token_hash).where(Device.id == pk)) is None
