"""Web-issued pairing codes: issue, redeem once, the same answer for every kind of bad code."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from tests.support.flags import switched_off_by_hand
from tests.support.pairing import (
    CODE_FORMAT,
    LOOSE_LIMITS,
    audit_rows,
    issue_code,
    me,
    redeem,
    switch,
)
from tests.support.rows import count_rows


@pytest.fixture
def app_config():
    return dict(LOOSE_LIMITS)


@pytest.fixture
def user(make_user, login):
    uid, email, password = make_user()
    return uid, login(email, password, REMOTE_ADDR="1.1.1.1")


def test_code_is_eight_consonants_shown_with_a_dash_and_expires_in_ttl(app, user):
    _, session = user
    answer = issue_code(session)
    assert CODE_FORMAT.fullmatch(answer["code"]), answer
    assert answer["expires_in"] == 600


def test_code_is_stored_only_as_a_keyed_hash(app, user):
    from tsd_server.discovery.pairing import codes
    from tsd_server.extensions import db
    from tsd_server.models import PairingCode

    _, session = user
    code = issue_code(session)["code"]
    canonical = code.replace("-", "")
    with app.test_request_context():
        row = db.session.scalars(select(PairingCode)).one()
        assert canonical not in row.code_hash and code not in row.code_hash
        assert row.code_hash == codes.code_hash(canonical)
        # Keyed: a plain SHA-256 of the code (what an offline search would try) is not it.
        assert row.code_hash != hashlib.sha256(canonical.encode()).hexdigest()


def test_redeem_links_the_device_to_the_code_owner_and_gives_the_token_once(app, user, client):
    uid, session = user
    code = issue_code(session)["code"]
    response = redeem(client, code)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["token_type"] == "Bearer"
    assert body["device"]["id"] == "printer-0001"
    assert body["device"]["linked_via"] == "pairing_code"
    assert me(client, body["access_token"]).get_json()["device"]["name"] == "Prusa in the lab"
    links = audit_rows(app, "link")
    assert [(row.user_id, row.strategy, row.client_ip) for row in links] == [
        (uid, "pairing_code", "8.8.8.8")]

    again = redeem(client, code, device_id="printer-9999")
    assert again.status_code == 400
    assert again.get_json()["error"] == "invalid_code"


@pytest.mark.parametrize("typed", [
    "{lower}", "{plain}", " {first} - {second} ", "{first} {second}", "{first}\u2013{second}",
    "{first}--{second}", "{lower_first}-{second}",
])
def test_typed_codes_are_normalised(app, user, client, typed):
    _, session = user
    code = issue_code(session)["code"]
    first, second = code.split("-")
    text = typed.format(lower=code.lower(), plain=first + second, first=first, second=second,
                        lower_first=first.lower())
    response = redeem(client, text)
    assert response.status_code == 201, (text, response.get_json())


def test_unknown_used_expired_and_malformed_codes_get_one_identical_answer(
        app, user, client, clock):
    _, session = user
    used = issue_code(session)["code"]
    assert redeem(client, used).status_code == 201
    expired = issue_code(session)["code"]
    clock.advance(seconds=601)
    answers = {
        "used": redeem(client, used, device_id="printer-0002"),
        "expired": redeem(client, expired, device_id="printer-0003"),
        "unknown": redeem(client, "BBBB-BBBB", device_id="printer-0004"),
        "malformed": redeem(client, "AEIO-U123", device_id="printer-0005"),
        "too long": redeem(client, "BCDF-GHJK-L", device_id="printer-0006"),
    }
    bodies = {name: (r.status_code, r.get_json()) for name, r in answers.items()}
    assert len({repr(body) for body in bodies.values()}) == 1, bodies
    status, body = bodies["used"]
    assert status == 400 and body["error"] == "invalid_code"
    failures = audit_rows(app, "code_invalid")
    assert len(failures) == 5
    assert {row.strategy for row in failures} == {"pairing_code"}
    assert {row.client_ip for row in failures} == {"8.8.8.8"}


AUDIT_FIELDS = ("event", "actor", "outcome", "user_id", "device_id", "device_uid", "strategy",
                "client_ip", "peer_ip", "forwarded_for", "household", "detail")


def test_an_invalid_code_is_audited_with_the_fields_audit_record_writes(app, client):
    """The refusal's row is written on its own now; it must say what the session's did."""
    from tsd_server import audit
    from tsd_server.models import AuditEvent

    assert redeem(client, "BBBB-BBBB", device_id="printer-0004").status_code == 400
    [written] = audit_rows(app, "code_invalid")
    with app.test_request_context(environ_base={"REMOTE_ADDR": "8.8.8.8"}):
        expected: AuditEvent = audit.record(
            "code_invalid", actor="device", outcome="refused", device_uid="printer-0004",
            strategy="pairing_code", detail="redeem")
    assert [getattr(written, f) for f in AUDIT_FIELDS] == \
        [getattr(expected, f) for f in AUDIT_FIELDS]
    assert written.client_ip == "8.8.8.8" and written.device_uid == "printer-0004"


def test_code_still_works_just_before_expiry(app, user, client, clock):
    _, session = user
    code = issue_code(session)["code"]
    clock.advance(seconds=599)
    assert redeem(client, code).status_code == 201


def test_ttl_setting_is_honoured(app, user, client, clock):
    app.config["PAIRING_CODE_TTL"] = 60
    _, session = user
    answer = issue_code(session)
    assert answer["expires_in"] == 60
    clock.advance(seconds=61)
    assert redeem(client, answer["code"]).get_json()["error"] == "invalid_code"


def test_codes_are_unique_among_live_codes(app, user):
    _, session = user
    seen = {issue_code(session)["code"] for _ in range(40)}
    assert len(seen) == 40


def test_code_generation_uses_only_the_alphabet_and_all_of_it(app):
    from tsd_server.discovery.pairing import codes

    drawn = "".join(codes.new_code() for _ in range(400))
    assert set(drawn) == set(codes.ALPHABET)


def test_issuing_needs_login_and_csrf(app, user, client):
    from tests.conftest import CSRF_META

    token = CSRF_META.search(client.get("/login").get_data(as_text=True)).group(1)
    anonymous = client.post("/api/v1/pairing/codes", headers={"X-CSRFToken": token})
    assert anonymous.status_code == 401 and anonymous.get_json()["error"] == "login_required"
    _, session = user
    no_csrf = session.client.post("/api/v1/pairing/codes", environ_base=session.environ_base)
    assert no_csrf.status_code == 400 and no_csrf.get_json()["error"] == "csrf_failed"


@pytest.mark.parametrize("body, error", [
    ({"device_id": "printer-0001", "name": "x"}, "missing_field"),
    ({"code": 12345678, "device_id": "printer-0001", "name": "x"}, "invalid_field"),
    ({"code": "BCDF-GHJK", "name": "x"}, "missing_field"),
    ({"code": "BCDF-GHJK", "device_id": "bad id!", "name": "x"}, "invalid_field"),
    ({"code": "BCDF-GHJK", "device_id": "printer-0001"}, "missing_field"),
    ({"code": "B" * 40, "device_id": "printer-0001", "name": "x"}, "invalid_field"),
])
def test_bad_redeem_bodies_are_clear_json_errors(app, client, body, error):
    response = client.post("/api/v1/pairing/redeem", json=body,
                           environ_base={"REMOTE_ADDR": "8.8.8.8"})
    assert response.status_code == 400
    assert response.get_json()["error"] == error


def test_redeem_without_a_json_body_is_invalid_json(app, client):
    response = client.post("/api/v1/pairing/redeem", data="code=BCDFGHJK",
                           content_type="application/json",
                           environ_base={"REMOTE_ADDR": "8.8.8.8"})
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_json"


def test_redeem_with_a_body_that_is_not_declared_json_is_unsupported(app, client):
    response = client.post("/api/v1/pairing/redeem", data="code=BCDFGHJK",
                           environ_base={"REMOTE_ADDR": "8.8.8.8"})
    assert response.status_code == 415
    assert response.get_json()["error"] == "unsupported_media_type"


def test_redeem_is_a_device_call_without_csrf_and_the_code_decides_the_owner(
        app, user, make_user, login):
    """No CSRF token needed; another user's session cookie does not make the device theirs."""
    owner_id, session = user
    code = issue_code(session)["code"]
    _, other_email, other_password = make_user()
    other = login(other_email, other_password)
    response = other.client.post("/api/v1/pairing/redeem", json={
        "code": code, "device_id": "printer-0007", "name": "n"},
        environ_base={"REMOTE_ADDR": "8.8.8.8"})
    assert response.status_code == 201, response.get_json()
    assert audit_rows(app, "link")[0].user_id == owner_id


def test_switching_pairing_code_off_refuses_issue_and_redeem(app, user, client):
    """The switch-off also withdraws the code issued before it: it does not link after the
    switch-on either (tests/test_pending_links.py); a code issued afterwards works."""
    _, session = user
    code = issue_code(session)["code"]
    switch(app, "pairing_code", False)
    for response in (session.post("/api/v1/pairing/codes"), redeem(client, code)):
        assert response.status_code == 503
        assert response.get_json()["error"] == "strategy_disabled"
    switch(app, "pairing_code", True)
    assert redeem(client, code).get_json()["error"] == "invalid_code"
    assert redeem(client, issue_code(session)["code"]).status_code == 201


def test_no_code_is_issued_after_a_switch_off_that_the_cache_has_not_seen(app, user):
    """The switch-off withdrew the waiting codes; one issued by a process still trusting its
    cached "on" would outlive that withdrawal."""
    from tsd_server.models import PairingCode

    _, session = user
    switched_off_by_hand(app, "pairing_code", stale_cache=True)
    refused = session.post("/api/v1/pairing/codes")
    assert refused.status_code == 503 and refused.get_json()["error"] == "strategy_disabled"
    assert count_rows(app, PairingCode) == 0


def test_a_code_issued_before_a_switch_off_cannot_link_during_it(app, user, client):
    """The link service re-reads the switch: the code stays unused and works afterwards."""
    _, session = user
    code = issue_code(session)["code"]
    switched_off_by_hand(app, "pairing_code", stale_cache=True)  # the route guard: "on"
    response = redeem(client, code)
    assert response.status_code == 503 and response.get_json()["error"] == "strategy_disabled"
    assert audit_rows(app, "link_failed")[0].outcome == "strategy_disabled"
    app.config["KILL_SWITCH_CACHE_SECONDS"] = 0.5
    switch(app, "pairing_code", True)
    assert redeem(client, code).status_code == 201
