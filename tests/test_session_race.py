"""A request whose session ends while it runs prepares nothing that outlives the ending.

A thief with a copy of the owner's session cookie sends a request that prepares a link (a
web code, a device-flow approval, an ip_match offer or its confirmation); the owner logs
out everywhere, or an operator revokes the account, while that request runs. The request
passed its session check when it started, so either it is refused before it commits
(``accounts.require_session_current``), or it committed first and the ending withdraws what
it made, holding the account's lock (``pending_links``). Either way nothing it prepared can
be used: no code redeems, no approval hands out a token, no offer completes. Deleting the
account (``delete-account``) is such an ending too: a request that then meets the missing
account (a foreign key, its user object gone) ends as logged out, not in a 500.

Each test holds the thief's request at one point in a thread of its own and runs the
ending meanwhile:

- ``ended_first``: after its session check, before its writes; the ending commits.
- ``ended_while_held``: after its writes and its hold on the account's row, before its
  commit; the ending starts, and must wait for the commit (and then withdraw).

And a device that redeems such a code the moment it is committed waits for the ending's
lock on the account, like every link, and finds the code withdrawn, whatever its clock.
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
from tests.support.pairing import (
    LOOSE_LIMITS,
    audit_rows,
    decide,
    enter_code,
    issue_code,
    me,
    poll,
    redeem,
    started,
)

world = ip_match_fixtures.world
hold = held_requests.hold
scene_for = held_requests.scene_for

ACTIONS = ["web_code", "approval", "ip_match_offer", "ip_match_confirm"]


@pytest.fixture
def app_config():
    return {**LOOSE_LIMITS, **ip_match_fixtures.UNLIMITED}


def end_every_session(app, user_id: int, ending: str) -> None:
    from tsd_server import incident
    from tsd_server.auth import accounts
    from tsd_server.extensions import db
    from tsd_server.models import User

    with app.test_request_context():
        user = db.session.get(User, user_id)
        if ending == "log_out":
            accounts.end_sessions(user)
        elif ending == "delete_account":
            accounts.delete_account(user, actor="cli", reason="the owner asked")
        else:
            incident.revoke_account(user, actor="cli", reason="session stolen")


@pytest.mark.parametrize("ending", ["log_out", "delete_account"])
@pytest.mark.parametrize("action", ["web_code", "approval", "ip_match_offer"])
def test_a_request_whose_session_ended_before_its_writes_is_refused(
        app, monkeypatch, hold, scene_for, action, ending):
    """The ending commits while the request is between its session check and its writes:
    the request is refused, and nothing it would have prepared exists. (A confirmation
    changes an offer made before the ending, which the ending deletes: the next test.)"""
    scene = scene_for(action)
    status, answer = request_across_after_its_switch_read(
        monkeypatch, hold(), scene, lambda: end_every_session(app, scene.user_id, ending))
    assert scene.refused_as_logged_out(status, answer), (status, answer)
    scene.assert_nothing_usable(answer)


@pytest.mark.parametrize("ending", ["log_out", "revoke_account", "delete_account"])
@pytest.mark.parametrize("action", ACTIONS)
def test_a_request_that_commits_while_the_ending_waits_is_withdrawn(
        app, monkeypatch, hold, scene_for, action, ending):
    """The request holds the account's row when the ending starts: the ending waits for the
    request's commit, then withdraws what it prepared."""
    from tsd_server import audit
    from tsd_server.auth import accounts

    scene = scene_for(action)
    held = hold()
    if action == "ip_match_confirm":  # it changes an offer that exists: held on its writes
        monkeypatch.setattr(audit, "record", held.wrap(
            audit.record, only=lambda event, **fields: event == "confirmation"))
    else:
        monkeypatch.setattr(accounts, "require_session_current",
                            held.wrap(accounts.require_session_current))
    thief = Running(THIEF, scene.request)
    thief.start()
    assert held.reached.wait(30)
    owner = Running("owner-ending", lambda: end_every_session(app, scene.user_id, ending))
    owner.start()
    wait_until_waiting_for_a_lock(app, owner)
    held.release.set()
    status, answer = thief.result()
    assert not scene.refused_as_logged_out(status, answer), (status, answer)  # it committed first
    owner.result()
    scene.assert_nothing_usable(answer)


@pytest.mark.parametrize("ending", ["log_out", "revoke_account"])
def test_a_code_redeemed_while_the_ending_holds_the_account_gives_no_working_token(
        app, client, clock, monkeypatch, hold, make_user, login, ending):
    """The thief's code is committed while the ending waits for it (as above), and the
    thief's device redeems it at once, while the ending holds the account's lock and has not
    withdrawn yet. The redemption waits for that lock before it claims the code (as every
    link does), so it finds the code withdrawn: marked spent, which no clock can undo (the
    clock moves on between the redemption's first look and the withdrawal)."""
    from tsd_server import pending_links
    from tsd_server.auth import accounts

    user_id, email, password = make_user("owner@example.org")
    thief = login(email, password, REMOTE_ADDR="6.6.6.6")
    held_thief, held_ending = hold(), hold("owner-ending")
    monkeypatch.setattr(accounts, "require_session_current",
                        held_thief.wrap(accounts.require_session_current))
    monkeypatch.setattr(pending_links, "withdraw", held_ending.wrap(
        pending_links.withdraw, before=True))
    issuing = Running(THIEF, lambda: thief.post("/api/v1/pairing/codes"))
    issuing.start()
    assert held_thief.reached.wait(30)
    owner = Running("owner-ending", lambda: end_every_session(app, user_id, ending))
    owner.start()
    wait_until_waiting_for_a_lock(app, owner)
    held_thief.release.set()
    issued = issuing.result()
    assert issued.status_code == 201  # committed before the ending's raise
    assert held_ending.reached.wait(30)  # the ending holds the account's lock, and waits
    device = Running("device", lambda: redeem(app.test_client(), issued.get_json()["code"],
                                              device_id="thief-dev-1", ip="6.6.6.6"))
    device.start()
    with app.app_context():
        from tsd_server.extensions import db

        postgresql = db.engine.dialect.name == "postgresql"
    if postgresql or ending == "log_out":  # SQLite's revoke has written nothing yet
        wait_until_waiting_for_a_lock(app, device)
    clock.advance(seconds=1)  # the withdrawal's time is after the redemption's
    held_ending.release.set()
    owner.result()
    answer = device.result()
    if answer.status_code == 201:  # SQLite's revoke: linked first, then revoked with the rest
        assert not postgresql and ending == "revoke_account"
        assert me(app.test_client(), answer.get_json()["access_token"]).status_code == 401
    else:
        assert answer.status_code == 400 and answer.get_json()["error"] == "invalid_code"


def test_a_code_expiring_as_it_is_withdrawn_is_spent_whatever_the_redeemers_clock(
        app, clock, monkeypatch, hold, make_user, login):
    """A device redeems a code a second before it expires and waits for the account's lock,
    held by a log-out; the log-out withdraws a second after the expiry, and the device's
    clock (another host's) is two seconds behind. The withdrawal still spends the code (it
    takes codes that expired a moment ago too, and marks them spent, not expired), so the
    redemption finds it used, whatever its clock says."""
    from tsd_server import pending_links

    user_id, email, password = make_user("owner@example.org")
    code = issue_code(login(email, password, REMOTE_ADDR="6.6.6.6"))["code"]
    clock.advance(seconds=599)  # PAIRING_CODE_TTL is 600 s: one second left
    before, after = hold("owner-ending"), hold("owner-ending")
    monkeypatch.setattr(pending_links, "withdraw", after.wrap(
        before.wrap(pending_links.withdraw, before=True)))
    owner = Running("owner-ending", lambda: end_every_session(app, user_id, "log_out"))
    owner.start()
    assert before.reached.wait(30)  # the log-out holds the account's lock
    device = Running("device", lambda: redeem(app.test_client(), code,
                                              device_id="thief-dev-1", ip="6.6.6.6"))
    device.start()
    wait_until_waiting_for_a_lock(app, device)  # its first look found the code valid
    clock.advance(seconds=2)
    before.release.set()
    assert after.reached.wait(30)  # withdrawn as of a second after the expiry
    clock.advance(seconds=-2)  # the time the device reads after the lock
    after.release.set()
    owner.result()
    answer = device.result()
    assert answer.status_code == 400 and answer.get_json()["error"] == "invalid_code"
    # Spent, but not audited as withdrawn: by the log-out's clock it had expired already.
    assert audit_rows(app, "revocation") == []


def test_a_token_collection_waiting_for_the_ending_is_told_access_denied(
        app, client, monkeypatch, hold, make_user, login):
    """A device collects its approved token while a log-out holds the account's lock: it
    waits, the log-out withdraws the approval, and the device is told ``access_denied``
    (RFC 8628), the answer its agent explains, not ``invalid_grant``."""
    from tsd_server import pending_links

    user_id, email, password = make_user("owner@example.org")
    thief = login(email, password, REMOTE_ADDR="6.6.6.6")
    flow = started(client, device_id="thief-dev-1", ip="6.6.6.6")
    assert enter_code(thief, flow["user_code"]).status_code == 302
    assert decide(thief, "approve").status_code == 302
    held = hold("owner-ending")
    monkeypatch.setattr(pending_links, "withdraw", held.wrap(pending_links.withdraw,
                                                            before=True))
    owner = Running("owner-ending", lambda: end_every_session(app, user_id, "log_out"))
    owner.start()
    assert held.reached.wait(30)
    device = Running("device", lambda: poll(app.test_client(), flow["device_code"],
                                            ip="6.6.6.6"))
    device.start()
    wait_until_waiting_for_a_lock(app, device)
    held.release.set()
    owner.result()
    answer = device.result()
    assert (answer.status_code, answer.get_json()["error"]) == (400, "access_denied")
