"""RFC 8628 device flow, the person's side: /link, the approval page, approve or deny."""

from __future__ import annotations

from tests.support import device_flow_fixtures
from tests.support.pairing import (
    FRESH_SCAN,
    audit_rows,
    decide,
    enter_code,
    poll,
    poll_error,
    shown_request,
    started,
)

app_config = device_flow_fixtures.app_config
owner = device_flow_fixtures.owner


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
    assert poll_error(poll(client, answer["device_code"])) == "authorization_pending"


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
    assert poll_error(poll(client, theirs["device_code"], ip="9.9.9.9")) == "authorization_pending"
    assert poll_error(poll(client, mine["device_code"])) == "authorization_pending"
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
    assert poll_error(poll(client, theirs["device_code"], ip="9.9.9.9")) == \
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
    assert poll_error(poll(client, answer["device_code"])) == "access_denied"
