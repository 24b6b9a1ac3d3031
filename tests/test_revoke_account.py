"""Revoking every printer token of one account: the owner's "Unlink all printers" and the
operator's ``flask incident revoke-account`` (DESIGN.md: tokens are revocable one by one,
per account, or in bulk by incident query). The operator's also ends every session of the
account."""

from __future__ import annotations

import sqlite3

import psycopg2.errors
import pytest
from sqlalchemy import event, select

from tsd_server.extensions import db
from tsd_server.models import AuditEvent, Device, PairingCode


def me(client, token: str) -> int:
    return client.get("/api/v1/device/me",
                      headers={"Authorization": f"Bearer {token}"}).status_code


@pytest.fixture
def two_accounts(make_user, link_device):
    """Mine: three printers; a stranger's: one, under the same device id as one of mine.
    Returns my id, email, password and every printer's (pk, token) by name."""
    mine, email, password = make_user("owner@example.org", display_name="Owner")
    stranger, _, _ = make_user("stranger@example.org")
    printers = {name: link_device(mine, device_uid=name, name=name)
                for name in ("printer-a", "printer-b", "printer-gone")}
    printers["stranger"] = link_device(stranger, device_uid="printer-a", name="Not mine")
    return mine, email, password, printers


def revocations(app) -> list[tuple[str, str, str]]:
    with app.app_context():
        return [(row.device_uid, row.actor, row.detail) for row in db.session.scalars(
            select(AuditEvent).where(AuditEvent.event == "revocation").order_by(AuditEvent.id))]


def test_unlink_all_cuts_off_every_printer_of_mine_and_no_one_elses(
        app, client, login, two_accounts):
    mine, email, password, printers = two_accounts
    tokens = {name: token for name, (_, token) in printers.items()}
    session = login(email, password)
    session.form_post(f"/printers/{printers['printer-gone'][0]}/unlink", {})
    assert me(client, tokens["printer-gone"]) == 401

    page = session.get("/").get_data(as_text=True)
    assert 'id="unlink-all"' in page
    answer = session.form_post("/printers/unlink-all", {"confirm": "y"})
    assert answer.status_code == 302
    assert "Unlinked 2 printers" in session.get("/").get_data(as_text=True)
    assert [me(client, tokens[name]) for name in ("printer-a", "printer-b", "stranger")] == \
        [401, 401, 200]
    assert revocations(app)[1:] == [
        ("printer-a", f"user:{mine}", "unlinked by owner (all)"),
        ("printer-b", f"user:{mine}", "unlinked by owner (all)")]
    with app.app_context():
        mine_rows = db.session.scalars(select(Device).where(Device.owner_id == mine)).all()
        assert {(d.device_uid, d.token_hash, d.needs_relink) for d in mine_rows} == {
            ("printer-a", None, False), ("printer-b", None, False),
            ("printer-gone", None, False)}
    # Nothing left to unlink: the form is gone.
    assert 'id="unlink-all"' not in session.get("/").get_data(as_text=True)


def taken_without_waiting(pk: int) -> bool:
    """Whether another connection can take the printer's row for writing at once
    (PostgreSQL: FOR UPDATE NOWAIT; SQLite: the one writer's lock, without a busy wait).
    The connection is thrown away after, its settings with it."""
    raw = db.engine.raw_connection()
    try:
        if db.engine.dialect.name == "postgresql":
            statement = "SELECT id FROM devices WHERE id = %s FOR UPDATE NOWAIT"
            with raw.cursor() as cursor:
                cursor.execute(statement, (pk,))
        else:
            raw.driver_connection.isolation_level = None  # BEGIN by hand
            raw.driver_connection.execute("PRAGMA busy_timeout = 0")
            raw.driver_connection.execute("BEGIN IMMEDIATE")
        return True
    except (psycopg2.errors.LockNotAvailable, sqlite3.OperationalError):
        return False
    finally:
        raw.invalidate()


def test_unlink_all_holds_the_printers_it_read_until_it_commits(app, login, two_accounts):
    """An incident revoke takes no account lock. Had it revoked a printer between Unlink
    all's read and its write, Unlink all would clear the incident's re-link badge and
    audit a second revocation. So the printers read stay held until Unlink all commits:
    right after its read, another connection cannot take one (the incident revoke would
    wait, then find it revoked)."""
    _, email, password, printers = two_accounts
    pk = printers["printer-a"][0]
    takes: list[bool] = []

    def try_to_take(conn, cursor, statement, parameters, context, executemany):
        if not takes and statement.lstrip().upper().startswith("SELECT") \
                and "FROM devices" in statement and "token_hash IS NOT NULL" in statement:
            takes.append(taken_without_waiting(pk))

    session = login(email, password)
    with app.app_context():
        event.listen(db.engine, "after_cursor_execute", try_to_take)
        try:
            answer = session.form_post("/printers/unlink-all", {"confirm": "y"})
        finally:
            event.remove(db.engine, "after_cursor_execute", try_to_take)
    assert answer.status_code == 302
    assert takes == [False]
    assert taken_in_an_app_context(app, pk)  # and free again once it committed


def taken_in_an_app_context(app, pk: int) -> bool:
    with app.app_context():
        return taken_without_waiting(pk)


@pytest.mark.parametrize("fields", [{}, {"confirm": ""}])
def test_unlink_all_without_the_ticked_box_changes_nothing(
        app, client, login, two_accounts, fields):
    _, email, password, printers = two_accounts
    tokens = [token for _, token in printers.values()]
    session = login(email, password)
    answer = session.form_post("/printers/unlink-all", fields)
    assert answer.status_code == 302
    assert "nothing was unlinked" in session.get("/").get_data(as_text=True)
    assert all(me(client, token) == 200 for token in tokens)
    assert revocations(app) == []


def test_unlink_all_without_the_csrf_token_or_a_session_is_refused(
        app, client, login, two_accounts):
    _, email, password, printers = two_accounts
    tokens = [token for _, token in printers.values()]
    session = login(email, password)
    assert session.client.post("/printers/unlink-all",
                               data={"confirm": "y"}).status_code == 400
    # Without a session there is no CSRF token to send either: refused just the same.
    assert client.post("/printers/unlink-all", data={"confirm": "y"}).status_code == 400
    assert all(me(client, token) == 200 for token in tokens)


def run(app, *args):
    return app.test_cli_runner().invoke(args=["incident", "revoke-account", *args])


def test_cli_revoke_account_dry_run_lists_and_changes_nothing(app, client, two_accounts):
    tokens = [token for _, token in two_accounts[3].values()]
    dry = run(app, "Owner@Example.org", "--reason", "password leaked")
    assert dry.exit_code == 0, dry.output
    assert "printer-a" in dry.output and "printer-b" in dry.output
    assert "DRY RUN: would revoke 3" in dry.output
    assert all(me(client, token) == 200 for token in tokens)


def test_cli_revoke_account_revokes_marks_for_relink_and_audits(
        app, client, login, two_accounts):
    mine, email, password, printers = two_accounts
    tokens = {name: token for name, (_, token) in printers.items()}
    real = run(app, "owner@example.org", "--reason", "password leaked", "--yes")
    assert real.exit_code == 0, real.output
    assert "Revoked 3 device(s) of owner@example.org" in real.output
    assert "Notify 1 account(s)" in real.output and "printer-b" in real.output
    assert [me(client, tokens[name]) for name in
            ("printer-a", "printer-b", "printer-gone", "stranger")] == [401, 401, 401, 200]
    assert [row[1:] for row in revocations(app)] == \
        [("cli", "account revoke: password leaked")] * 3
    with app.app_context():
        summary = db.session.scalar(select(AuditEvent).where(
            AuditEvent.event == "incident_revoke"))
        assert (summary.user_id, summary.actor) == (mine, "cli")
        assert "revoked 3 device(s) and ended every session: password leaked" in summary.detail
    # The owner sees which printers to link again.
    dashboard = login(email, password).get("/").get_data(as_text=True)
    assert dashboard.count("Needs re-link") == 3


@pytest.mark.parametrize("args, code, words", [
    (["nobody@example.org", "--reason", "x", "--yes"], 1, "no account has the email"),
    (["owner@example.org", "--reason", "  ", "--yes"], 2, "--reason: the reason must say why"),
    (["owner@example.org", "--reason", "x" * 501, "--yes"], 2,
     "--reason: the reason is longer than 500 characters"),
    (["owner@example.org", "--reason", "x" * 501], 2, "longer than 500"),  # the dry run too
    (["owner@example.org", "--yes"], 2, "Missing option '--reason'"),
])
def test_cli_revoke_account_bad_arguments_change_nothing(
        app, client, two_accounts, args, code, words):
    tokens = [token for _, token in two_accounts[3].values()]
    result = run(app, *args)
    assert result.exit_code == code, result.output
    assert words in result.output
    assert all(me(client, token) == 200 for token in tokens)


def logged_in(client) -> bool:
    return client.get("/api/v1/devices").status_code == 200


@pytest.mark.parametrize("by", ["cli", "admin"])
def test_an_account_revoke_logs_out_a_stolen_session_so_it_cannot_link_again(
        app, client, make_user, login, link_device, by):
    """The attack: a thief holding the account's session cookie waits out the revoke, then
    gets a new code and links a printer of theirs at once. The revoke ends every session
    of the account in its own transaction, every copy of the cookie included."""
    uid, email, password = make_user("victim@example.org")
    _, token = link_device(uid, device_uid="victims-printer")
    thief = login(email, password, REMOTE_ADDR="6.6.6.6")
    copied = app.test_client()
    copied.set_cookie("session", thief.client.get_cookie("session").value)
    assert logged_in(thief.client) and logged_in(copied)

    if by == "cli":
        assert run(app, email, "--reason", "session stolen", "--yes").exit_code == 0
    else:
        admin_id, admin_email, admin_password = make_user("ops@example.org", is_admin=True)
        admin = login(admin_email, admin_password)
        done = admin.form_post("/admin/incident/revoke-account", {
            "email": email, "reason": "session stolen", "confirm": "yes"})
        assert done.status_code == 302
        assert "Every session of the account ended" in \
            admin.get("/admin/incident").get_data(as_text=True)
        assert logged_in(admin.client)  # the operator's own session is another account's

    assert me(client, token) == 401
    assert not logged_in(thief.client) and not logged_in(copied)
    refused = thief.post("/api/v1/pairing/codes")
    assert refused.status_code == 401 and refused.get_json()["error"] == "login_required"
    with app.app_context():
        assert db.session.scalars(select(PairingCode)).all() == []
        summary = db.session.scalar(select(AuditEvent).where(
            AuditEvent.event == "incident_revoke"))
        assert "revoked 1 device(s) and ended every session: session stolen" in summary.detail
    # The owner logs in again as usual (and sets a new password if it leaked).
    assert logged_in(login(email, password).client)


def test_an_account_without_printers_can_be_logged_out_from_the_admin_page(
        app, make_user, login):
    """A stolen session needs ending even when the account has no printer yet: the
    confirmation page offers the revoke, and confirming logs the account out."""
    _, email, password = make_user("new@example.org")
    thief = login(email, password, REMOTE_ADDR="6.6.6.6")
    _, admin_email, admin_password = make_user("ops@example.org", is_admin=True)
    admin = login(admin_email, admin_password)
    asked = admin.form_post("/admin/incident/revoke-account",
                            {"email": email, "reason": "session stolen"})
    page = asked.get_data(as_text=True)
    assert "no printer with a working token" in page
    assert "Yes, revoke 0 device(s) and log the account out" in page
    # The command it suggests is not built from the email: an email may hold "$(" and "{".
    assert "set-password EMAIL" in page and f"set-password {email}" not in page
    assert logged_in(thief.client)
    done = admin.form_post("/admin/incident/revoke-account",
                           {"email": email, "reason": "session stolen", "confirm": "yes"})
    assert done.status_code == 302
    assert not logged_in(thief.client)
