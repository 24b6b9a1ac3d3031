"""Abuse by devices: polling too fast, holding database connections, and squatting on
another device's device_id (docs/security.md, "device_id squatting")."""

from __future__ import annotations

import io
import json

import pytest
from sqlalchemy import func, select

from tests.support.ip_match_world import DIRECT, InProcessEndpoint, World, layout_direct
from tests.support.pairing import LOOSE_LIMITS, authorize, decide, issue_code, poll, redeem

HOME, ELSEWHERE = "127.0.0.2", "127.0.0.3"
VICTIM_ID = "tsd-6f1c0b52-7e0a-4d43-9b53-2b8f8c9d4e11"


@pytest.fixture
def app_config():
    return {**LOOSE_LIMITS, **DIRECT}


def error_of(response) -> str:
    return response.get_json()["error"]


# --- polling too fast ---------------------------------------------------------------------

def test_a_polling_burst_gets_slow_down_and_a_growing_interval(app, client, clock, make_user,
                                                               login):
    started = authorize(client).get_json()
    code, interval = started["device_code"], started["interval"]
    assert error_of(poll(client, code)) == "authorization_pending"
    intervals = []
    for _ in range(30):  # all at the same instant
        answer = poll(client, code)
        assert error_of(answer) == "slow_down"
        intervals.append(answer.get_json()["interval"])
    assert intervals == [interval + 5 * n for n in range(1, 31)]
    clock.advance(seconds=intervals[-1] - 2)  # one second short of the tolerance
    assert error_of(poll(client, code)) == "slow_down"
    # A device that waits the interval it was told is served normally, and gets its token.
    clock.advance(seconds=intervals[-1] + 5)
    assert error_of(poll(client, code)) == "authorization_pending"
    _, email, password = make_user()
    person = login(email, password)
    person.form_post("/link", {"code": started["user_code"]})
    assert decide(person, "approve").status_code == 302
    assert poll(client, code).status_code == 200


class ProbingInput(io.BytesIO):
    """A request body that notes how many pooled connections are out while it is read, as a
    slow client's body would be read bit by bit."""

    def __init__(self, data: bytes, engine) -> None:
        super().__init__(data)
        self.engine = engine
        self.checked_out: list[int] = []

    def read(self, size: int | None = -1) -> bytes:
        self.checked_out.append(self.engine.pool.checkedout())
        return super().read(1 if size is None or size < 0 else min(size, 1))

    def readinto(self, buffer) -> int:
        self.checked_out.append(self.engine.pool.checkedout())
        return super().readinto(memoryview(buffer)[:1])


@pytest.mark.parametrize("path, body", [
    ("/api/v1/device/token", {"device_code": "tsd_dc_" + "A" * 43}),
    ("/api/v1/discovery/announce", {"device_id": VICTIM_ID, "device_secret": "s" * 43,
                                    "name": "Slow printer"}),
    ("/api/v1/pairing/redeem", {"code": "BCDF-GHJK", "device_id": VICTIM_ID, "name": "Slow"}),
    ("/api/v1/device/authorize", {"device_id": VICTIM_ID, "name": "Slow printer"}),
])
def test_a_slow_device_holds_no_database_connection(app, client, path, body):
    """The body is read before the database is touched, and every connection is back in
    the pool when the answer is sent: a device trickling its body (or never finishing)
    ties up at most a worker, never one of the pool's connections."""
    from tsd_server.extensions import db

    with app.app_context():
        engine = db.engine
    raw = json.dumps(body).encode()
    for _ in range(3):
        stream = ProbingInput(raw, engine)
        response = client.post(path, input_stream=stream, content_type="application/json",
                               content_length=len(raw),
                               environ_base={"REMOTE_ADDR": HOME})
        assert response.status_code < 500
        assert len(stream.checked_out) >= len(raw) // 2  # it was read bit by bit
        assert set(stream.checked_out) == {0}
        assert engine.pool.checkedout() == 0


# --- device_id squatting ------------------------------------------------------------------

def me(client, token: str):
    return client.get("/api/v1/device/me", headers={"Authorization": f"Bearer {token}"})


def test_linking_another_devices_id_by_code_links_only_into_ones_own_account(
        app, client, make_user, login, link_device):
    victim_id, _, _ = make_user(display_name="Victim")
    _, victim_token = link_device(victim_id, device_uid=VICTIM_ID, name="Victim's printer")
    _, attacker_email, password = make_user(display_name="Attacker")
    attacker = login(attacker_email, password)

    by_code = redeem(client, issue_code(attacker)["code"], device_id=VICTIM_ID,
                     name="Victim's printer")
    assert by_code.status_code == 201
    started = authorize(client, device_id=VICTIM_ID, name="Victim's printer").get_json()
    attacker.form_post("/link", {"code": started["user_code"]})
    decide(attacker, "approve")
    by_flow = poll(client, started["device_code"])
    assert by_flow.status_code == 200

    attackers = me(client, by_flow.get_json()["access_token"]).get_json()
    assert attackers["owner"]["display_name"] == "Attacker"
    # The second link re-linked the attacker's own record in place (its first token ended);
    # the victim's device, same id, other account, was never touched.
    assert me(client, by_code.get_json()["access_token"]).status_code == 401
    victims = me(client, victim_token)
    assert victims.status_code == 200
    assert victims.get_json()["owner"]["display_name"] == "Victim"
    assert victims.get_json()["device"]["name"] == "Victim's printer"


@pytest.fixture
def world(app, clock):
    return World(app, lambda home: InProcessEndpoint(app, home, layout_direct))


def test_announcing_a_live_devices_id_cannot_take_it(app, world):
    """The first announce binds the id to its device_secret: a squatter with the id but not
    the secret is refused, from anywhere, and never sees the code or the token."""
    printer, person = world.printer(HOME), world.person(HOME)
    assert printer.announce().status == 200
    squatters = [world.printer(HOME), world.printer(ELSEWHERE)]
    for squatter in squatters:
        squatter.device_id = printer.device_id
        refused = squatter.announce()
        assert refused.status == 409 and refused.json["error"] == "device_id_taken"

    offer = person.link(printer.device_id).json
    code = printer.announce().json["confirmation"]["code"]
    for squatter in squatters:
        assert squatter.announce().status == 409
    assert person.confirm(offer["offer_id"], code).status == 200
    for squatter in squatters:
        reply = squatter.announce()
        assert reply.status == 409 and "access_token" not in reply.json
    assert printer.announce().json["status"] == "linked"
    assert world.links() == [(person.user_id, printer.device_id)]
    assert len(world.audit_events("ip_match_announce")) >= 1
    mismatches = [event for event in world.audit_events("ip_match_announce")
                  if event.outcome == "secret_mismatch"]
    # On record once a minute per address: the attempt is traced, and nobody can fill
    # the audit log by announcing a known id at the announce limit's pace.
    assert sorted(event.client_ip for event in mismatches) == sorted([HOME, ELSEWHERE])


def test_a_squatted_id_blocks_only_ip_match_and_only_while_the_squatter_announces(
        app, client, world, clock, make_user, login):
    """The residual bound: someone who knows a silent device's id and announces it first
    holds it for ip_match until they stop; the device still links by code or QR."""
    squatter = world.printer(ELSEWHERE)
    squatter.device_id = VICTIM_ID
    assert squatter.announce().status == 200
    device = world.printer(HOME)
    device.device_id = VICTIM_ID
    assert device.announce().status == 409

    _, email, password = make_user()
    owner = login(email, password)
    linked = redeem(client, issue_code(owner)["code"], device_id=VICTIM_ID, name="Mine")
    assert linked.status_code == 201

    clock.advance(seconds=app.config["IP_MATCH_ANNOUNCE_TTL"]  # the squatter stopped
                  + app.config["IP_MATCH_LAST_SEEN_WRITE_INTERVAL"] + 1)
    assert device.announce().status == 200
    assert squatter.announce().status == 409


def test_refused_squatting_attempts_leave_no_rows_behind(app, world):
    from tsd_server.extensions import db
    from tsd_server.models.ip_match import Announcement

    printer = world.printer(HOME)
    printer.announce()
    squatter = world.printer(ELSEWHERE)
    squatter.device_id = printer.device_id
    for _ in range(5):
        squatter.announce()
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Announcement)) == 1
        db.session.remove()
