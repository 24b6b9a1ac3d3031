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

import threading
import time

import pytest

from tests.support import ip_match_fixtures
from tests.support.pairing import (
    LOOSE_LIMITS,
    decide,
    enter_code,
    poll,
    redeem,
    started,
)

world = ip_match_fixtures.world

THIEF = "thief-request"
ACTIONS = ["web_code", "approval", "ip_match_offer", "ip_match_confirm"]


@pytest.fixture
def app_config():
    return {**LOOSE_LIMITS, **ip_match_fixtures.UNLIMITED}


class Hold:
    """Stops the thread named THIEF the first time it returns from a wrapped call, until
    released."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()

    def wrap(self, real, *, only=lambda *args, **kwargs: True):
        def held(*args, **kwargs):
            result = real(*args, **kwargs)
            if (threading.current_thread().name == THIEF and only(*args, **kwargs)
                    and not self.reached.is_set()):
                self.reached.set()
                assert self.release.wait(30), "the test never released the request"
            return result

        return held


class Running(threading.Thread):
    """A call in a thread of its own; ``result()`` gives its return value or raises."""

    def __init__(self, name: str, call) -> None:
        super().__init__(name=name, daemon=True)
        self.call, self.value, self.error = call, None, None

    def run(self) -> None:
        try:
            self.value = self.call()
        except BaseException as error:  # noqa: BLE001 - re-raised in result()
            self.error = error

    def result(self):
        self.join(30)
        assert not self.is_alive(), f"{self.name} did not finish"
        if self.error is not None:
            raise self.error
        return self.value


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


def wait_until_waiting_for_a_lock(app, ending: Running) -> None:
    """The ending is blocked by the thief's uncommitted transaction: on PostgreSQL it waits
    for a row lock (seen in pg_stat_activity); on SQLite for the one writer's lock."""
    from sqlalchemy import text

    from tsd_server.extensions import db

    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            ending.join(0.5)
            assert ending.is_alive(), "the ending did not wait for the thief's transaction"
            return
        deadline = time.monotonic() + 20
        with db.engine.connect() as connection:
            while time.monotonic() < deadline:
                waiting = connection.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'")).scalar()
                connection.rollback()
                if waiting:
                    return
                assert ending.is_alive(), "the ending did not wait for the thief's transaction"
                time.sleep(0.01)
    raise AssertionError("the ending never waited for the thief's transaction")


class Scene:
    """One action of the thief's, prepared up to the request that is held, and how to tell
    afterwards that what it prepared cannot be used."""

    def __init__(self, action: str, app, client, clock, make_user, login, world) -> None:
        self.action, self.app, self.client, self.clock = action, app, client, clock
        if action.startswith("ip_match"):
            self.printer = world.printer("8.8.8.8")
            self.thief = world.person("8.8.8.8")
            self.user_id = self.thief.user_id
            self.printer.announce()
            if action == "ip_match_confirm":
                self.offer = self.thief.link(self.printer.device_id).json["offer_id"]
                self.code = self.printer.announce().json["confirmation"]["code"]
            self.world = world
            return
        self.user_id, email, password = make_user("owner@example.org")
        self.thief = login(email, password, REMOTE_ADDR="6.6.6.6")
        if action == "approval":
            self.flow = started(client, device_id="thief-dev", ip="6.6.6.6")
            assert enter_code(self.thief, self.flow["user_code"]).status_code == 302

    def request(self):
        """The held request; returns (status, what it answered)."""
        if self.action == "web_code":
            answer = self.thief.post("/api/v1/pairing/codes")
            return answer.status_code, answer.get_json()
        if self.action == "approval":
            answer = decide(self.thief, "approve")
            return answer.status_code, answer.headers.get("Location", "")
        if self.action == "ip_match_offer":
            reply = self.thief.link(self.printer.device_id)
        else:
            reply = self.thief.confirm(self.offer, self.code)
        return reply.status, reply.json

    def refused(self, status: int, answer) -> bool:
        if self.action == "approval":  # a web form: back to the login page
            return status == 302 and "/login" in answer
        return status == 401 and answer["error"] == "login_required"

    def assert_nothing_usable(self, answer) -> None:
        self.clock.advance(seconds=10)  # past the device flow's poll interval
        if self.action == "web_code":
            code = answer.get("code") if isinstance(answer, dict) else None
            if code is not None:
                late = redeem(self.client, code, device_id="thief-dev", ip="6.6.6.6")
                assert late.status_code == 400 and late.get_json()["error"] == "invalid_code"
            assert self._live_codes() == 0
        elif self.action == "approval":
            collected = poll(self.client, self.flow["device_code"], ip="6.6.6.6")
            assert collected.status_code == 400, collected.get_json()
            assert collected.get_json()["error"] in ("access_denied", "authorization_pending")
        else:
            assert self._offers() == 0
            for _ in range(2):
                assert self.printer.announce().json["status"] != "linked"
            assert self.world.links() == []

    def _live_codes(self) -> int:
        from tsd_server.clock import utcnow
        from tsd_server.models import PairingCode

        return self._count(PairingCode, PairingCode.user_id == self.user_id,
                           PairingCode.used_at.is_(None), PairingCode.expires_at > utcnow())

    def _offers(self) -> int:
        from tsd_server.models.ip_match import Offer

        return self._count(Offer, Offer.user_id == self.user_id)

    def _count(self, model, *conditions) -> int:
        from sqlalchemy import func, select

        from tsd_server.extensions import db

        with self.app.app_context():
            return db.session.scalar(select(func.count()).select_from(model).where(*conditions))


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
    assert scene.refused(status, answer), (status, answer)
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
    assert not scene.refused(status, answer), (status, answer)  # it committed first
    owner.result()
    scene.assert_nothing_usable(answer)
