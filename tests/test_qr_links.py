"""QR links (qr_code): single-use, lead to the approval page, images drawn by segno."""

from __future__ import annotations

import pytest

from tests.support.flags import switched_off_by_hand
from tests.support.pairing import (
    FRESH_SCAN,
    LOOSE_LIMITS,
    audit_rows,
    decide,
    enter_code,
    me,
    poll,
    qr_path,
    question_link,
    shown_request,
    started,
    switch,
)

QR_IMAGE = "/api/v1/device/authorize/qr"


@pytest.fixture
def app_config():
    return dict(LOOSE_LIMITS)


@pytest.fixture
def owner(make_user, login):
    uid, email, password = make_user(display_name="Grace")
    return uid, login(email, password, REMOTE_ADDR="2606:4700:4700::1111")



def test_opening_the_link_shows_the_approval_page_with_the_printer_code(app, client, owner):
    _, session = owner
    answer = started(client)
    page = session.get(qr_path(answer), headers=FRESH_SCAN)
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "Voron in the garage" in html and "in front of you" in html
    # The user code, so the person can compare it with the printer's screen (RFC 8628 3.3.1).
    assert answer["user_code"] in html


def test_scanning_alone_approves_nothing(app, client, owner, clock):
    _, session = owner
    answer = started(client)
    session.get(qr_path(answer), headers=FRESH_SCAN)
    clock.advance(seconds=5)
    assert poll(client, answer["device_code"]).get_json()["error"] == "authorization_pending"


def test_approve_via_qr_links_with_strategy_qr_code(app, client, owner, clock):
    uid, session = owner
    answer = started(client)
    session.get(qr_path(answer), headers=FRESH_SCAN)
    assert decide(session, "approve").status_code == 302
    clock.advance(seconds=5)
    token = poll(client, answer["device_code"])
    assert token.status_code == 200, token.get_json()
    assert token.get_json()["device"]["linked_via"] == "qr_code"
    assert me(client, token.get_json()["access_token"]).status_code == 200
    link = audit_rows(app, "link")[-1]
    assert (link.user_id, link.strategy, link.client_ip) == (uid, "qr_code", "8.8.8.8")
    assert "from 2606:4700:4700::1111" in link.detail  # the approver's, the phone's


def test_a_used_qr_link_is_refused_on_replay(app, client, owner, make_user, login):
    """Opened again by another browser, even the same account's, a QR link is refused; in
    the browser that opened it, while the request waits, it is the same approval page again
    (a phone reloads the tab), until the person answers."""
    uid, session = owner
    answer = started(client)
    assert session.get(qr_path(answer), headers=FRESH_SCAN).status_code == 200
    reloaded = session.get(qr_path(answer), headers=FRESH_SCAN)
    assert reloaded.status_code == 200 and answer["user_code"] in reloaded.get_data(as_text=True)
    _, email, password = make_user()
    stranger = login(email, password, REMOTE_ADDR="9.9.9.9")
    assert stranger.get(qr_path(answer), headers=FRESH_SCAN).status_code == 400
    # The stranger's replay bound nothing: deciding approves nothing.
    assert decide(stranger, "approve").status_code == 404
    from tsd_server.extensions import db
    from tsd_server.models import User

    with app.app_context():
        own_email = db.session.get(User, uid).email
    own_other_browser = login(own_email, REMOTE_ADDR="9.9.9.9")
    refused = own_other_browser.get(qr_path(answer), headers=FRESH_SCAN)
    assert refused.status_code == 400 and "opens once" in refused.get_data(as_text=True)
    assert decide(own_other_browser, "approve").status_code == 404
    assert len(audit_rows(app, "qr_link_invalid")) == 2  # the reload is no refusal
    assert decide(session, "deny").status_code == 302
    assert session.get(qr_path(answer), headers=FRESH_SCAN).status_code == 400  # answered


def test_the_scanning_browser_reloads_its_qr_page_after_typing_the_code(app, client, owner,
                                                                       login):
    """Typing the printer's code after scanning (the code is on the same screen) leaves the
    scanned tab reloadable in that browser, as docs/pairing.md promises; a browser of the
    same account that only typed the code never opened the link, and is refused it."""
    uid, session = owner
    answer = started(client)
    assert session.get(qr_path(answer), headers=FRESH_SCAN).status_code == 200
    assert enter_code(session, answer["user_code"]).status_code == 302
    reloaded = session.get(qr_path(answer), headers=FRESH_SCAN)
    assert reloaded.status_code == 200, reloaded.get_data(as_text=True)
    assert answer["user_code"] in reloaded.get_data(as_text=True)
    from tsd_server.extensions import db
    from tsd_server.models import User

    with app.app_context():
        own_email = db.session.get(User, uid).email
    typed_only = login(own_email, REMOTE_ADDR="9.9.9.9")
    assert enter_code(typed_only, answer["user_code"]).status_code == 302
    refused = typed_only.get(qr_path(answer), headers=FRESH_SCAN)
    assert refused.status_code == 400 and "opens once" in refused.get_data(as_text=True)
    # Another printer's code typed in the scanning browser: its QR page is not this one's.
    other = started(client, device_id="printer-two")
    assert enter_code(session, other["user_code"]).status_code == 302
    assert session.get(qr_path(answer), headers=FRESH_SCAN).status_code == 400
    assert decide(session, "approve").status_code == 302  # the page bound last: printer-two


def test_unknown_and_malformed_qr_tokens_are_refused(app, owner):
    _, session = owner
    assert session.get("/link/qr/" + "A" * 43, headers=FRESH_SCAN).status_code == 400
    assert session.get("/link/qr/short", headers=FRESH_SCAN).status_code == 400


def test_expired_qr_link_is_refused(app, client, owner, clock):
    _, session = owner
    answer = started(client)
    clock.advance(seconds=901)
    assert session.get(qr_path(answer), headers=FRESH_SCAN).status_code == 400


def test_qr_link_needs_login_then_returns_to_it(app, client):
    answer = started(client)
    response = client.get(qr_path(answer), headers=FRESH_SCAN)
    assert response.status_code == 302
    assert "/login?next=" in response.headers["Location"]
    # Not spent by the anonymous visit.
    from tsd_server.extensions import db
    from tsd_server.models import DeviceAuthorization

    with app.app_context():
        assert db.session.query(DeviceAuthorization).one().qr_opened_at is None


def test_qr_code_off_drops_verification_uri_complete_and_refuses_the_link(
        app, client, owner):
    _, session = owner
    answer = started(client)
    switch(app, "qr_code", False)
    off = started(client)
    assert "verification_uri_complete" not in off and "user_code" in off
    page = session.get(qr_path(answer), headers=FRESH_SCAN)
    assert page.status_code == 503
    image = client.get(QR_IMAGE, headers={"X-Device-Code": answer["device_code"]})
    assert image.status_code == 503 and image.get_json()["error"] == "strategy_disabled"


def test_approval_via_qr_rechecks_the_qr_switch(app, client, owner):
    """The flag written by hand: nothing withdrawn, the approval's own read refuses it (a
    switch-off's withdrawal denies the request too: test_reached_requests)."""
    _, session = owner
    answer = started(client)
    # The approval page:
    page = session.get(qr_path(answer), headers=FRESH_SCAN).get_data(as_text=True)
    switched_off_by_hand(app, "qr_code", stale_cache=True)  # while it is open
    assert decide(session, "approve", shown=shown_request(page)).status_code == 503
    assert poll(client, answer["device_code"]).get_json()["error"] == "authorization_pending"


def test_device_gets_its_qr_as_svg_and_png(app, client):
    from tsd_server.discovery.pairing import qr

    answer = started(client)
    headers = {"X-Device-Code": answer["device_code"]}
    svg = client.get(QR_IMAGE, headers=headers)
    assert svg.status_code == 200 and svg.mimetype == "image/svg+xml"
    assert svg.data.startswith(b"<svg")
    # The image encodes exactly verification_uri_complete (segno is deterministic).
    assert svg.data == qr.render(answer["verification_uri_complete"], "svg")
    png = client.get(QR_IMAGE + "?format=png&scale=3", headers=headers)
    assert png.status_code == 200 and png.mimetype == "image/png"
    assert png.data == qr.render(answer["verification_uri_complete"], "png", scale=3)
    assert png.headers["Cache-Control"] == "no-store"


def test_qr_image_refuses_a_device_code_in_the_url(app, client):
    answer = started(client)
    response = client.get(QR_IMAGE + "?device_code=" + answer["device_code"])
    assert response.status_code == 400
    assert response.get_json()["error"] == "device_code_in_url"


@pytest.mark.parametrize("headers, query, status, error", [
    ({}, "", 400, "missing_device_code"),
    ({"X-Device-Code": "tsd_dc_" + "B" * 43}, "", 400, "invalid_grant"),
    ({"X-Device-Code": "VALID"}, "?format=gif", 400, "invalid_field"),
    ({"X-Device-Code": "VALID"}, "?scale=0", 400, "invalid_field"),
    ({"X-Device-Code": "VALID"}, "?scale=x", 400, "invalid_field"),
])
def test_qr_image_errors(app, client, headers, query, status, error):
    answer = started(client)
    if headers.get("X-Device-Code") == "VALID":
        headers = {"X-Device-Code": answer["device_code"]}
    response = client.get(QR_IMAGE + query, headers=headers)
    assert response.status_code == status and response.get_json()["error"] == error


def test_qr_image_of_an_opened_or_expired_link_is_refused(app, client, owner, clock):
    _, session = owner
    answer = started(client)
    session.get(qr_path(answer), headers=FRESH_SCAN)
    opened = client.get(QR_IMAGE, headers={"X-Device-Code": answer["device_code"]})
    assert opened.status_code == 409 and opened.get_json()["error"] == "qr_link_used"
    other = started(client)
    clock.advance(seconds=901)
    expired = client.get(QR_IMAGE, headers={"X-Device-Code": other["device_code"]})
    assert expired.get_json()["error"] == "expired_token"


def test_qr_image_of_a_request_made_while_qr_was_off(app, client):
    switch(app, "qr_code", False)
    answer = started(client)
    switch(app, "qr_code", True)
    response = client.get(QR_IMAGE, headers={"X-Device-Code": answer["device_code"]})
    assert response.status_code == 409 and response.get_json()["error"] == "qr_unavailable"


def test_qr_image_without_a_trustworthy_base_is_refused(app, client):
    answer = started(client)
    response = client.get(QR_IMAGE, headers={"X-Device-Code": answer["device_code"],
                                             "X-Forwarded-Host": "evil.example"})
    assert response.status_code == 503 and response.get_json()["error"] == "base_url_unknown"


def test_web_code_page_shows_the_code_as_a_qr_image(app, owner):
    _, session = owner
    page = session.form_post("/printers/add/code", {})
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert 'src="data:image/svg+xml' in html


def test_derived_tokens_are_independent_of_each_other(app):
    """The QR token and user code come from the device code one-way, never the reverse."""
    from tsd_server.discovery.pairing import codes

    device_code = codes.new_device_code()
    qr_token = codes.qr_token_for(device_code)
    assert codes.QR_TOKEN_PATTERN.fullmatch(qr_token)
    assert qr_token not in device_code and device_code.removeprefix("tsd_dc_") != qr_token
    user_code = codes.user_code_for(qr_token)
    assert len(user_code) == 8 and set(user_code) <= set(codes.ALPHABET)
    assert codes.qr_token_for(codes.new_device_code()) != qr_token


@pytest.mark.parametrize("source", ["cross-site", "same-site", "something-new"])
def test_a_qr_link_opened_by_another_site_asks_first_and_spends_nothing(
        app, client, owner, clock, source):
    """Double-clickjacking: another site navigates the logged-in person to a stranger's QR
    link, and a second click lands on Approve. The browser says who started the navigation;
    only the person (``none``) or this site (``same-origin``) get the approval page at once,
    anyone else a question first."""
    uid, session = owner
    answer = started(client, device_id="stranger-printer-1")
    page = session.get(qr_path(answer), headers={"Sec-Fetch-Site": source,
                                                 "Sec-Fetch-Mode": "navigate"})
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "Did you just scan" in html
    assert "opened from another website or app" in html
    assert 'value="approve"' not in html and f'href="{qr_path(answer)}?answer=' in html
    # Nothing bound: Approve has nothing to approve, the printer is still waiting.
    assert decide(session, "approve").status_code == 404
    clock.advance(seconds=5)
    assert poll(client, answer["device_code"]).get_json()["error"] == "authorization_pending"
    [row] = audit_rows(app, "qr_link_cross_site")
    assert (row.user_id, row.device_uid, row.outcome, row.strategy) == (
        uid, "stranger-printer-1", "held", "qr_code")
    assert row.detail == f"Sec-Fetch-Site: {source if source != 'something-new' else 'unknown'}"
    # Not spent: the page's own link (same-origin) leads to the approval page.
    followed = session.get(qr_path(answer), headers={"Sec-Fetch-Site": "same-origin"})
    assert followed.status_code == 200 and 'value="approve"' in followed.get_data(as_text=True)


def test_the_login_redirect_does_not_wash_another_sites_open(app, client):
    """Asked before the login redirect: coming back from the login form, the browser would
    report the same link as same-origin."""
    answer = started(client, device_id="stranger-printer-2")
    page = client.get(qr_path(answer), headers={"Sec-Fetch-Site": "cross-site"})
    assert page.status_code == 200 and "Did you just scan" in page.get_data(as_text=True)
    [row] = audit_rows(app, "qr_link_cross_site")
    assert (row.actor, row.user_id, row.device_uid) == ("anonymous", None, "stranger-printer-2")


def test_opens_by_other_sites_are_audited_once_a_minute_per_address(app, client, owner, clock):
    _, session = owner
    answer = started(client)
    for _ in range(5):
        page = session.get(qr_path(answer), headers={"Sec-Fetch-Site": "cross-site"})
        assert "Did you just scan" in page.get_data(as_text=True)
    assert len(audit_rows(app, "qr_link_cross_site")) == 1


@pytest.mark.parametrize("source", ["none", "same-origin", "None "])
def test_a_qr_link_opened_by_the_person_or_this_site_works(app, client, owner, source):
    """Scanned or typed (``none``), or after the login redirect (``same-origin``)."""
    _, session = owner
    page = session.get(qr_path(started(client)), headers={"Sec-Fetch-Site": source})
    assert page.status_code == 200 and 'value="approve"' in page.get_data(as_text=True)
    assert audit_rows(app, "qr_link_cross_site") == []


# Chromium's navigation from another site to a plain-http origin (http://192.168.1.20:5000):
# no Sec-Fetch-* at all, whoever started it; the Referer names the other site.
OVER_HTTP_FROM_ANOTHER_SITE = {"Referer": "http://prizes.example/win",
                               "Upgrade-Insecure-Requests": "1"}


def test_over_plain_http_another_sites_open_is_asked_about_and_binds_nothing(
        app, client, owner, clock):
    """Browsers send no Fetch Metadata to a plain-http server, so a request without it
    cannot say who started it. Trusting its absence let another site send a logged-in
    person on a LAN server straight to a stranger's approval page, bound to their
    account: Approve answered 302 and the stranger's printer got a token."""
    uid, session = owner
    answer = started(client, device_id="stranger-printer-http")
    page = session.get(qr_path(answer), headers=OVER_HTTP_FROM_ANOTHER_SITE)
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "Did you just scan" in html
    assert "did not say whether you opened this link" in html
    assert 'value="approve"' not in html and answer["user_code"] not in html
    assert decide(session, "approve").status_code == 404  # nothing bound
    clock.advance(seconds=5)
    assert poll(client, answer["device_code"]).get_json()["error"] == "authorization_pending"
    [row] = audit_rows(app, "qr_link_cross_site")
    assert (row.user_id, row.device_uid, row.outcome, row.detail) == (
        uid, "stranger-printer-http", "held", "Sec-Fetch-Site: not sent")
    assert audit_rows(app, "device_flow_opened") == []  # no binding was made


def test_over_plain_http_the_questions_own_link_leads_on_once(app, client, owner, clock):
    """A real scan there: one question, whose link (which the browser does not vouch for
    either) carries a one-time value this session was shown, and leads to the approval
    page. Used again (a reload), it asks again rather than letting through."""
    _, session = owner
    answer = started(client)
    onward = question_link(session.get(qr_path(answer)).get_data(as_text=True))
    page = session.get(onward)
    assert page.status_code == 200 and 'value="approve"' in page.get_data(as_text=True)
    assert decide(session, "approve").status_code == 302
    clock.advance(seconds=5)
    assert poll(client, answer["device_code"]).status_code == 200
    assert "Did you just scan" in session.get(onward).get_data(as_text=True)


def test_the_questions_value_counts_only_in_its_session_for_its_link_without_header(
        app, client, owner, make_user, login, clock):
    """Another site cannot read the question page, so cannot know its value: not one from
    its own session's question about the same link, nor one from the person's question
    about another link, nor a made-up one. And where the browser does say another site
    started it, even the right value does not stand in for ``same-origin``."""
    _, session = owner
    answer = started(client, device_id="stranger-printer-value")
    link, other_link = qr_path(answer), qr_path(started(client))
    _, email, password = make_user()
    attacker = login(email, password, REMOTE_ADDR="9.9.9.9")
    theirs = question_link(attacker.get(link).get_data(as_text=True))

    def latest_question(path: str) -> str:
        """The session is shown a question; its link is the one value it could answer."""
        return question_link(session.get(path).get_data(as_text=True))

    def asked(path: str, headers: dict) -> bool:
        return "Did you just scan" in session.get(path, headers=headers).get_data(as_text=True)

    # Each try right after a question about `link` (or, for the second, about another
    # link), so that only the check named fails it.
    latest_question(link)
    assert asked(theirs, OVER_HTTP_FROM_ANOTHER_SITE)  # another session's value
    another = latest_question(other_link)
    assert asked(link + "?" + another.split("?", 1)[1], OVER_HTTP_FROM_ANOTHER_SITE)
    latest_question(link)
    assert asked(link + "?answer=guess", OVER_HTTP_FROM_ANOTHER_SITE)
    assert asked(latest_question(link), {"Sec-Fetch-Site": "cross-site"})
    assert decide(session, "approve").status_code == 404
    clock.advance(seconds=5)
    assert poll(client, answer["device_code"]).get_json()["error"] == "authorization_pending"


def test_over_plain_http_a_logged_out_open_goes_to_the_login_form_noting_nothing(app, client):
    """Logged out, a request that does not say goes to log in first, spends nothing and is
    not noted as the person's own open: the login form then leads to the question
    (tests/test_qr_link_after_login.py)."""
    from tsd_server.discovery.pairing.web import OPENED_LOGGED_OUT_KEY

    answer = started(client)
    response = client.get(qr_path(answer), headers=OVER_HTTP_FROM_ANOTHER_SITE)
    assert response.status_code == 302 and "/login?next=" in response.headers["Location"]
    with client.session_transaction() as cookie:
        assert OPENED_LOGGED_OUT_KEY not in cookie
    from tsd_server.extensions import db
    from tsd_server.models import DeviceAuthorization

    with app.app_context():
        assert db.session.query(DeviceAuthorization).one().qr_opened_at is None
