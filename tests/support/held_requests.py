"""A request held at one point in a thread of its own, while a test runs something that
races it (an ending of the session, a switch-off), and the thief's actions such a request
can be: what they prepare, and how to tell afterwards that nothing of it can be used."""

from __future__ import annotations

import threading
import time

import pytest

from tests.support.pairing import decide, enter_code, poll, redeem, started

THIEF = "thief-request"


class Hold:
    """Stops one thread (by name, THIEF unless told) the first time it passes a wrapped call,
    after the call (or before it, with ``before=True``), until released. Use it through the
    ``hold`` fixture, which releases it when the test ends, passed or failed, so a held
    request never keeps its locks into the next test."""

    def __init__(self, thread: str = THIEF) -> None:
        self.thread = thread
        self.reached = threading.Event()
        self.release = threading.Event()

    def wrap(self, real, *, only=lambda *args, **kwargs: True, before: bool = False):
        def stop_here(*args, **kwargs) -> None:
            if (threading.current_thread().name == self.thread and only(*args, **kwargs)
                    and not self.reached.is_set()):
                self.reached.set()
                assert self.release.wait(30), "the test never released the request"

        def held(*args, **kwargs):
            if before:
                stop_here(*args, **kwargs)
            result = real(*args, **kwargs)
            if not before:
                stop_here(*args, **kwargs)
            return result

        return held


@pytest.fixture
def hold():
    """``hold(thread=THIEF)`` makes a Hold; every one is released at the end of the test."""
    made: list[Hold] = []

    def make(thread: str = THIEF) -> Hold:
        made.append(Hold(thread))
        return made[-1]

    yield make
    for each in made:
        each.release.set()


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

    def result(self, seconds: float = 30):
        """The call's return value, or its exception; a failure if it has not finished
        within ``seconds`` (it is left behind in its daemon thread)."""
        self.join(seconds)
        assert not self.is_alive(), f"{self.name} did not finish within {seconds} s"
        if self.error is not None:
            raise self.error
        return self.value


def request_across_after_its_switch_read(monkeypatch, held: Hold, scene: Scene,
                                         meanwhile) -> tuple[int, object]:
    """Run ``scene``'s request, held where every preparing action reads the kill switch
    fresh (after its session check, before its first write), run ``meanwhile`` there, then
    let it go on: its (status, answer)."""
    from tsd_server.discovery import kill_switch

    monkeypatch.setattr(kill_switch, "state", held.wrap(
        kill_switch.state, only=lambda *args, **kwargs: kwargs.get("fresh", False)))
    thief = Running(THIEF, scene.request)
    thief.start()
    assert held.reached.wait(30)
    meanwhile()
    held.release.set()
    return thief.result()


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

    def refused_as_logged_out(self, status: int, answer) -> bool:
        if self.action == "approval":  # a web form: back to the login page
            return status == 302 and "/login" in answer
        return status == 401 and answer["error"] == "login_required"

    def refused_as_switched_off(self, status: int, answer) -> bool:
        if self.action == "approval":  # a web form: the "switched off" page
            return status == 503
        return status == 503 and answer["error"] == "strategy_disabled"

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
    """``scene_for(action)``: a Scene in this test's app (``world`` is ip_match's)."""
    return lambda action: Scene(action, app, client, clock, make_user, login, world)
