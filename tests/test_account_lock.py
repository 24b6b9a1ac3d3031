"""``flask --app tsd_server lock-account EMAIL --reason ...`` and ``unlock-account``: an
operator shuts an account out (abuse, a takeover being looked into) without touching its
password or its printers.

Locking ends every session (a copy of a cookie included) and withdraws what they prepared;
the right password then gets "locked", a wrong one the usual answer, so a guess does not
learn that the account is locked.
"""

from __future__ import annotations

import pytest

from tests.conftest import CSRF_META
from tests.support.pairing import LOOSE_LIMITS, audit_rows, issue_code, me, redeem

PASSWORD = "correct horse battery"
LOCKED = "This account is locked by the server&#39;s operator. Ask them why."


@pytest.fixture
def app_config():
    return dict(LOOSE_LIMITS)


def run(app, *args: str):
    return app.test_cli_runner().invoke(args=list(args))


def logged_in(session) -> bool:
    return session.client.get("/api/v1/devices").status_code == 200


def log_in(app, email: str, password: str = PASSWORD):
    """A log-in on the form from a fresh browser: the answer (``.browser`` is the client)."""
    browser = app.test_client()
    token = CSRF_META.search(browser.get("/login").get_data(as_text=True)).group(1)
    response = browser.post("/login", data={"email": email, "password": password,
                                            "csrf_token": token})
    response.browser = browser
    return response


def test_a_locked_account_is_logged_out_and_cannot_log_in(app, client, make_user, login):
    uid, email, _ = make_user("mallory@example.org")
    _, other_email, _ = make_user("other@example.org")
    mallory, other = login(email), login(other_email)
    code = issue_code(mallory)["code"]

    result = run(app, "lock-account", "Mallory@Example.org", "--reason", "abuse report #12")
    assert result.exit_code == 0, result.output
    assert "Locked mallory@example.org" in result.output

    assert not logged_in(mallory)
    assert logged_in(other)  # another account is untouched
    assert redeem(client, code).status_code == 400  # what the session prepared is withdrawn
    refused = log_in(app, email)
    assert refused.status_code == 403
    assert LOCKED in refused.get_data(as_text=True)
    assert refused.browser.get("/api/v1/devices").status_code == 401
    [locked] = audit_rows(app, "account_locked")
    assert (locked.user_id, locked.actor) == (uid, "cli")
    assert locked.detail == "every session ended: abuse report #12"


def test_a_wrong_password_does_not_tell_that_the_account_is_locked(app, make_user):
    uid, email, _ = make_user("mallory@example.org")
    assert run(app, "lock-account", email, "--reason", "abuse").exit_code == 0
    guessed = log_in(app, email, "not the password at all")
    assert guessed.status_code == 400
    page = guessed.get_data(as_text=True)
    assert "Email or password is not right." in page and "locked" not in page
    assert [(r.user_id, r.outcome) for r in audit_rows(app, "login_failed")] == [
        (uid, "refused")]
    assert log_in(app, email).status_code == 403
    assert [(r.user_id, r.outcome) for r in audit_rows(app, "login_failed")] == [
        (uid, "refused"), (uid, "locked")]
    assert audit_rows(app, "login") == []


def test_unlock_lets_the_account_log_in_again(app, make_user):
    uid, email, _ = make_user("mallory@example.org")
    assert run(app, "lock-account", email, "--reason", "looking into it").exit_code == 0
    result = run(app, "unlock-account", email, "--reason", "cleared")
    assert result.exit_code == 0, result.output
    assert "Unlocked mallory@example.org" in result.output
    assert log_in(app, email).status_code == 302
    [unlocked] = audit_rows(app, "account_unlocked")
    assert (unlocked.user_id, unlocked.actor, unlocked.detail) == (uid, "cli", "cleared")


def test_its_printers_keep_working(app, client, make_user, login):
    """Locking is about people; ``incident revoke-account`` is the way to cut printers off."""
    _, email, _ = make_user("owner@example.org")
    linked = redeem(client, issue_code(login(email))["code"])
    assert linked.status_code == 201
    assert run(app, "lock-account", email, "--reason", "holiday").exit_code == 0
    assert me(client, linked.get_json()["access_token"]).status_code == 200


@pytest.mark.parametrize("args, message", [
    (["lock-account", "nobody@example.org", "--reason", "x"], "no account has the email"),
    (["lock-account", "mallory@example.org", "--reason", "   "], "the reason must say why"),
    (["lock-account", "mallory@example.org"], "Missing option '--reason'"),
    (["unlock-account", "mallory@example.org", "--reason", "x"], "the account is not locked"),
])
def test_refusals_change_nothing(app, make_user, args, message):
    make_user("mallory@example.org")
    result = run(app, *args)
    assert result.exit_code != 0
    assert message in result.output
    assert audit_rows(app, "account_locked") == audit_rows(app, "account_unlocked") == []
    assert log_in(app, "mallory@example.org").status_code == 302


@pytest.mark.parametrize("change", ["lock", "unlock"])
def test_a_lock_decides_on_the_account_as_it_is_now(app, make_user, change):
    """Two operators at once: the second one's view of the account was read before the
    first one's change committed (in another database session). It is refused, and
    nothing is written twice."""
    from tsd_server.auth import accounts
    from tsd_server.extensions import db

    _, email, _ = make_user("mallory@example.org")
    if change == "unlock":
        assert run(app, "lock-account", email, "--reason", "first").exit_code == 0
    operate = getattr(accounts, change)
    with app.test_request_context():
        read_before = accounts.find_user(email)
        with app.app_context():  # another operator: a session of its own
            operate(accounts.find_user(email), actor="cli", reason="first")
            db.session.remove()
        with pytest.raises(accounts.AccountError, match="locked already|not locked"):
            operate(read_before, actor="cli", reason="second")
        db.session.remove()
    assert len(audit_rows(app, f"account_{change}ed")) == 1


def test_locking_twice_is_refused_and_keeps_the_first_lock(app, make_user):
    uid, email, _ = make_user("mallory@example.org")
    assert run(app, "lock-account", email, "--reason", "first").exit_code == 0
    again = run(app, "lock-account", email, "--reason", "second")
    assert again.exit_code == 1
    assert "the account is locked already (since " in again.output
    assert [r.detail for r in audit_rows(app, "account_locked")] == [
        "every session ended: first"]


def while_the_password_is_checked(monkeypatch, operator) -> None:
    """Run ``operator`` (another thread and app context: another process) during the first
    password check, when the request has read its account and not yet written anything."""
    import threading

    from tsd_server.models import User

    check_password = User.check_password
    done: list[BaseException | None] = []

    def check(self, password):
        result = check_password(self, password)
        if not done:
            def run_operator():
                try:
                    operator()
                    done.append(None)
                except BaseException as error:  # noqa: BLE001 - reported below
                    done.append(error)
            thread = threading.Thread(target=run_operator)
            thread.start()
            thread.join(30)
            assert done == [None], done or "the operator's command hung"
        return result

    monkeypatch.setattr(User, "check_password", check)


def test_a_password_change_already_running_loses_to_the_operator(
        app, make_user, login, monkeypatch):
    """A thief with the password and a session changes it; the operator locks the account
    and sets a new password while that request runs. The thief's change must not land
    after them: it would overwrite the operator's password."""
    uid, email, _ = make_user("victim@example.org")
    thief = login(email)
    operators = "the operator's new passphrase"

    def operator():
        assert run(app, "lock-account", email, "--reason", "takeover").exit_code == 0
        reset = app.test_cli_runner().invoke(args=["set-password", email],
                                             input=f"{operators}\n{operators}\n")
        assert reset.exit_code == 0, reset.output

    while_the_password_is_checked(monkeypatch, operator)
    answer = thief.form_post("/account/password", {
        "current": PASSWORD, "password": "the thief's passphrase",
        "confirm": "the thief's passphrase"})
    monkeypatch.undo()
    assert answer.status_code == 302 and "/login" in answer.location
    assert [r.actor for r in audit_rows(app, "password_changed")] == ["cli"]
    [refused] = audit_rows(app, "password_change_failed")
    assert (refused.actor, refused.outcome) == (f"user:{uid}", "session_ended")
    assert run(app, "unlock-account", email, "--reason", "owner verified").exit_code == 0
    assert log_in(app, email, "the thief's passphrase").status_code == 400
    assert log_in(app, email, operators).status_code == 302


def test_a_log_in_already_running_when_the_lock_commits_is_refused(
        app, make_user, monkeypatch):
    uid, email, _ = make_user("victim@example.org")
    while_the_password_is_checked(
        monkeypatch, lambda: run(app, "lock-account", email, "--reason", "takeover"))
    answer = log_in(app, email)
    monkeypatch.undo()
    assert answer.status_code == 403 and LOCKED in answer.get_data(as_text=True)
    assert answer.browser.get("/api/v1/devices").status_code == 401
    assert audit_rows(app, "login") == []
    assert [r.outcome for r in audit_rows(app, "login_failed")] == ["locked"]


def test_a_lock_right_after_the_password_check_still_refuses_the_log_in(
        app, make_user, monkeypatch):
    """The lock commits after ``log_in`` read the account and before the session is made:
    Flask-Login's ``login_user`` refuses an inactive account, and so does the page."""
    from tsd_server.auth import views

    _, email, _ = make_user("victim@example.org")
    checked = views.log_in

    def then_locked(*args):
        user = checked(*args)
        assert run(app, "lock-account", email, "--reason", "takeover").exit_code == 0
        return user

    monkeypatch.setattr(views, "log_in", then_locked)
    answer = log_in(app, email)
    assert answer.status_code == 403 and LOCKED in answer.get_data(as_text=True)
    assert answer.browser.get("/api/v1/devices").status_code == 401


def test_a_lock_written_by_hand_ends_the_sessions_too(app, make_user, login):
    """An operator who sets users.locked_at in SQL (no epoch raise) still shuts the
    account's sessions out: Flask-Login counts an inactive user (``is_active``) as not
    authenticated."""
    from sqlalchemy import update

    from tsd_server.clock import utcnow
    from tsd_server.extensions import db
    from tsd_server.models import User

    uid, email, _ = make_user("mallory@example.org")
    mallory = login(email)
    assert logged_in(mallory)
    with app.app_context():
        db.session.execute(update(User).where(User.id == uid).values(locked_at=utcnow()))
        db.session.commit()
    assert not logged_in(mallory)


# --- the admin page (Incident → One account: lock or unlock it) -----------------------------

LOCK_PATH = "/admin/incident/lock-account"


@pytest.fixture
def admin(make_user, login):
    uid, email, _ = make_user("root@example.org", is_admin=True)
    session = login(email)
    session.uid, session.email = uid, email
    return session


def flashed(admin) -> str:
    return admin.get("/admin/incident").get_data(as_text=True)


def test_an_admin_locks_and_unlocks_an_account_on_the_incident_page(app, admin, make_user,
                                                                    login):
    uid, email, _ = make_user("mallory@example.org")
    mallory = login(email)
    locked = admin.form_post(LOCK_PATH, {"email": " Mallory@Example.org ",
                                         "reason": "abuse report", "action": "lock"})
    assert locked.status_code == 302
    assert "Locked mallory@example.org: every session of it ended" in flashed(admin)
    assert not logged_in(mallory)
    assert log_in(app, email).status_code == 403
    assert admin.form_post(LOCK_PATH, {"email": email, "reason": "cleared",
                                       "action": "unlock"}).status_code == 302
    assert "Unlocked mallory@example.org" in flashed(admin)
    assert log_in(app, email).status_code == 302
    assert [(r.event, r.actor, r.user_id) for r in audit_rows(app)
            if r.event.startswith("account_")] == [
        ("account_locked", f"admin:{admin.uid}", uid),
        ("account_unlocked", f"admin:{admin.uid}", uid)]


@pytest.mark.parametrize("fields, words", [
    ({"email": "nobody@example.org", "reason": "x", "action": "lock"},
     "No account has that email. Nothing was changed."),
    ({"email": "mallory@example.org", "reason": " ", "action": "lock"},
     "Say why (it goes to the audit log). Nothing was changed."),
    ({"email": "mallory@example.org", "reason": "x", "action": "delete"},
     "Press Lock or Unlock. Nothing was changed."),
    ({"email": "mallory@example.org", "reason": "x"}, "Press Lock or Unlock."),
    ({"email": "mallory@example.org", "reason": "x", "action": "unlock"},
     "mallory@example.org: the account is not locked. Nothing was changed."),
])
def test_the_admin_page_refuses_bad_input_and_changes_nothing(app, admin, make_user, fields,
                                                             words):
    make_user("mallory@example.org")
    assert admin.form_post(LOCK_PATH, fields).status_code == 302
    assert words in flashed(admin)
    assert audit_rows(app, "account_locked") == audit_rows(app, "account_unlocked") == []
    assert log_in(app, "mallory@example.org").status_code == 302


@pytest.mark.parametrize("whom", ["self", "another admin"])
def test_the_page_does_not_lock_administrators(app, admin, make_user, login, whom):
    """A stolen admin cookie must not shut the other admins out (nor lock its owner out of
    the page that unlocks); the command line can."""
    email = admin.email if whom == "self" else make_user("ops@example.org", is_admin=True)[1]
    other = login(email)
    assert admin.form_post(LOCK_PATH, {"email": email.upper(), "reason": "oops",
                                       "action": "lock"}).status_code == 302
    assert f"{email} is an administrator: lock or unlock it on the command line" in \
        flashed(admin)
    assert audit_rows(app, "account_locked") == []
    assert logged_in(other)


def test_locking_on_the_page_needs_an_admin_and_the_csrf_token(app, admin, make_user, login):
    _, email, _ = make_user("mallory@example.org")
    member = login(make_user("member@example.org")[1])
    fields = {"email": email, "reason": "x", "action": "lock"}
    assert member.form_post(LOCK_PATH, fields).status_code == 403
    assert admin.client.post(LOCK_PATH, data=fields).status_code == 400
    assert audit_rows(app, "account_locked") == []
