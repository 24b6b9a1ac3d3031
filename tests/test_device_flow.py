"""RFC 8628 device flow, the device's side: authorize, poll (every error code), the kill
switch, and the base URL the answers name."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.support import device_flow_fixtures
from tests.support.apps import flags_table_renamed
from tests.support.flags import flag_removed_by_hand, switched_off_by_hand
from tests.support.pairing import (
    CODE_FORMAT,
    LOOSE_LIMITS,
    audit_rows,
    authorize,
    decide,
    enter_code,
    me,
    poll,
    poll_error,
    shown_request,
    started,
    switch,
)
from tsd_server.discovery import flag_store

app_config = device_flow_fixtures.app_config
owner = device_flow_fixtures.owner


def test_authorize_answer_follows_rfc_8628_section_3_2(app, client):
    answer = started(client)
    assert set(answer) == {"device_code", "user_code", "verification_uri",
                           "verification_uri_complete", "expires_in", "interval"}
    assert CODE_FORMAT.fullmatch(answer["user_code"])
    assert answer["verification_uri"] == "http://localhost/link"
    assert answer["verification_uri_complete"].startswith("http://localhost/link/qr/")
    assert answer["expires_in"] == 900 and answer["interval"] == 5
    # >= 128 bits: 43 base64url characters carry 256.
    assert len(answer["device_code"].removeprefix("tsd_dc_")) >= 22
    assert len(answer["verification_uri_complete"].rsplit("/", 1)[1]) >= 22


def test_device_code_user_code_and_qr_token_are_stored_only_hashed(app, client):
    from tsd_server.extensions import db
    from tsd_server.models import DeviceAuthorization

    answer = started(client)
    qr_token = answer["verification_uri_complete"].rsplit("/", 1)[1]
    with app.app_context():
        row = db.session.scalars(select(DeviceAuthorization)).one()
        stored = " ".join(str(value) for value in vars(row).values())
    for secret in (answer["device_code"], answer["user_code"],
                   answer["user_code"].replace("-", ""), qr_token):
        assert secret not in stored


def test_polling_before_a_decision_is_authorization_pending(app, client, clock):
    answer = started(client)
    assert poll_error(poll(client, answer["device_code"])) == "authorization_pending"
    clock.advance(seconds=5)
    assert poll_error(poll(client, answer["device_code"])) == "authorization_pending"


def test_polling_too_fast_is_slow_down_and_the_interval_grows_by_five_and_stays(
        app, client, clock):
    from tsd_server.extensions import db
    from tsd_server.models import DeviceAuthorization

    code = started(client)["device_code"]
    assert poll_error(poll(client, code)) == "authorization_pending"
    clock.advance(seconds=2)
    fast = poll(client, code)
    assert poll_error(fast) == "slow_down" and fast.get_json()["interval"] == 10
    clock.advance(seconds=5)  # the old interval is no longer enough
    again = poll(client, code)
    assert poll_error(again) == "slow_down" and again.get_json()["interval"] == 15
    clock.advance(seconds=15)
    assert poll_error(poll(client, code)) == "authorization_pending"
    with app.app_context():
        assert db.session.scalars(select(DeviceAuthorization.poll_interval)).one() == 15


def test_an_approved_request_hands_out_its_token_to_a_poll_sooner_than_interval(
        app, client, owner, clock):
    """slow_down is for a request still waiting (RFC 8628 §3.5 lists it beside
    authorization_pending): once approved, the next poll gets the token, however soon."""
    _, session = owner
    answer = started(client)
    assert poll_error(poll(client, answer["device_code"])) == "authorization_pending"
    assert enter_code(session, answer["user_code"]).status_code == 302
    assert decide(session, "approve").status_code == 302
    clock.advance(seconds=1)
    token = poll(client, answer["device_code"])
    assert token.status_code == 200, token.get_json()
    assert me(client, token.get_json()["access_token"]).status_code == 200


def test_a_poll_that_read_the_row_before_another_poll_wrote_is_slow_down(
        app, client, clock, monkeypatch):
    """Polls sent together: only the first write lands as on time; one that read the row
    before it (so did not wait the interval) gets slow_down and a longer interval."""
    from tsd_server.discovery.pairing import device_flow
    from tsd_server.extensions import db
    from tsd_server.models import DeviceAuthorization

    code = started(client)["device_code"]
    clock.advance(seconds=30)
    with app.app_context():
        stale = device_flow.by_device_code(code)
    assert poll_error(poll(client, code)) == "authorization_pending"
    monkeypatch.setattr(device_flow, "by_device_code", lambda text: stale)
    late = poll(client, code)
    assert poll_error(late) == "slow_down" and late.get_json()["interval"] == 10
    with app.app_context():
        assert db.session.scalars(select(DeviceAuthorization.poll_interval)).one() == 10


def test_full_flow_typed_code_approve_then_token_exactly_once(app, client, owner, clock):
    uid, session = owner
    answer = started(client)
    page = enter_code(session, answer["user_code"].lower().replace("-", " "))
    assert page.status_code == 302 and page.headers["Location"].endswith("/link/confirm")
    confirm = session.get("/link/confirm")
    html = confirm.get_data(as_text=True)
    assert confirm.status_code == 200
    for expected in ("Voron in the garage", "2.4", "8.8.8.8", "in front of you",
                     "2026-06-01 12:00:00 UTC"):
        assert expected in html, expected
    # Typing the code alone links nothing.
    assert poll_error(poll(client, answer["device_code"])) == "authorization_pending"

    done = decide(session, "approve")
    assert done.status_code == 302
    clock.advance(seconds=5)
    token = poll(client, answer["device_code"])
    assert token.status_code == 200, token.get_json()
    body = token.get_json()
    assert body["token_type"] == "Bearer" and body["device"]["linked_via"] == "pairing_code"
    assert me(client, body["access_token"]).get_json()["owner"]["display_name"] == "Ada"

    clock.advance(seconds=5)
    assert poll_error(poll(client, answer["device_code"])) == "invalid_grant"
    # The link row has the printer's address (the request that linked it), like the other
    # ways of linking; the approver's is on the decision's row and in the link's detail.
    link = audit_rows(app, "link")[-1]
    assert (link.user_id, link.actor, link.strategy, link.client_ip, link.household) == (
        uid, f"user:{uid}", "pairing_code", "8.8.8.8", "8.8.8.8/32")
    assert "from 1.1.1.1" in link.detail
    decision = audit_rows(app, "device_flow_decision")[-1]
    assert (decision.outcome, decision.client_ip) == ("approved", "1.1.1.1")


def test_deny_gives_access_denied_and_no_device(app, client, owner, clock):
    _, session = owner
    answer = started(client)
    enter_code(session, answer["user_code"])
    assert decide(session, "deny").status_code == 302
    clock.advance(seconds=5)
    assert poll_error(poll(client, answer["device_code"])) == "access_denied"
    assert audit_rows(app, "link") == []


def test_expired_device_code_is_expired_token_and_its_user_code_is_gone(
        app, client, owner, clock):
    _, session = owner
    answer = started(client)
    clock.advance(seconds=901)
    assert poll_error(poll(client, answer["device_code"])) == "expired_token"
    assert enter_code(session, answer["user_code"]).status_code == 400


def test_approved_but_not_collected_in_time_is_expired_token(app, client, owner, clock):
    _, session = owner
    answer = started(client)
    enter_code(session, answer["user_code"])
    decide(session, "approve")
    clock.advance(seconds=901)
    assert poll_error(poll(client, answer["device_code"])) == "expired_token"


def test_approval_after_expiry_is_refused(app, client, owner, clock):
    _, session = owner
    answer = started(client)
    enter_code(session, answer["user_code"])
    shown = shown_request(session.get("/link/confirm").get_data(as_text=True))
    clock.advance(seconds=901)  # the page stays open past the request's expiry
    assert decide(session, "approve", shown=shown).status_code in (404, 409)
    assert poll_error(poll(client, answer["device_code"])) == "expired_token"


@pytest.mark.parametrize("device_code", ["tsd_dc_" + "A" * 43, "nonsense", "x" * 128])
def test_unknown_device_code_is_invalid_grant_and_audited(app, client, device_code):
    assert poll_error(poll(client, device_code)) == "invalid_grant"
    assert audit_rows(app, "device_code_invalid")[-1].client_ip == "8.8.8.8"


def test_wrong_device_codes_are_audited_once_a_minute_per_address(app, client):
    """Polls come as fast as the token limit allows (120 a minute per address): one audit
    row each would let anyone fill the audit log. One row a minute per address keeps the
    trace; another address gets its own."""
    wrong = "tsd_dc_" + "A" * 43
    for _ in range(10):
        assert poll_error(poll(client, wrong)) == "invalid_grant"
    assert poll_error(poll(client, wrong, ip="9.9.9.9")) == "invalid_grant"
    rows = audit_rows(app, "device_code_invalid")
    assert sorted(row.client_ip for row in rows) == ["8.8.8.8", "9.9.9.9"]


@pytest.mark.parametrize("body, message", [
    ({}, "'device_code' is required."),
    ({"device_code": None}, "'device_code' is required."),
    ({"device_code": ""}, "'device_code' must not be empty."),
    ({"device_code": 5}, "'device_code' must be a string."),
    ({"device_code": "tsd_dc_" + "A" * 200}, "'device_code' is longer than 128 characters."),
    ({"device_code": "tsd_dc_\x1b[2J"}, "'device_code' contains control characters."),
])
def test_a_malformed_device_code_is_invalid_request(app, client, body, message):
    """RFC 6749 §5.2 (which RFC 8628 §3.5 refers to): a missing or malformed parameter is
    ``invalid_request``, the code OAuth clients know; ``field`` still names it."""
    refused = client.post("/api/v1/device/token", json=body,
                          environ_base={"REMOTE_ADDR": "8.8.8.8"})
    assert refused.status_code == 400
    assert refused.get_json() == {"error": "invalid_request", "field": "device_code",
                                  "message": message, "error_description": message}


def test_every_token_error_carries_error_description(app, client, clock):
    """OAuth clients show ``error_description``: every error of the token request has it,
    the same text as ``message``, also those answered before the view runs (415, 429)."""
    path, env = "/api/v1/device/token", {"REMOTE_ADDR": "8.8.8.8"}
    answer = started(client)
    refusals = [
        poll(client, answer["device_code"]),                          # authorization_pending
        poll(client, answer["device_code"]),                          # slow_down
        poll(client, "tsd_dc_" + "A" * 43),                           # invalid_grant
        client.post(path, json={"grant_type": 5}, environ_base=env),  # invalid_request
        client.post(path, json={"device_code": answer["device_code"],
                                "grant_type": "password"}, environ_base=env),
        client.post(path, data="[", content_type="application/json", environ_base=env),
        client.post(path, data="device_code=x", environ_base=env,
                    content_type="application/x-www-form-urlencoded"),
    ]
    switch(app, "pairing_code", False)
    switch(app, "qr_code", False)
    refusals.append(poll(client, answer["device_code"]))
    app.config["DEVICE_FLOW_TOKEN_LIMIT"] = "1 per minute"
    poll(client, answer["device_code"], ip="9.9.9.9")
    refusals.append(poll(client, answer["device_code"], ip="9.9.9.9"))
    codes = []
    for refused in refusals:
        body = refused.get_json()
        assert body["error_description"] == body["message"], body
        codes.append((refused.status_code, body["error"]))
    assert codes == [
        (400, "authorization_pending"), (400, "slow_down"), (400, "invalid_grant"),
        (400, "invalid_request"), (400, "unsupported_grant_type"), (400, "invalid_json"),
        (415, "unsupported_media_type"), (503, "strategy_disabled"), (429, "rate_limited")]
    other_route = authorize(client, device_id="no spaces allowed")
    assert other_route.get_json()["error"] == "invalid_field"
    assert "error_description" not in other_route.get_json()


def test_token_request_body_errors(app, client):
    answer = started(client)
    path = "/api/v1/device/token"
    env = {"REMOTE_ADDR": "8.8.8.8"}
    missing = client.post(path, json={}, environ_base=env)
    assert missing.get_json()["error"] == "invalid_request"
    wrong = client.post(path, json={"device_code": answer["device_code"],
                                    "grant_type": "authorization_code"}, environ_base=env)
    assert wrong.status_code == 400 and wrong.get_json()["error"] == "unsupported_grant_type"
    right = client.post(path, json={"device_code": answer["device_code"],
                                    "grant_type": "urn:ietf:params:oauth:grant-type:device_code"},
                        environ_base=env)
    assert right.get_json()["error"] == "authorization_pending"


@pytest.mark.parametrize("body, error", [
    ({"name": "x"}, "missing_field"),
    ({"device_id": "printer-0001"}, "missing_field"),
    ({"device_id": "no spaces here", "name": "x"}, "invalid_field"),
    ({"device_id": "printer-0001", "name": "x" * 81}, "invalid_field"),
])
def test_authorize_body_errors(app, client, body, error):
    response = client.post("/api/v1/device/authorize", json=body,
                           environ_base={"REMOTE_ADDR": "8.8.8.8"})
    assert response.status_code == 400 and response.get_json()["error"] == error


def test_pairing_code_off_drops_user_code_and_typed_entry(app, client, owner):
    _, session = owner
    switch(app, "pairing_code", False)
    answer = started(client)
    assert "user_code" not in answer and "verification_uri_complete" in answer
    page = session.get("/link")
    assert page.status_code == 503 and "switched off" in page.get_data(as_text=True)


def test_both_off_is_503_strategy_disabled_for_authorize_and_token(app, client):
    answer = started(client)
    switch(app, "pairing_code", False)
    switch(app, "qr_code", False)
    refused = authorize(client)
    assert refused.status_code == 503 and refused.get_json()["error"] == "strategy_disabled"
    polled = poll(client, answer["device_code"])
    assert polled.status_code == 503 and polled.get_json()["error"] == "strategy_disabled"
    # An operator's decision: the printer is told so, and not to come back in a moment.
    for answered in (refused, polled):
        assert answered.get_json()["disabled_by"] == "runtime"
        assert "Retry-After" not in answered.headers


@pytest.mark.parametrize("app_config", [{}, {"DISCOVERY_DISABLED": "pairing_code"}],
                         ids=["both-on", "pairing-code-off-in-the-deployment"])
def test_both_off_because_the_switches_cannot_be_read_says_come_back(app, client):
    """The database out of reach: the printer waits it out (tsd_agent/pacing.py) instead of
    giving up its 15-minute wait for approval, and its poll is answered again later. Also
    where the deployment keeps pairing_code off: qr_code may be on again in a moment."""
    answer = started(client)
    with flags_table_renamed(app):
        with app.app_context():
            flag_store.forget_cached_flags()  # as if the cache's half second had passed
        refused = authorize(client)
        polled = poll(client, answer["device_code"])
        for answered in (refused, polled):
            assert answered.status_code == 503
            assert answered.get_json()["disabled_by"] == "flag_store_unreadable"
            assert answered.headers["Retry-After"] == "5"
    with app.app_context():
        flag_store.forget_cached_flags()
    assert poll_error(poll(client, answer["device_code"])) == "authorization_pending"


def test_approval_rechecks_the_kill_switch(app, client, owner):
    """Entered while on, approved after a switch-off: refused, nothing decided. The flag
    row is written by hand, so no withdrawal denies the request first and the approval's
    own fresh read is what refuses it (a switch-off's withdrawal: test_reached_requests)."""
    _, session = owner
    answer = started(client)
    enter_code(session, answer["user_code"])
    shown = shown_request(session.get("/link/confirm").get_data(as_text=True))
    switched_off_by_hand(app, "pairing_code", stale_cache=True)  # the page is open
    refused = decide(session, "approve", shown=shown)
    assert refused.status_code == 503
    flag_removed_by_hand(app, "pairing_code")
    assert poll_error(poll(client, answer["device_code"])) == "authorization_pending"
    assert audit_rows(app, "device_flow_decision")[-1].outcome == "strategy_disabled"


def test_token_issue_rechecks_the_kill_switch_and_works_after_switch_on(
        app, client, owner, clock):
    """The flag row written by hand: a switch-off that withdrew nothing still stops the
    token, and the approval works once the flag is gone."""
    _, session = owner
    answer = started(client)
    enter_code(session, answer["user_code"])
    decide(session, "approve")
    switched_off_by_hand(app, "pairing_code")
    clock.advance(seconds=5)
    refused = poll(client, answer["device_code"])
    assert refused.status_code == 503 and refused.get_json()["strategy"] == "pairing_code"
    flag_removed_by_hand(app, "pairing_code")
    clock.advance(seconds=5)
    assert poll(client, answer["device_code"]).status_code == 200


def test_an_approval_waiting_at_a_switch_off_is_withdrawn(app, client, owner, clock):
    """Switched off and on again, an approval made before does not link afterwards."""
    _, session = owner
    answer = started(client)
    enter_code(session, answer["user_code"])
    decide(session, "approve")
    switch(app, "pairing_code", False)
    switch(app, "pairing_code", True)
    clock.advance(seconds=5)
    assert poll(client, answer["device_code"]).get_json()["error"] == "access_denied"


def test_base_url_setting_is_used_for_links(app, client):
    app.config["BASE_URL"] = "https://print.example.org/"
    answer = started(client)
    assert answer["verification_uri"] == "https://print.example.org/link"
    assert answer["verification_uri_complete"].startswith("https://print.example.org/link/qr/")


def test_untrusted_forwarded_headers_make_the_base_unknown(app, client):
    response = authorize(client, environ_base={"REMOTE_ADDR": "8.8.8.8",
                                               "HTTP_X_FORWARDED_HOST": "evil.example"})
    assert response.status_code == 503
    assert response.get_json()["error"] == "base_url_unknown"
    assert "TSD_BASE_URL" in response.get_json()["message"]


class TestBehindAProxy:
    @pytest.fixture
    def app_config(self):
        return {**LOOSE_LIMITS, "TRUSTED_PROXIES": "127.0.0.1/32", "PROXY_FIX_X_FOR": 1,
                "PROXY_FIX_X_PROTO": 1, "PROXY_FIX_X_HOST": 1}

    def test_forwarded_host_from_a_trusted_proxy_with_x_host_is_used(self, app, client):
        response = authorize(client, environ_base={
            "REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "8.8.8.8",
            "HTTP_X_FORWARDED_HOST": "print.example.org", "HTTP_X_FORWARDED_PROTO": "https"})
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["verification_uri"] == "https://print.example.org/link"

    def test_trusted_proxy_without_forwarded_host_is_refused(self, app, client):
        response = authorize(client, environ_base={
            "REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "8.8.8.8"})
        assert response.status_code == 503
        assert response.get_json()["error"] == "base_url_unknown"


class TestBehindAProxyWithoutXHost:
    @pytest.fixture
    def app_config(self):
        return {**LOOSE_LIMITS, "TRUSTED_PROXIES": "127.0.0.1/32", "PROXY_FIX_X_FOR": 1}

    def test_forwarded_host_is_not_believed(self, app, client):
        response = authorize(client, environ_base={
            "REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "8.8.8.8",
            "HTTP_X_FORWARDED_HOST": "evil.example"})
        assert response.status_code == 503
        assert response.get_json()["error"] == "base_url_unknown"

    def test_base_url_setting_still_works(self, app, client):
        app.config["BASE_URL"] = "https://print.example.org"
        response = authorize(client, environ_base={
            "REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "8.8.8.8"})
        assert response.get_json()["verification_uri"] == "https://print.example.org/link"
