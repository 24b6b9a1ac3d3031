"""GET /api/v1/client-address says whether ip_match would work, not just whether the address
could stand for a household: the kill switch, the anomaly breaker's household block and the
device cap decide too (DESIGN.md: ``strategy_disabled``, ``household_blocked``,
``household_limit``). Asking never counts towards the breaker."""

from __future__ import annotations

import secrets

import pytest

from tests.support.ip_match_fixtures import UNLIMITED
from tests.support.pairing import switch
from tests.support.rows import count_rows

HOME, OTHER_HOME = "8.8.8.8", "1.1.1.1"


@pytest.fixture
def app_config(request):
    return {**UNLIMITED, **getattr(request, "param", {})}


def ask(client, ip: str = HOME, **environ) -> dict:
    response = client.get("/api/v1/client-address", environ_base={"REMOTE_ADDR": ip,
                                                                   **environ})
    assert response.status_code == 200
    return response.get_json()


def test_eligible_when_nothing_stands_in_the_way(client):
    assert ask(client) == {"client_ip": HOME, "peer_ip": HOME, "forwarded_for": [],
                           "household": f"{HOME}/32",
                           "ip_match": {"eligible": True, "reason": None}}


@pytest.mark.parametrize("target", ["ip_match", "all"])
def test_strategy_disabled_while_the_kill_switch_is_off(app, client, target):
    switch(app, target, False)
    seen = ask(client)
    assert seen["ip_match"] == {"eligible": False, "reason": "strategy_disabled"}
    # The rest of the record is unchanged: still what the server sees.
    assert (seen["client_ip"], seen["household"]) == (HOME, f"{HOME}/32")
    announce = client.post("/api/v1/discovery/announce", environ_base={"REMOTE_ADDR": HOME},
                           json={"device_id": "printer-0001", "device_secret": "a" * 22,
                                 "name": "x"})
    assert announce.status_code == 503 and announce.get_json()["error"] == "strategy_disabled"
    switch(app, target, True)
    assert ask(client)["ip_match"] == {"eligible": True, "reason": None}


@pytest.mark.parametrize("app_config", [{"DISCOVERY_DISABLED": "ip_match"}], indirect=True)
def test_strategy_disabled_by_the_deployment_settings(client):
    assert ask(client)["ip_match"] == {"eligible": False, "reason": "strategy_disabled"}


def test_household_blocked_while_the_breaker_holds_the_household(app, client, make_user,
                                                                  login):
    for _ in range(4):  # one account more than IP_MATCH_MAX_ACCOUNTS_PER_HOUSEHOLD
        _, email, password = make_user()
        last = login(email, password, REMOTE_ADDR=HOME).get("/api/v1/discovery/nearby")
    assert last.get_json()["reason"] == "household_blocked"
    assert ask(client)["ip_match"] == {"eligible": False, "reason": "household_blocked"}
    assert ask(client, OTHER_HOME)["ip_match"] == {"eligible": True, "reason": None}


def test_household_limit_while_too_many_devices_announce(client):
    for number in range(4):  # one more than IP_MATCH_MAX_DEVICES_PER_HOUSEHOLD
        reply = client.post("/api/v1/discovery/announce", environ_base={"REMOTE_ADDR": HOME},
                            json={"device_id": f"printer-{number:04d}",
                                  "device_secret": secrets.token_urlsafe(16), "name": "x"})
        assert reply.status_code == 200
    assert ask(client)["ip_match"] == {"eligible": False, "reason": "household_limit"}
    assert ask(client, OTHER_HOME)["ip_match"] == {"eligible": True, "reason": None}


def test_an_address_reason_is_still_given_when_ip_match_is_on(client):
    assert ask(client, "192.168.1.20")["ip_match"] == {"eligible": False,
                                                       "reason": "non_public_address"}
    forged = ask(client, HOME, HTTP_X_FORWARDED_FOR=OTHER_HOME)
    assert forged["ip_match"] == {"eligible": False, "reason": "untrusted_forwarded_header"}


def test_asking_never_counts_towards_the_breaker(app, make_user, login):
    from tsd_server.models import AuditEvent
    from tsd_server.models.ip_match import HouseholdAccount, HouseholdBlock

    sessions = [login(email, password, REMOTE_ADDR=HOME)
                for _, email, password in (make_user() for _ in range(5))]
    audited = count_rows(app, AuditEvent)
    for session in sessions:  # more logged-in accounts asking than the breaker allows
        for _ in range(2):
            seen = session.get("/api/v1/client-address").get_json()
            assert seen["ip_match"] == {"eligible": True, "reason": None}
    assert count_rows(app, HouseholdAccount) == 0
    assert count_rows(app, HouseholdBlock) == 0
    assert count_rows(app, AuditEvent) == audited
