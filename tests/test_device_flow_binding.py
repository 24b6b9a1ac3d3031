"""A printer's request belongs to the first account that reaches it, by code or by QR link.

The user code is on the printer's screen next to the QR code (and follows from the QR
token), so spending the QR link alone left the request to anyone who saw the screen: they
typed the code while the owner was on the approval page, approved first, and the printer
went to their account. Now the first account to type the code or open the QR link holds the
request; another account is refused, changes nothing, and cannot decide it.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from tests.support.pairing import (
    LOOSE_LIMITS,
    audit_rows,
    decide,
    enter_code,
    me,
    poll,
    qr_path,
    qr_token,
    shown_request,
    started,
)

REFUSED = "Another account is already approving this printer"
FRESH_SCAN = {"Sec-Fetch-Site": "none"}  # a scan: the browser says the person started it


@pytest.fixture
def app_config():
    return dict(LOOSE_LIMITS)


@pytest.fixture
def owner(make_user, login):
    uid, email, password = make_user(display_name="Olivia Owner")
    return uid, login(email, password, REMOTE_ADDR="1.1.1.1")


@pytest.fixture
def stranger(make_user, login):
    uid, email, password = make_user(display_name="Sam Stranger")
    return uid, login(email, password, REMOTE_ADDR="6.6.6.6")



def the_request(app):
    """The one device authorization, as stored now."""
    from tsd_server.extensions import db
    from tsd_server.models import DeviceAuthorization

    with app.app_context():
        row = db.session.scalars(select(DeviceAuthorization)).one()
        db.session.expunge(row)
        db.session.remove()
        return row


def unbind(app) -> None:
    """Make the request look as one waiting since before migration 0011: held by nobody."""
    from tsd_server.extensions import db
    from tsd_server.models import DeviceAuthorization

    with app.app_context():
        db.session.execute(update(DeviceAuthorization).values(bound_to_id=None, bound_at=None))
        db.session.commit()
        db.session.remove()


def owner_of_the_printer(client, clock, answer: dict) -> str:
    """The device collects its token: the display name of the account it went to."""
    clock.advance(seconds=10)
    collected = poll(client, answer["device_code"])
    assert collected.status_code == 200, collected.get_json()
    return me(client, collected.get_json()["access_token"]).get_json()["owner"]["display_name"]


def test_a_stranger_typing_the_code_after_the_owner_scanned_is_refused(
        app, client, clock, owner, stranger):
    """The reviewer's attack: the owner scans the QR code and is on the approval page; a
    stranger who saw the screen (or derives the code from the QR link) types the code."""
    from tsd_server.discovery.pairing import codes

    owner_id, owners_phone = owner
    _, strangers = stranger
    answer = started(client)
    page = owners_phone.get(qr_path(answer), headers=FRESH_SCAN)
    assert page.status_code == 200 and 'value="approve"' in page.get_data(as_text=True)

    derived = codes.display(codes.user_code_for(qr_token(answer)))
    assert derived == answer["user_code"]
    for code in (answer["user_code"], derived.lower().replace("-", " ")):
        refused = enter_code(strangers, code)
        html = refused.get_data(as_text=True)
        assert refused.status_code == 409 and REFUSED in html
        assert "restart linking on the printer" in html
        assert "Olivia" not in html and "user1@" not in html  # nobody is named
    assert strangers.get("/link/confirm").status_code == 404  # nothing bound to them
    assert decide(strangers, "approve").status_code == 404
    assert the_request(app).status == "pending"
    # Not a wrong code: the failure breaker counts no guess (the rate limits did count it).
    assert audit_rows(app, "code_invalid") == []

    assert decide(owners_phone, "approve", shown=shown_request(page.get_data(as_text=True))
                  ).status_code == 302
    assert owner_of_the_printer(client, clock, answer) == "Olivia Owner"
    assert the_request(app).bound_to_id == owner_id


def test_a_stranger_who_typed_the_code_first_keeps_the_owners_scan_out(
        app, client, clock, owner, stranger):
    """The other order: whoever reaches the request first holds it. The owner is refused
    both ways, told to restart on the printer, and the QR link is not spent."""
    _, owners_phone = owner
    stranger_id, strangers = stranger
    answer = started(client)
    assert enter_code(strangers, answer["user_code"]).status_code == 302

    scanned = owners_phone.get(qr_path(answer), headers=FRESH_SCAN)
    html = scanned.get_data(as_text=True)
    assert scanned.status_code == 409 and "cannot be used" in html and REFUSED in html
    assert 'value="approve"' not in html and "Sam" not in html
    typed = enter_code(owners_phone, answer["user_code"])
    assert typed.status_code == 409 and REFUSED in typed.get_data(as_text=True)
    assert decide(owners_phone, "approve").status_code == 404
    row = the_request(app)
    assert (row.status, row.bound_to_id, row.qr_opened_at) == ("pending", stranger_id, None)
    clock.advance(seconds=10)
    assert poll(client, answer["device_code"]).get_json()["error"] == "authorization_pending"


def test_the_same_account_reaches_its_request_both_ways_and_from_two_browsers(
        app, client, clock, owner, login):
    """Scanned, then the code typed (the page lost, a second tab, another browser of the
    same account): all fine, the binding stays the first one."""
    from tsd_server.extensions import db
    from tsd_server.models import User

    owner_id, phone = owner
    with app.app_context():
        email = db.session.get(User, owner_id).email
    laptop = login(email, REMOTE_ADDR="1.1.1.2")
    answer = started(client)
    assert phone.get(qr_path(answer), headers=FRESH_SCAN).status_code == 200
    first = the_request(app)
    clock.advance(seconds=30)
    for browser in (phone, phone, laptop):
        assert enter_code(browser, answer["user_code"]).status_code == 302
        assert browser.get("/link/confirm").status_code == 200
    row = the_request(app)
    assert (row.bound_to_id, row.bound_at) == (owner_id, first.bound_at)
    assert decide(laptop, "approve").status_code == 302
    assert owner_of_the_printer(client, clock, answer) == "Olivia Owner"

    # The other order: the code typed first, then the QR link opened by the same account.
    other = started(client, device_id="printer-0003")
    assert enter_code(laptop, other["user_code"]).status_code == 302
    assert phone.get(qr_path(other), headers=FRESH_SCAN).status_code == 200


def test_a_request_waiting_since_before_the_upgrade_goes_to_its_first_decider(
        app, client, clock, owner, stranger):
    """Rows from before migration 0011 have no binding, and approval pages opened before
    the upgrade still name them: the first decision wins and binds the request; a later
    answer is too late."""
    owner_id, owners = owner
    _, strangers = stranger
    answer = started(client)
    assert enter_code(owners, answer["user_code"]).status_code == 302
    unbind(app)
    assert enter_code(strangers, answer["user_code"]).status_code == 302
    stranger_page = shown_request(strangers.get("/link/confirm").get_data(as_text=True))
    unbind(app)
    assert (the_request(app).bound_to_id, the_request(app).bound_at) == (None, None)

    assert decide(owners, "approve").status_code == 302
    row = the_request(app)
    assert (row.status, row.bound_to_id, row.decided_by_id) == ("approved", owner_id, owner_id)
    assert row.bound_at is not None
    late = decide(strangers, "deny", shown=stranger_page)
    assert late.status_code == 409 and "Too late" in late.get_data(as_text=True)
    assert owner_of_the_printer(client, clock, answer) == "Olivia Owner"


def test_an_approval_page_from_before_the_upgrade_is_too_late_once_another_account_holds_it(
        app, client, clock, owner, stranger):
    """The owner's page was drawn before the upgrade; after it, a stranger typed the code
    first and holds the request. The owner's Approve decides nothing (the approval page, and
    ``approvals.decide`` itself, check who holds the request)."""
    from tsd_server.discovery.pairing import approvals, device_flow
    from tsd_server.extensions import db
    from tsd_server.models import User

    owner_id, owners = owner
    stranger_id, strangers = stranger
    answer = started(client)
    assert enter_code(owners, answer["user_code"]).status_code == 302
    owners_page = shown_request(owners.get("/link/confirm").get_data(as_text=True))
    unbind(app)
    assert enter_code(strangers, answer["user_code"]).status_code == 302

    assert owners.get("/link/confirm").status_code == 404
    late = decide(owners, "approve", shown=owners_page)
    assert late.status_code == 409 and "Too late" in late.get_data(as_text=True)
    with app.test_request_context():
        user = db.session.get(User, owner_id)
        assert approvals.decide(the_request(app).id, user=user, approve=True,
                                via=device_flow.PAIRING_CODE, address=None) is False
        db.session.remove()
    row = the_request(app)
    assert (row.status, row.bound_to_id, row.decided_by_id) == ("pending", stranger_id, None)
    too_late = audit_rows(app, "device_flow_decision")
    assert [r.outcome for r in too_late] == ["too_late", "too_late"]
    assert all(r.user_id == owner_id and r.device_uid == "printer-0002" and
               r.detail == f"held by user:{stranger_id}" for r in too_late)


def test_a_deleted_accounts_request_is_not_freed_for_anyone(
        app, client, clock, owner, stranger):
    """``ondelete=SET NULL`` keeps the row; ``bound_at`` keeps it closed. Were it freed, a
    stranger who saw the screen could take it the moment its holder's account went."""
    from tsd_server.extensions import db
    from tsd_server.models import User

    owner_id, owners = owner
    stranger_id, strangers = stranger
    answer = started(client)
    assert enter_code(owners, answer["user_code"]).status_code == 302
    with app.app_context():
        db.session.delete(db.session.get(User, owner_id))
        db.session.commit()
        db.session.remove()
    row = the_request(app)
    assert (row.status, row.bound_to_id) == ("pending", None) and row.bound_at is not None
    assert enter_code(strangers, answer["user_code"]).status_code == 409
    assert strangers.get(qr_path(answer), headers=FRESH_SCAN).status_code == 409
    assert decide(strangers, "approve").status_code == 404
    assert the_request(app).bound_to_id is None
    [refused, _] = [r for r in audit_rows(app, "device_flow_opened")
                    if r.outcome == "bound_elsewhere"]
    assert refused.user_id == stranger_id and "held by a deleted account" in refused.detail


def test_binding_refusals_and_late_answers_are_audited(app, client, clock, owner, stranger):
    owner_id, owners = owner
    stranger_id, strangers = stranger
    answer = started(client, device_id="printer-audit")
    page = owners.get(qr_path(answer), headers=FRESH_SCAN).get_data(as_text=True)
    assert enter_code(owners, answer["user_code"]).status_code == 302
    assert enter_code(strangers, answer["user_code"]).status_code == 409
    assert strangers.get(qr_path(answer), headers=FRESH_SCAN).status_code == 400  # spent
    assert strangers.get("/link/qr/" + "A" * 43, headers=FRESH_SCAN).status_code == 400
    assert decide(owners, "deny", shown=shown_request(page)).status_code == 302
    assert enter_code(owners, answer["user_code"]).status_code == 400  # decided: gone
    opened = audit_rows(app, "device_flow_opened")
    assert [(r.outcome, r.strategy, r.user_id, r.device_uid, r.client_ip) for r in opened] == [
        ("bound", "qr_code", owner_id, "printer-audit", "1.1.1.1"),
        # its code, typed after the scan, reaches the scan's request (approvals.way_reached)
        ("bound", "qr_code", owner_id, "printer-audit", "1.1.1.1"),
        ("bound_elsewhere", "pairing_code", stranger_id, "printer-audit", "6.6.6.6"),
    ]
    assert opened[2].detail.startswith(f"'Voron in the garage': held by user:{owner_id} since")
    invalid = audit_rows(app, "qr_link_invalid")
    assert [(r.user_id, r.device_uid, r.outcome) for r in invalid] == [
        (stranger_id, "printer-audit", "refused"), (stranger_id, None, "refused")]
    assert invalid[0].detail == f"opened already (the request is held by user:{owner_id})"
    assert invalid[1].detail == "unknown QR link"


def test_an_answer_after_the_decision_is_audited_as_too_late(app, client, owner, login):
    from tsd_server.extensions import db
    from tsd_server.models import User

    owner_id, phone = owner
    with app.app_context():
        email = db.session.get(User, owner_id).email
    laptop = login(email, REMOTE_ADDR="1.1.1.2")
    answer = started(client, device_id="printer-late")
    for browser in (phone, laptop):
        assert enter_code(browser, answer["user_code"]).status_code == 302
    laptop_page = shown_request(laptop.get("/link/confirm").get_data(as_text=True))
    assert decide(phone, "approve").status_code == 302
    assert decide(laptop, "deny", shown=laptop_page).status_code == 409
    decisions = audit_rows(app, "device_flow_decision")
    assert [(r.outcome, r.user_id, r.device_uid, r.client_ip, r.detail)
            for r in decisions][1:] == [
        ("too_late", owner_id, "printer-late", "1.1.1.2", "approved already")]


def test_an_expired_qr_link_is_audited_with_its_printer(app, client, clock, owner):
    owner_id, session = owner
    answer = started(client, device_id="printer-expired")
    clock.advance(seconds=901)
    assert session.get(qr_path(answer), headers=FRESH_SCAN).status_code == 400
    [row] = audit_rows(app, "qr_link_invalid")
    assert (row.user_id, row.device_uid, row.detail) == (owner_id, "printer-expired", "expired")


# Two accounts at the same moment, on PostgreSQL ----------------------------------------


@pytest.fixture
def racing(app):
    if not app.config["DATABASE_URL"].startswith("postgresql"):
        pytest.skip("the race is run against the real PostgreSQL database")
    from tests import test_pairing_concurrency as race

    return race


def queued_in_order(app, racing, first, second) -> list:
    """Run ``first``, then, once it waits at the locked row, ``second``: each reads the
    request as held by nobody, and the lock goes to them in that order when released."""
    import time

    from tsd_server.models import DeviceAuthorization

    with racing.row_locked(app, "device_authorizations",
                           racing.only_row_id(app, DeviceAuthorization)) as release:
        threads, results, errors = racing.run_together(first)
        deadline = time.monotonic() + 20
        while racing.waiting_for_locks(app) < 1:
            assert time.monotonic() < deadline, "the first request never reached the row"
            time.sleep(0.02)
        more_threads, more_results, more_errors = racing.run_together(second)
        release(after_waiters=2)
        racing.join(threads + more_threads, errors + more_errors)
    return results + more_results


@pytest.mark.parametrize("first", ["owner", "stranger"])
@pytest.mark.parametrize("owners_way", ["code", "qr"])
def test_two_accounts_reaching_one_request_at_once_exactly_one_holds_it(
        app, racing, client, clock, owner, stranger, owners_way, first):
    """A separate connection holds the row's lock until both requests wait at their
    UPDATE, so both read the request as held by nobody: only the conditional UPDATE can
    tell them apart. Whichever gets the lock first holds the request."""
    owner_id, owners = owner
    stranger_id, strangers = stranger
    answer = started(client)

    def owners_try():
        if owners_way == "qr":
            return owners.get(qr_path(answer), headers=FRESH_SCAN)
        return enter_code(owners, answer["user_code"])

    def strangers_try():
        return enter_code(strangers, answer["user_code"])

    tries = (owners_try, strangers_try) if first == "owner" else (strangers_try, owners_try)
    winner_first, loser_second = queued_in_order(app, racing, *tries)
    assert winner_first.status_code in (200, 302)
    assert loser_second.status_code == 409
    assert REFUSED in loser_second.get_data(as_text=True)
    winner = owner_id if first == "owner" else stranger_id
    assert the_request(app).bound_to_id == winner
    opened = audit_rows(app, "device_flow_opened")
    assert [r.outcome for r in opened] == ["bound", "bound_elsewhere"]
    assert decide(strangers if first == "owner" else owners, "approve").status_code == 404


def test_two_accounts_deciding_a_request_from_before_the_upgrade_at_once_one_wins(
        app, racing, client, clock, owner, stranger):
    """Both approval pages were drawn before the upgrade (the request held by nobody):
    exactly one decision lands, and it binds the request to its account."""
    from tsd_server.models import DeviceAuthorization

    owner_id, owners = owner
    stranger_id, strangers = stranger
    answer = started(client)
    for session in (owners, strangers):
        assert enter_code(session, answer["user_code"]).status_code == 302
        unbind(app)
    with racing.row_locked(app, "device_authorizations",
                           racing.only_row_id(app, DeviceAuthorization)) as release:
        threads, results, errors = racing.run_together(
            lambda: decide(owners, "approve"), lambda: decide(strangers, "approve"))
        release(after_waiters=2)
        racing.join(threads, errors)
    statuses = [r.status_code for r in results]
    assert sorted(statuses) == [302, 409], statuses
    winner = owner_id if statuses[0] == 302 else stranger_id
    row = the_request(app)
    assert (row.status, row.bound_to_id, row.decided_by_id) == ("approved", winner, winner)
    assert sorted(r.outcome for r in audit_rows(app, "device_flow_decision")) == [
        "approved", "too_late"]
