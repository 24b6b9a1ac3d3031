"""Changing the password: the current one first, every other session ends, this browser stays
logged in, failures change nothing, and guesses at the current password are limited."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.conftest import CSRF_META
from tsd_server.extensions import db
from tsd_server.models import AuditEvent

OLD, NEW = "correct horse battery", "a brand new passphrase"
PATH = "/account/password"


def change(session, current: str = OLD, new: str = NEW, confirm: str | None = None):
    return session.form_post(PATH, {"current": current, "password": new,
                                    "confirm": new if confirm is None else confirm})


def logged_in(client) -> bool:
    return client.get("/api/v1/devices").status_code == 200


def audit_events(app, event: str) -> list[AuditEvent]:
    with app.app_context():
        rows = db.session.scalars(select(AuditEvent).where(AuditEvent.event == event)).all()
        for row in rows:
            db.session.expunge(row)
        return rows


def can_log_in(app, email: str, password: str) -> bool:
    page = app.test_client()
    token = CSRF_META.search(page.get("/login").get_data(as_text=True)).group(1)
    return page.post("/login", data={"email": email, "password": password,
                                     "csrf_token": token}).status_code == 302


def test_change_ends_every_other_session_and_keeps_this_one(app, make_user, login):
    uid, email, _ = make_user()
    here, elsewhere = login(email, OLD), login(email, OLD)
    copied = app.test_client()  # a copy of this browser's cookie from before the change
    copied.set_cookie("session", here.client.get_cookie("session").value)
    assert logged_in(copied)

    answer = change(here)
    assert answer.status_code == 302 and answer.location == "/"
    assert "Password changed" in here.get("/").get_data(as_text=True)
    assert logged_in(here.client)
    assert not logged_in(elsewhere.client) and not logged_in(copied)
    assert (can_log_in(app, email, OLD), can_log_in(app, email, NEW)) == (False, True)
    [row] = audit_events(app, "password_changed")
    assert (row.actor, row.user_id) == (f"user:{uid}", uid)


@pytest.mark.parametrize("fields, field_error", [
    ({"current": "not my password"}, "The current password is not right."),
    ({"new": "short", "confirm": "short"}, "Field must be between 10 and 200 characters"),
    ({"confirm": NEW + "x"}, "Passwords differ."),
    ({"current": ""}, "Type the password you log in with now."),
])
def test_a_refused_change_changes_nothing(app, make_user, login, fields, field_error):
    _, email, _ = make_user()
    here, elsewhere = login(email, OLD), login(email, OLD)
    answer = change(here, **fields)
    assert answer.status_code == 400
    assert field_error in answer.get_data(as_text=True)
    assert logged_in(here.client) and logged_in(elsewhere.client)
    assert (can_log_in(app, email, OLD), can_log_in(app, email, NEW)) == (True, False)
    assert audit_events(app, "password_changed") == []


def test_a_wrong_current_password_is_audited(app, make_user, login):
    uid, email, _ = make_user()
    change(login(email, OLD), current="a guess at it")
    [row] = audit_events(app, "password_change_failed")
    assert (row.actor, row.user_id, row.outcome) == (f"user:{uid}", uid, "refused")
    assert "a guess at it" not in str(row.detail)


def test_without_the_csrf_token_or_a_session_nothing_changes(app, client, make_user, login):
    _, email, _ = make_user()
    here = login(email, OLD)
    refused = here.client.post(PATH, data={"current": OLD, "password": NEW, "confirm": NEW})
    assert refused.status_code == 400
    away = client.get(PATH)
    assert away.status_code == 302 and away.location.startswith("/login")
    assert can_log_in(app, email, OLD)


def test_guesses_at_the_current_password_are_limited_per_account(app, make_user, login):
    """A stolen session cannot try passwords without end, even from many addresses."""
    _, email, _ = make_user()
    answers = [change(login(email, OLD, REMOTE_ADDR=f"8.8.{i}.1"), current=f"guess {i}")
               for i in range(11)]
    assert [a.status_code for a in answers] == [400] * 10 + [429]
    # The limit is the account's: another account is not held up by it.
    _, other, _ = make_user()
    assert change(login(other, OLD, REMOTE_ADDR="8.8.0.1"), current="x").status_code == 400


def test_the_page_is_linked_from_every_page_of_a_logged_in_user(make_user, login):
    _, email, _ = make_user()
    here = login(email, OLD)
    assert f'href="{PATH}"' in here.get("/").get_data(as_text=True)
    assert here.get(PATH).status_code == 200
