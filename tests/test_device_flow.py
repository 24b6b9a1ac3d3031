"""RFC 8628 device flow: authorize, poll (every error code), /link, approve or deny."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.support.flags import flag_removed_by_hand, switched_off_by_hand
from tests.support.pairing import (
    CODE_FORMAT,
    FRESH_SCAN,
    LOOSE_LIMITS,
    audit_rows,
    authorize,
    decide,
    enter_code,
    me,
    poll,
    shown_request,
    started,
    switch,
)


@pytest.fixture
def app_config():
    return dict(LOOSE_LIMITS)


@pytest.fixture
def owner(make_user, login):
    uid, email, password = make_user(display_name="Ada")
    return uid, login(email, password, REMOTE_ADDR="1.1.1.1")


def error_of(response) -> str:
    assert response.status_code == 400, (response.status_code, response.get_json())
    return response.get_json()["error"]


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
    assert error_of(poll(client, answer["device_code"])) == "authorization_pending"
    clock.advance(seconds=5)
    assert error_of(poll(client, answer["device_code"])) == "authorization_pending"


def test_polling_too_fast_is_slow_down_and_the_interval_grows_by_five_and_stays(
        app, client, clock):
    from tsd_server.extensions import db
    from tsd_server.models import DeviceAuthorization

    code = started(client)["device_code"]
    assert error_of(poll(client, code)) == "authorization_pending"
    clock.advance(seconds=2)
    fast = poll(client, code)
    assert error_of(fast) == "slow_down" and fast.get_json()["interval"] == 10
    clock.advance(seconds=5)  # the old interval is no longer enough
    again = poll(client, code)
    assert error_of(again) == "slow_down" and again.get_json()["interval"] == 15
    clock.advance(seconds=15)
    assert error_of(poll(client, code)) == "authorization_pending"
    with app.app_context():
        assert db.session.scalars(select(DeviceAuthorization.poll_interval)).one() == 15


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
    assert error_of(poll(client, code)) == "authorization_pending"
    monkeypatch.setattr(device_flow, "by_device_code", lambda text: stale)
    late = poll(client, code)
    assert error_of(late) == "slow_down" and late.get_json()["interval"] == 10
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
    assert error_of(poll(client, answer["device_code"])) == "authorization_pending"

    done = decide(session, "approve")
    assert done.status_code == 302
    clock.advance(seconds=5)
    token = poll(client, answer["device_code"])
    assert token.status_code == 200, token.get_json()
    body = token.get_json()
    assert body["token_type"] == "Bearer" and body["device"]["linked_via"] == "pairing_code"
    assert me(client, body["access_token"]).get_json()["owner"]["display_name"] == "Ada"

    clock.advance(seconds=5)
    assert error_of(poll(client, answer["device_code"])) == "invalid_grant"
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
    assert error_of(poll(client, answer["device_code"])) == "access_denied"
    assert audit_rows(app, "link") == []


def test_expired_device_code_is_expired_token_and_its_user_code_is_gone(
        app, client, owner, clock):
    _, session = owner
    answer = started(client)
    clock.advance(seconds=901)
    assert error_of(poll(client, answer["device_code"])) == "expired_token"
    assert enter_code(session, answer["user_code"]).status_code == 400


def test_approved_but_not_collected_in_time_is_expired_token(app, client, owner, clock):
    _, session = owner
    answer = started(client)
    enter_code(session, answer["user_code"])
    decide(session, "approve")
    clock.advance(seconds=901)
    assert error_of(poll(client, answer["device_code"])) == "expired_token"


def test_approval_after_expiry_is_refused(app, client, owner, clock):
    _, session = owner
    answer = started(client)
    enter_code(session, answer["user_code"])
    shown = shown_request(session.get("/link/confirm").get_data(as_text=True))
    clock.advance(seconds=901)  # the page stays open past the request's expiry
    assert decide(session, "approve", shown=shown).status_code in (404, 409)
    assert error_of(poll(client, answer["device_code"])) == "expired_token"


@pytest.mark.parametrize("device_code", ["tsd_dc_" + "A" * 43, "nonsense", "x" * 128])
def test_unknown_device_code_is_invalid_grant_and_audited(app, client, device_code):
    assert error_of(poll(client, device_code)) == "invalid_grant"
    assert audit_rows(app, "device_code_invalid")[-1].client_ip == "8.8.8.8"


def test_wrong_device_codes_are_audited_once_a_minute_per_address(app, client):
    """Polls come as fast as the token limit allows (120 a minute per address): one audit
    row each would let anyone fill the audit log. One row a minute per address keeps the
    trace; another address gets its own."""
    wrong = "tsd_dc_" + "A" * 43
    for _ in range(10):
        assert error_of(poll(client, wrong)) == "invalid_grant"
    assert error_of(poll(client, wrong, ip="9.9.9.9")) == "invalid_grant"
    rows = audit_rows(app, "device_code_invalid")
    assert sorted(row.client_ip for row in rows) == ["8.8.8.8", "9.9.9.9"]


def test_token_request_body_errors(app, client):
    answer = started(client)
    path = "/api/v1/device/token"
    env = {"REMOTE_ADDR": "8.8.8.8"}
    missing = client.post(path, json={}, environ_base=env)
    assert missing.get_json()["error"] == "missing_field"
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


def test_link_page_needs_login_and_comes_back_to_link(app, client, make_user):
    response = client.get("/link")
    assert response.status_code == 302
    assert "/login?next=/link" in response.headers["Location"]
    _, email, password = make_user()
    from tests.conftest import CSRF_META

    token = CSRF_META.search(client.get("/login").get_data(as_text=True)).group(1)
    back = client.post("/login?next=/link", data={"email": email, "password": password,
                                                  "csrf_token": token})
    assert back.status_code == 302 and back.headers["Location"] == "/link"


def test_link_page_warns_to_approve_only_a_printer_in_front_of_you(app, owner):
    _, session = owner
    html = session.get("/link").get_data(as_text=True)
    assert "in front of you" in html


def test_approval_page_says_which_of_my_printers_a_same_id_device_replaces(
        app, client, owner, link_device, clock):
    # A device asking under the id of one of my printers would take that printer's place
    # (its access stops): the page must say so before I approve.
    uid, session = owner
    link_device(uid, device_uid="printer-0002", name="Prusa in the study")
    answer = started(client, device_id="printer-0002")
    enter_code(session, answer["user_code"])
    html = session.get("/link/confirm").get_data(as_text=True)
    assert 'id="replaces-notice"' in html and "Prusa in the study" in html

    other = started(client, device_id="printer-0003")
    enter_code(session, other["user_code"])
    assert 'id="replaces-notice"' not in session.get("/link/confirm").get_data(as_text=True)


def test_wrong_code_on_link_is_a_form_error_and_audited(app, owner):
    uid, session = owner
    response = enter_code(session, "BBBB-BBBB")
    assert response.status_code == 400
    assert "No printer is waiting with this code" in response.get_data(as_text=True)
    failure = audit_rows(app, "code_invalid")[-1]
    assert (failure.user_id, failure.strategy, failure.detail) == (uid, "pairing_code", "link")


def test_link_code_entry_needs_csrf(app, owner, client):
    _, session = owner
    answer = started(client)
    response = session.client.post("/link", data={"code": answer["user_code"]},
                                   environ_base=session.environ_base)
    assert response.status_code == 400
    assert session.get("/link/confirm").status_code == 404


def test_decision_needs_csrf_and_a_valid_choice(app, client, owner):
    _, session = owner
    answer = started(client)
    enter_code(session, answer["user_code"])
    forged = session.client.post("/link/confirm", data={"decision": "approve"},
                                 environ_base=session.environ_base)
    assert forged.status_code == 400
    assert decide(session, "maybe").status_code == 400
    assert error_of(poll(client, answer["device_code"])) == "authorization_pending"


def test_an_answer_given_on_a_page_about_another_request_decides_nothing(app, client, owner,
                                                                        clock):
    """Cross-site swap: Ada is on the approval page of her own printer when another site
    navigates her browser to the attacker's QR link (a top-level GET carries her cookie).
    Her Approve, pressed on the page she still sees, must not approve the attacker's
    device, nor, since the page no longer matches the session, her own."""
    _, session = owner
    mine = started(client, device_id="ada-printer", name="My Prusa")
    theirs = started(client, device_id="attacker-dev1", name="My Prusa", ip="9.9.9.9")
    assert enter_code(session, mine["user_code"]).status_code == 302
    page = session.get("/link/confirm").get_data(as_text=True)
    assert "My Prusa" in page
    # Past the question another site's open gets first (as by a click-game): a scan's header.
    swapped = session.get(theirs["verification_uri_complete"].replace("http://localhost", ""),
                          headers=FRESH_SCAN)
    assert swapped.status_code == 200
    answered = session.form_post("/link/confirm", {"decision": "approve",
                                                   "authorization": shown_request(page)})
    assert answered.status_code == 409
    assert "Nothing was decided" in answered.get_data(as_text=True)
    assert error_of(poll(client, theirs["device_code"], ip="9.9.9.9")) == "authorization_pending"
    assert error_of(poll(client, mine["device_code"])) == "authorization_pending"
    assert session.get("/link/confirm").status_code == 404  # the swapped-in one is unbound
    row = audit_rows(app, "device_flow_decision")[-1]
    assert (row.outcome, row.strategy) == ("page_changed", "qr_code")
    # An answer naming no request, or one that is not a number, decides nothing either.
    assert enter_code(session, mine["user_code"]).status_code == 302
    shown_id, shown_tag = shown_request(page).split(".")
    for shown in ("", "x", shown_id, f"{int(shown_id) + 1}.{shown_tag}",
                  f"{shown_id}.{'0' * len(shown_tag)}"):
        refused = session.form_post("/link/confirm", {"decision": "approve",
                                                      "authorization": shown})
        assert refused.status_code in (400, 409), shown
        assert enter_code(session, mine["user_code"]).status_code == 302
    assert decide(session, "approve").status_code == 302  # the page's own answer works
    clock.advance(seconds=10)
    assert poll(client, mine["device_code"]).status_code == 200


def test_a_binding_does_not_pass_to_a_new_request_that_reuses_its_id(app, client, owner,
                                                                      clock):
    """An approval page left open for days: its request expired and was purged, and a
    stranger's new request got the same id (as SQLite gave ids out before migration
    0008). Pressing Approve on the old page, or reopening it, must not reach the
    stranger's request."""
    from sqlalchemy import update

    from tsd_server.discovery.pairing import device_flow
    from tsd_server.extensions import db
    from tsd_server.models import DeviceAuthorization

    _, session = owner
    mine = started(client, device_id="ada-printer")
    assert enter_code(session, mine["user_code"]).status_code == 302
    shown = shown_request(session.get("/link/confirm").get_data(as_text=True))
    old_id = int(shown.split(".")[0])
    clock.advance(days=2)
    with app.app_context():
        device_flow.purge(clock.now)
        db.session.commit()
        assert db.session.get(DeviceAuthorization, old_id) is None
    theirs = started(client, device_id="stranger-dev", ip="9.9.9.9")
    with app.app_context():  # ids are not reused any more (migration 0008): given by hand
        db.session.execute(update(DeviceAuthorization)
                           .where(DeviceAuthorization.device_uid == "stranger-dev")
                           .values(id=old_id))
        db.session.commit()
    assert session.get("/link/confirm").status_code == 404
    stale = decide(session, "approve", shown=shown)
    assert stale.status_code == 409 and "Too late" in stale.get_data(as_text=True)
    # The same, with the stranger's QR link opened in this browser meanwhile: the binding
    # now names the same id, but not the request the old page showed.
    assert session.get(theirs["verification_uri_complete"].replace(
        "http://localhost", ""), headers=FRESH_SCAN).status_code == 200
    swapped = decide(session, "approve", shown=shown)
    assert swapped.status_code == 409 and "Nothing was decided" in swapped.get_data(as_text=True)
    clock.advance(seconds=10)
    assert error_of(poll(client, theirs["device_code"], ip="9.9.9.9")) == \
        "authorization_pending"


def test_decision_without_entering_a_code_approves_nothing(app, client, owner):
    _, session = owner
    started(client)
    assert decide(session, "approve").status_code == 404


def test_two_browsers_of_one_account_first_decision_wins(app, client, owner, login, clock):
    """Two browsers of one account (another account is refused at the code, see
    tests/test_device_flow_binding.py): the first answer decides, the other is too late."""
    from tsd_server.extensions import db
    from tsd_server.models import User

    uid, first = owner
    with app.app_context():
        email = db.session.get(User, uid).email
    second = login(email, REMOTE_ADDR="9.9.9.9")
    answer = started(client)
    enter_code(first, answer["user_code"])
    enter_code(second, answer["user_code"])
    first_page = shown_request(first.get("/link/confirm").get_data(as_text=True))
    assert decide(second, "deny").status_code == 302
    too_late = decide(first, "approve", shown=first_page)
    assert too_late.status_code == 409 and "Too late" in too_late.get_data(as_text=True)
    clock.advance(seconds=5)
    assert error_of(poll(client, answer["device_code"])) == "access_denied"


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


def test_approval_rechecks_the_kill_switch(app, client, owner):
    """Entered while on, approved after a switch-off: refused, nothing decided."""
    _, session = owner
    answer = started(client)
    enter_code(session, answer["user_code"])
    shown = shown_request(session.get("/link/confirm").get_data(as_text=True))
    switch(app, "pairing_code", False)  # while the approval page is open
    refused = decide(session, "approve", shown=shown)
    assert refused.status_code == 503
    switch(app, "pairing_code", True)
    assert error_of(poll(client, answer["device_code"])) == "authorization_pending"
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
