"""``flask --app tsd_server set-password EMAIL``: an operator gives a compromised account a new
password. Whoever knew the old one, or holds a session of the account, is out: every session
ends, the old password stops working, and what the sessions prepared is withdrawn."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.conftest import CSRF_META
from tests.support.pairing import LOOSE_LIMITS, audit_rows, issue_code, redeem
from tsd_server.extensions import db
from tsd_server.models import User

OLD, NEW = "correct horse battery", "a brand new passphrase"


@pytest.fixture
def app_config():
    return dict(LOOSE_LIMITS)


def run(app, *args: str, stdin: str):
    return app.test_cli_runner().invoke(args=["set-password", *args], input=stdin)


def logged_in(client) -> bool:
    return client.get("/api/v1/devices").status_code == 200


def can_log_in(app, email: str, password: str) -> bool:
    page = app.test_client()
    token = CSRF_META.search(page.get("/login").get_data(as_text=True)).group(1)
    return page.post("/login", data={"email": email, "password": password,
                                     "csrf_token": token}).status_code == 302


def epochs(app) -> dict[str, int]:
    with app.app_context():
        return dict(db.session.execute(select(User.email, User.session_epoch)).all())


def test_set_password_shuts_out_whoever_had_the_old_one(app, client, make_user, login):
    """The attack: the thief knows the password and holds a session, and made a web code
    with it. After set-password the session is gone, the old password logs nobody in, and
    the code links nothing."""
    uid, email, _ = make_user("victim@example.org", password=OLD)
    _, other_email, _ = make_user("other@example.org", password=OLD)
    thief, owner = login(email, OLD, REMOTE_ADDR="6.6.6.6"), login(email, OLD)
    other = login(other_email, OLD)
    code = issue_code(thief)["code"]

    result = run(app, "Victim@Example.org", stdin=f"{NEW}\n{NEW}\n")
    assert result.exit_code == 0, result.output
    assert "New password set for victim@example.org" in result.output
    assert NEW not in result.output  # the prompt does not echo it

    assert not logged_in(thief.client) and not logged_in(owner.client)
    assert logged_in(other.client)  # another account's sessions are untouched
    assert (can_log_in(app, email, OLD), can_log_in(app, email, NEW)) == (False, True)
    late = redeem(client, code, device_id="thief-printer", ip="6.6.6.6")
    assert late.status_code == 400 and late.get_json()["error"] == "invalid_code"
    [changed] = audit_rows(app, "password_changed")
    assert (changed.actor, changed.user_id) == ("cli", uid)
    assert changed.detail == "set by an operator; every session of the account ended"
    [withdrawn] = [row for row in audit_rows(app, "revocation") if row.outcome == "withdrawn"]
    assert (withdrawn.actor, withdrawn.user_id) == ("cli", uid)
    assert withdrawn.detail.endswith(": password set by an operator")


@pytest.mark.parametrize("args, stdin, code, message", [
    (["nobody@example.org"], f"{NEW}\n{NEW}\n", 1, "no account has the email"),
    (["victim@example.org"], "short\nshort\n", 1, "at least 10 characters"),
    (["victim@example.org"], f"{'p' * 201}\n{'p' * 201}\n", 1, "at most 200 characters"),
    (["victim@example.org"], f"{NEW}\n{NEW}x\n", 1, "do not match"),
    (["victim@example.org"], "", 1, "Aborted"),
    (["victim@example.org", "--password", "a\udcffbcdefghijk"], "", 2, "not valid UTF-8"),
    (["victim\udcff@example.org"], f"{NEW}\n{NEW}\n", 2, "not valid UTF-8"),
])
def test_refusals_change_nothing(app, make_user, login, args, stdin, code, message):
    _, email, _ = make_user("victim@example.org", password=OLD)
    session = login(email, OLD)
    before = epochs(app)
    result = run(app, *args, stdin=stdin)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert isinstance(result.exception, SystemExit)  # a message, not a traceback
    assert epochs(app) == before and logged_in(session.client)
    assert (can_log_in(app, email, OLD), can_log_in(app, email, NEW)) == (True, False)
    assert audit_rows(app, "password_changed") == []
