"""``flask delete-account EMAIL --reason ... [--yes]``: an operator deletes an account (its
owner asked). Its printers stop working and go, the links it set in motion cannot happen,
its sessions end, another account is untouched, and the audit log keeps the account's
history without its email. Before this command an operator had to delete the row by hand,
and ``sqlite3``'s shell enforces no foreign keys: the printers kept working tokens
(seen on device/me after a DELETE there)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tests.support.pairing import (
    LOOSE_LIMITS,
    audit_rows,
    decide,
    enter_code,
    issue_code,
    me,
    poll,
    poll_error,
    redeem,
    started,
)
from tsd_server.extensions import db
from tsd_server.models import AuditEvent, Device, DeviceAuthorization, PairingCode, User

EMAIL = "leaving@example.org"


@pytest.fixture
def app_config():
    return dict(LOOSE_LIMITS)


def run(app, *args):
    return app.test_cli_runner().invoke(args=["delete-account", *args])


def count(app, model, *where) -> int:
    with app.app_context():
        number = db.session.scalar(select(func.count()).select_from(model).where(*where))
        db.session.remove()
        return number


def logged_in(client) -> bool:
    return client.get("/api/v1/devices").status_code == 200


@pytest.fixture
def leaving(app, client, make_user, login, link_device):
    """The account to delete, with two printers, a web code nobody redeemed, a device flow
    it approved whose printer has not collected its token, and a logged-in session; and
    another account with a printer. Returns what the tests look at."""
    user_id, email, password = make_user(EMAIL, display_name="Leaving")
    other_id, _, _ = make_user("staying@example.org")
    tokens = [link_device(user_id, device_uid=uid)[1] for uid in ("printer-a", "printer-b")]
    other_token = link_device(other_id, device_uid="printer-a")[1]
    session = login(email, password)
    code = issue_code(session)["code"]
    flow = started(client, device_id="printer-c")
    enter_code(session, flow["user_code"])
    assert decide(session, "approve").status_code in (200, 302)
    return {"id": user_id, "session": session, "tokens": tokens, "other_id": other_id,
            "other_token": other_token, "code": code, "device_code": flow["device_code"]}


def test_the_dry_run_lists_the_printers_and_changes_nothing(app, client, leaving):
    dry = run(app, EMAIL, "--reason", "owner asked, ticket 7")
    assert dry.exit_code == 0, dry.output
    assert "printer-a" in dry.output and "printer-b" in dry.output
    assert "DRY RUN: would delete the account and 2 printer(s)" in dry.output
    assert [me(client, token).status_code for token in leaving["tokens"]] == [200, 200]
    assert count(app, User, User.id == leaving["id"]) == 1
    assert logged_in(leaving["session"].client)


def test_deleting_cuts_everything_off_and_leaves_the_other_account_alone(
        app, client, leaving, make_user):
    before = count(app, AuditEvent, AuditEvent.actor == f"user:{leaving['id']}")
    done = run(app, EMAIL, "--reason", "owner asked, ticket 7", "--yes")
    assert done.exit_code == 0, done.output
    assert f"Deleted account {EMAIL} (id {leaving['id']}) and 2 printer(s)" in done.output

    # Its printers are cut off and gone; the other account's printer of the same id works.
    assert [me(client, token).status_code for token in leaving["tokens"]] == [401, 401]
    assert me(client, leaving["other_token"]).status_code == 200
    assert count(app, Device, Device.owner_id == leaving["id"]) == 0
    assert count(app, User, User.id == leaving["other_id"]) == 1
    # Its session ends with the row, and what it set in motion cannot link any more.
    assert not logged_in(leaving["session"].client)
    refused = redeem(client, leaving["code"], device_id="printer-d")
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_code"
    assert poll_error(poll(client, leaving["device_code"])) == "access_denied"
    assert count(app, PairingCode) == 0
    assert count(app, Device, Device.device_uid.in_(("printer-c", "printer-d"))) == 0
    with app.app_context():
        approval = db.session.scalar(select(DeviceAuthorization))
        assert approval.decided_by_id is None

    # The history stays, without the email: the account's own rows, and one row saying
    # who deleted which id and why.
    assert count(app, AuditEvent, AuditEvent.actor == f"user:{leaving['id']}") == before
    [deleted] = audit_rows(app, "account_deleted")
    assert (deleted.actor, deleted.user_id) == ("cli", None)
    assert deleted.detail == (f"account {leaving['id']} deleted with its 2 printer(s): "
                              "owner asked, ticket 7")
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.detail.contains(EMAIL))) == 0
    cut_off = sorted((row.outcome, row.device_uid or "") for row in
                     audit_rows(app, "revocation") if row.actor == "cli")
    assert {row.detail for row in audit_rows(app, "revocation") if row.actor == "cli"
            and row.outcome == "ok"} == {f"account {leaving['id']} deleted: owner asked, "
                                         "ticket 7"}
    assert cut_off == [("ok", "printer-a"), ("ok", "printer-b"),  # the two printers
                       ("withdrawn", ""), ("withdrawn", "printer-c")]  # the code, the approval


def test_the_email_can_sign_up_again_as_a_new_account_that_old_cookies_do_not_open(
        app, leaving, make_user, login):
    """The newest account deleted: without AUTOINCREMENT, SQLite would give its id to the
    next account, and a copy of its cookie would open that one."""
    last_id, last_email, password = make_user("last@example.org")
    session = login(last_email, password)
    copied = app.test_client()
    copied.set_cookie("session", session.client.get_cookie("session").value)
    assert run(app, last_email, "--reason", "owner asked", "--yes").exit_code == 0
    new_id, _, _ = make_user(last_email)
    assert new_id > last_id  # ids are never given again
    assert not logged_in(copied) and not logged_in(session.client)


def test_an_account_revoked_earlier_leaves_no_email_in_the_audit_log(app, leaving):
    """incident revoke-account's row named the account by its email, and it outlived the
    account; both commands name it by id."""
    revoked = app.test_cli_runner().invoke(args=[
        "incident", "revoke-account", EMAIL, "--reason", "password leaked", "--yes"])
    assert revoked.exit_code == 0, revoked.output
    assert run(app, EMAIL, "--reason", "owner asked", "--yes").exit_code == 0
    with app.app_context():
        details = db.session.scalars(select(AuditEvent.detail)).all()
    assert [detail for detail in details if detail and EMAIL in detail] == []
    assert f"account {leaving['id']}: revoked 2 device(s)" in " ".join(filter(None, details))


@pytest.mark.parametrize("args, code, words", [
    (["nobody@example.org", "--reason", "x", "--yes"], 1, "no account has the email"),
    ([EMAIL, "--reason", "  ", "--yes"], 2, "--reason: the reason must say why"),
    ([EMAIL, "--reason", "x" * 501, "--yes"], 2, "longer than 500 characters"),
    ([EMAIL, "--yes"], 2, "Missing option '--reason'"),
])
def test_bad_arguments_change_nothing(app, client, leaving, args, code, words):
    result = run(app, *args)
    assert result.exit_code == code, result.output
    assert words in result.output
    assert [me(client, token).status_code for token in leaving["tokens"]] == [200, 200]
    assert count(app, User, User.id == leaving["id"]) == 1
    assert audit_rows(app, "account_deleted") == []
