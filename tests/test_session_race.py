"""A request whose session ends while it runs prepares nothing that outlives the ending.

A thief with a copy of the owner's session cookie sends a request that prepares a link (a
web code, a device-flow approval, an ip_match offer or its confirmation); the owner logs
out everywhere, or an operator revokes the account, while that request runs. The request
passed its session check when it started, so either it is refused before it commits
(``accounts.require_session_current``), or it committed first and the ending withdraws what
it made (``accounts.commit_ending``). Either way nothing it prepared can be used: no code
redeems, no approval hands out a token, no offer completes.

Each test holds the thief's request at one point in a thread of its own and runs the
ending meanwhile:

- ``ended_first``: after its session check, before its writes; the ending commits.
- ``ended_while_held``: after its writes and its hold on the account's row, before its
  commit; the ending starts, and must wait for the commit (and then withdraw).
"""

from __future__ import annotations

import pytest

from tests.support import ip_match_fixtures
from tests.support.held_requests import (
    THIEF,
    Hold,
    Running,
    Scene,
    wait_until_waiting_for_a_lock,
)
from tests.support.pairing import LOOSE_LIMITS

world = ip_match_fixtures.world

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
        else:
            incident.revoke_account(user, actor="cli", reason="session stolen")


@pytest.fixture
def scene_for(app, client, clock, make_user, login, world):
    return lambda action: Scene(action, app, client, clock, make_user, login, world)


@pytest.mark.parametrize("action", ["web_code", "approval", "ip_match_offer"])
def test_a_request_whose_session_ended_before_its_writes_is_refused(
        app, monkeypatch, scene_for, action):
    """The ending commits while the request is between its session check and its writes:
    the request is refused, and nothing it would have prepared exists. (A confirmation
    changes an offer made before the ending, which the ending deletes: the next test.)"""
    from tsd_server.discovery import kill_switch

    scene = scene_for(action)
    hold = Hold()
    # Every one of these actions reads the kill switch fresh after the session check and
    # before its first write.
    monkeypatch.setattr(kill_switch, "state", hold.wrap(
        kill_switch.state, only=lambda *args, **kwargs: kwargs.get("fresh", False)))
    thief = Running(THIEF, scene.request)
    thief.start()
    assert hold.reached.wait(30)
    end_every_session(app, scene.user_id, "log_out")
    hold.release.set()
    status, answer = thief.result()
    assert scene.refused_as_logged_out(status, answer), (status, answer)
    scene.assert_nothing_usable(answer)


@pytest.mark.parametrize("ending", ["log_out", "revoke_account"])
@pytest.mark.parametrize("action", ACTIONS)
def test_a_request_that_commits_while_the_ending_waits_is_withdrawn(
        app, monkeypatch, scene_for, action, ending):
    """The request holds the account's row when the ending starts: the ending waits for the
    request's commit, then withdraws what it prepared, in its second withdrawal."""
    from tsd_server import audit
    from tsd_server.auth import accounts

    scene = scene_for(action)
    hold = Hold()
    if action == "ip_match_confirm":  # it changes an offer that exists: held on its writes
        monkeypatch.setattr(audit, "record", hold.wrap(
            audit.record, only=lambda event, **fields: event == "confirmation"))
    else:
        monkeypatch.setattr(accounts, "require_session_current",
                            hold.wrap(accounts.require_session_current))
    thief = Running(THIEF, scene.request)
    thief.start()
    assert hold.reached.wait(30)
    owner = Running("owner-ending", lambda: end_every_session(app, scene.user_id, ending))
    owner.start()
    wait_until_waiting_for_a_lock(app, owner)
    hold.release.set()
    status, answer = thief.result()
    assert not scene.refused_as_logged_out(status, answer), (status, answer)  # it committed first
    owner.result()
    scene.assert_nothing_usable(answer)
