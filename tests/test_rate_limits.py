"""Rate limits on code guessing (per address and route, per account), the global failure
breaker, and Redis storage shared by separate server processes."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.support.pairing import (
    LOOSE_LIMITS,
    audit_rows,
    authorize,
    enter_code,
    issue_code,
    redeem,
)
from tests.support.skips import skip_loudly

WRONG = "BBBB-BBBB"


def limited(response) -> None:
    assert response.status_code == 429, (response.status_code, response.get_data(as_text=True))
    retry_after = int(response.headers["Retry-After"])
    assert 0 < retry_after <= 15 * 60


class TestDefaultGuessLimits:
    """The shipped defaults (2 per 15 minutes), as docs/security.md computes with."""

    def test_third_redemption_from_one_address_is_429_with_retry_after(self, app, client):
        assert redeem(client, WRONG).status_code == 400
        assert redeem(client, WRONG).status_code == 400
        third = redeem(client, WRONG)
        limited(third)
        assert third.get_json()["error"] == "rate_limited"
        # Refused before the code is looked at: two failures audited, and the refusal.
        assert len(audit_rows(app, "code_invalid")) == 2
        refusal = audit_rows(app, "rate_limited")[-1]
        assert (refusal.strategy, refusal.client_ip) == ("pairing_code", "8.8.8.8")

    def test_the_budget_counts_attempts_so_even_a_right_code_waits(
            self, app, client, make_user, login):
        _, email, password = make_user()
        code = issue_code(login(email, password, REMOTE_ADDR="1.1.1.1"))["code"]
        redeem(client, WRONG)
        redeem(client, WRONG)
        limited(redeem(client, code))

    def test_other_addresses_have_their_own_budget(self, app, client):
        redeem(client, WRONG, ip="8.8.8.8")
        redeem(client, WRONG, ip="8.8.8.8")
        assert redeem(client, WRONG, ip="9.9.9.9").status_code == 400

    def test_ipv6_addresses_of_one_64_share_a_budget(self, app, client):
        redeem(client, WRONG, ip="2001:4860:4860::8888")
        redeem(client, WRONG, ip="2001:4860:4860::1")
        limited(redeem(client, WRONG, ip="2001:4860:4860:0:ffff::2"))
        assert redeem(client, WRONG, ip="2001:4860:4861::1").status_code == 400

    def test_redeem_and_link_have_a_budget_each_per_address(self, app, client, make_user,
                                                           login):
        # A household's printer redeeming web codes does not use up the budget its owner
        # needs at /link (the routes guess disjoint sets of codes; docs/security.md).
        _, email, password = make_user()
        session = login(email, password, REMOTE_ADDR="8.8.8.8")
        redeem(client, WRONG, ip="8.8.8.8")
        redeem(client, WRONG, ip="8.8.8.8")
        limited(redeem(client, WRONG, ip="8.8.8.8"))
        assert enter_code(session, WRONG).status_code == 400
        assert enter_code(session, WRONG).status_code == 400
        page = enter_code(session, WRONG)
        limited(page)
        html = page.get_data(as_text=True)
        assert "Too many codes were tried" in html and "<form" in html

    def test_link_is_limited_per_account_across_addresses(self, app, make_user, login):
        _, email, password = make_user()
        at_home = login(email, password, REMOTE_ADDR="1.1.1.1")
        assert enter_code(at_home, WRONG).status_code == 400
        assert enter_code(at_home, WRONG).status_code == 400
        elsewhere = login(email, password, REMOTE_ADDR="9.9.9.9")
        limited(enter_code(elsewhere, WRONG))
        # Someone else at the first address is limited by the address budget.
        _, other_email, other_password = make_user()
        neighbour = login(other_email, other_password, REMOTE_ADDR="1.1.1.1")
        limited(enter_code(neighbour, WRONG))

    def test_viewing_the_link_form_costs_nothing(self, app, make_user, login):
        _, email, password = make_user()
        session = login(email, password, REMOTE_ADDR="1.1.1.1")
        for _ in range(5):
            assert session.get("/link").status_code == 200
        assert enter_code(session, WRONG).status_code == 400

    def test_a_submission_that_cannot_be_a_code_costs_no_try(self, app, make_user, login):
        """Empty, half-typed or with a letter outside the alphabet: a form error before any
        lookup, not a guess, so it spends nothing of the two tries (nor of the failure
        breaker's count); a well-formed wrong code still does."""
        _, email, password = make_user()
        session = login(email, password, REMOTE_ADDR="1.1.1.1")
        for typed in ("", "WDJB", "WDJB-MJH", "WDJB-MJHA", "12345678", "WDJB-MJHT-X"):
            page = enter_code(session, typed)
            assert page.status_code == 400, typed
            html = page.get_data(as_text=True)
            assert "8 letters" in html or "Type the code" in html, typed
        # The exemption reads the form: a code sent any other way (JSON, which Flask-WTF
        # would read too) must be refused before it is looked up (request_guard: 415).
        assert session.post("/link", json={"code": WRONG}).status_code == 415
        assert enter_code(session, WRONG).status_code == 400
        assert enter_code(session, WRONG).status_code == 400
        limited(enter_code(session, WRONG))
        assert len(audit_rows(app, "code_invalid")) == 2  # the two looked up, no more

    def test_refusals_are_audited_at_most_once_a_minute_per_key(self, app, client):
        for _ in range(6):
            redeem(client, WRONG)
        assert len(audit_rows(app, "rate_limited")) == 1


@pytest.mark.parametrize("app_config", [{"PAIRING_CODE_CREATE_LIMIT": "2 per 10 minutes"}])
def test_pairing_codes_are_limited_per_account_and_per_address(app, make_user, login):
    """Per account whatever the address; per address whatever the account (accounts are
    cheap: each code is a row and an audit row)."""
    def create(session, address: str):
        return session.post("/api/v1/pairing/codes", environ_base={"REMOTE_ADDR": address})

    _, email, password = make_user()
    person = login(email, password, REMOTE_ADDR="1.1.1.1")
    assert create(person, "1.1.1.1").status_code == 201
    assert create(person, "9.9.9.9").status_code == 201
    limited(create(person, "9.9.9.8"))
    others = [login(*make_user()[1:], REMOTE_ADDR="8.8.8.8") for _ in range(3)]
    assert [create(other, "8.8.8.8").status_code for other in others[:2]] == [201, 201]
    limited(create(others[2], "8.8.8.8"))


@pytest.mark.parametrize("app_config", [{"IPV6_HOUSEHOLD_PREFIX": 128},
                                        {"IPV6_HOUSEHOLD_PREFIX": 48}])
def test_limits_key_ipv6_by_its_64_whatever_the_household_prefix(app, client):
    """TSD_IPV6_HOUSEHOLD_PREFIX is about ip_match's households. Were the limits keyed by it,
    /128 would give one host a budget per address (2^64 of them) and /48 would put a
    neighbour's /64 on the same budget."""
    for host in ("::1", "::2"):
        assert redeem(client, WRONG, ip="2001:4860:4860" + host).status_code == 400
    limited(redeem(client, WRONG, ip="2001:4860:4860::3"))
    assert redeem(client, WRONG, ip="2001:4860:4860:1::1").status_code == 400  # next /64


@pytest.mark.parametrize("app_config", [{"DEVICE_FLOW_AUTHORIZE_LIMIT": "2 per 10 minutes",
                                         "DEVICE_FLOW_AUTHORIZE_LIMIT_PER_NETWORK":
                                         "5 per 10 minutes"}])
def test_device_authorizations_are_limited_per_64_and_per_48(app, client):
    """Anyone may ask, and each answer is a row kept a day past its expiry: a /48's 65,536
    /64s, each with a budget of its own, made 94 million a day possible (a review measured
    3,000 from 300 /64s where 300 were refused). Another /48 keeps its budget."""
    answers = [authorize(client, device_id=f"printer-{n:04d}",
                         ip=f"2001:db8:1:{n // 2:x}::1").status_code for n in range(6)]
    assert answers == [200] * 5 + [429]
    limited(authorize(client, device_id="printer-0100", ip="2001:db8:1:ff::1"))  # fresh /64
    assert authorize(client, device_id="printer-0101", ip="2001:db8:2::1").status_code == 200
    limited(authorize(client, device_id="printer-0102", ip="2001:db8:1:3::1"))


def test_an_answer_under_the_limit_asks_the_storage_once(app, client, monkeypatch):
    """One trip to the limit storage per limit: the hit. The window figures are read only to
    refuse (for Retry-After); reading them on every answer doubled the storage round trips
    of every rate-limited hot path."""
    from tsd_server.extensions import limiter

    storage = limiter.limiter.storage
    calls: list[str] = []
    for name in ("acquire_entry", "get_moving_window"):
        original = getattr(storage, name)
        monkeypatch.setattr(storage, name, lambda *a, _o=original, _n=name, **k: (
            calls.append(_n), _o(*a, **k))[1])
    answer = redeem(client, WRONG)
    assert answer.status_code == 400
    assert "X-RateLimit-Remaining" not in answer.headers
    assert calls == ["acquire_entry"]
    redeem(client, WRONG)
    calls.clear()
    refused = redeem(client, WRONG)
    limited(refused)
    assert "get_moving_window" in calls


class TestFailureBreaker:
    @pytest.fixture
    def app_config(self):
        return {**LOOSE_LIMITS, "PAIRING_FAILURE_BREAKER_PER_MINUTE": 3}

    def test_more_invalid_codes_per_minute_than_the_setting_switch_pairing_code_off(
            self, app, client, make_user, login):
        from tsd_server.discovery import kill_switch

        _, email, password = make_user()
        session = login(email, password, REMOTE_ADDR="1.1.1.1")
        for ip in ("8.8.8.8", "9.9.9.9"):
            assert redeem(client, WRONG, ip=ip).status_code == 400
        assert enter_code(session, WRONG).status_code == 400  # /link failures count too
        with app.test_request_context():
            assert kill_switch.is_enabled("pairing_code", fresh=True)
        assert redeem(client, WRONG, ip="1.0.0.1").status_code == 400  # the fourth
        with app.test_request_context():
            state = kill_switch.state("pairing_code", fresh=True)
            assert not state.enabled and state.changed_by == "auto"
            assert kill_switch.is_enabled("qr_code", fresh=True)
        trip = audit_rows(app, "breaker_trip")
        assert len(trip) == 1 and trip[0].actor == "auto" and "4 invalid codes" in trip[0].detail
        toggle = audit_rows(app, "flag_toggle")[-1]
        assert (toggle.actor, toggle.strategy, toggle.outcome) == (
            "auto", "pairing_code", "disabled")
        refused = redeem(client, WRONG, ip="1.0.0.2")
        assert refused.status_code == 503 and refused.get_json()["error"] == "strategy_disabled"
        # The device flow still works through QR, without a user code.
        answer = authorize(client).get_json()
        assert "user_code" not in answer and "verification_uri_complete" in answer

    def test_failures_spread_over_more_than_a_minute_do_not_trip(self, app, client, clock):
        from tsd_server.discovery import kill_switch

        for _ in range(3):
            for ip in ("8.8.8.8", "9.9.9.9", "1.0.0.1"):
                assert redeem(client, WRONG, ip=ip).status_code == 400
            clock.advance(seconds=61)
        with app.test_request_context():
            assert kill_switch.is_enabled("pairing_code", fresh=True)
        assert audit_rows(app, "breaker_trip") == []

    def test_switching_on_forgives_the_wave_before_it(self, app, client, clock):
        """An admin who switches pairing_code on within the minute after a trip must not
        see the next wrong code trip it again on the failures that tripped it."""
        from tsd_server.discovery import kill_switch

        for ip in ("8.8.8.8", "9.9.9.9", "1.0.0.1", "1.0.0.2"):
            redeem(client, WRONG, ip=ip)
        clock.advance(seconds=10)
        with app.test_request_context():
            assert not kill_switch.is_enabled("pairing_code", fresh=True)
            kill_switch.set_flag("pairing_code", enabled=True, reason="looked into",
                                 actor="cli")
        clock.advance(seconds=10)
        for ip in ("1.0.0.3", "1.0.0.4", "1.0.0.5"):  # three: not more than the setting
            assert redeem(client, WRONG, ip=ip).status_code == 400
        with app.test_request_context():
            assert kill_switch.is_enabled("pairing_code", fresh=True)
        assert redeem(client, WRONG, ip="1.0.0.6").status_code == 400  # a new wave trips
        with app.test_request_context():
            assert not kill_switch.is_enabled("pairing_code", fresh=True)
        assert len(audit_rows(app, "breaker_trip")) == 2


    def test_two_requests_tripping_it_at_once_trip_it_once(self, app, client, monkeypatch):
        """Both counted the wave and read pairing_code on; the one that switches it off
        second finds it off, holding the switches' lock, and writes nothing: one trip and
        one switch-off in the audit log, not two of each (seen under concurrency)."""
        from tests.support.held_requests import Hold, Running
        from tsd_server import audit
        from tsd_server.discovery import kill_switch
        from tsd_server.discovery.pairing import failure_breaker

        for ip in ("8.8.8.8", "9.9.9.9", "1.0.0.1"):  # three: not more than the setting
            assert redeem(client, WRONG, ip=ip).status_code == 400
        with app.test_request_context():  # the fourth, counted but not yet checked
            audit.record_now("code_invalid", actor="device", outcome="refused",
                             strategy="pairing_code", detail="redeem")
        held = Hold("first")
        monkeypatch.setattr(kill_switch, "set_flag", held.wrap(kill_switch.set_flag,
                                                               before=True))

        def check() -> bool:
            with app.test_request_context():
                return failure_breaker.check()

        first = Running("first", check)
        first.start()
        assert held.reached.wait(30)  # it counted four and read pairing_code on
        try:
            assert check()  # the second trips it
        finally:
            held.release.set()
        assert first.result() is False
        assert len(audit_rows(app, "breaker_trip")) == 1
        assert [row.outcome for row in audit_rows(app, "flag_toggle")] == ["disabled"]


class TestBreakerOff:
    @pytest.fixture
    def app_config(self):
        return {**LOOSE_LIMITS, "PAIRING_FAILURE_BREAKER_PER_MINUTE": 0}

    def test_zero_means_no_breaker(self, app, client):
        for _ in range(5):
            assert redeem(client, WRONG).status_code == 400
        assert audit_rows(app, "breaker_trip") == []


# --- Redis: the limit is shared by separate server processes -------------------------------

REDIS_URL = "redis://127.0.0.1:6379/0"
ATTEMPTS = """
import json, sys
from tsd_server import create_app
app = create_app({"TESTING": True, "SECRET_KEY": "redis-test-key-" + "x" * 32,
                  "DATABASE_URL": sys.argv[1], "RATELIMIT_STORAGE_URI": sys.argv[2],
                  "RATELIMIT_KEY_PREFIX": sys.argv[3]})
client = app.test_client()
statuses = [client.post("/api/v1/pairing/redeem",
                        json={"code": "BBBB-BBBB", "device_id": "printer-0001", "name": "x"},
                        environ_base={"REMOTE_ADDR": "8.8.8.8"}).status_code
            for _ in range(int(sys.argv[4]))]
print(json.dumps(statuses))
"""


def server_process(app, storage: str, prefix: str, attempts: int, tmp_path) -> list[int]:
    """One more server process (its own interpreter, app and limiter) making attempts."""
    env = {**os.environ, "TSD_INSTANCE_PATH": str(tmp_path / f"instance-{secrets.token_hex(3)}"),
           "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", ATTEMPTS, app.config["DATABASE_URL"], storage, prefix,
         str(attempts)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def redis_prefix():
    import redis

    connection = redis.Redis.from_url(REDIS_URL)
    try:
        connection.ping()
    except redis.ConnectionError:
        skip_loudly("Redis is NOT reachable at 127.0.0.1:6379: the shared-storage rate-limit "
                    "tests are SKIPPED")
    prefix = f"tsd-test-{secrets.token_hex(6)}"
    yield prefix, connection
    for key in connection.scan_iter(f"*{prefix}*"):
        connection.delete(key)
    connection.close()


def test_redis_storage_is_shared_by_two_server_processes(app, redis_prefix, tmp_path):
    prefix, connection = redis_prefix
    assert server_process(app, REDIS_URL, prefix, 2, tmp_path) == [400, 400]
    assert any(True for _ in connection.scan_iter(f"*{prefix}*")), "no limit keys in Redis"
    assert server_process(app, REDIS_URL, prefix, 1, tmp_path) == [429]


def test_memory_storage_is_per_process(app, tmp_path):
    """The control: without Redis the second process knows nothing of the first."""
    prefix = f"tsd-test-{secrets.token_hex(6)}"
    assert server_process(app, "memory://", prefix, 2, tmp_path) == [400, 400]
    assert server_process(app, "memory://", prefix, 1, tmp_path) == [400]
