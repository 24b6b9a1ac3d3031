"""Accounts on the web: sign up, log in, log out, CSRF on every form, session cookies,
one generic login failure, safe redirects, and rate limits keyed by the real client address.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from tests.conftest import CSRF_META
from tests.support.sent_statements import SESSION, SINGLE, sent_statements
from tsd_server.auth.views import LOGIN_FAILED
from tsd_server.extensions import db
from tsd_server.models import AuditEvent, User

PASSWORD = "correct horse battery"
PROXY = "10.20.30.40"


@pytest.fixture
def app_config(request):
    return getattr(request, "param", {})


def csrf_of(client, path="/login", **kwargs) -> str:
    page = client.get(path, **kwargs).get_data(as_text=True)
    return CSRF_META.search(page).group(1)


def users(app) -> list[User]:
    with app.app_context():
        return list(db.session.scalars(select(User).order_by(User.id)))


def register(client, email="alice@example.org", password=PASSWORD, confirm=None, **kwargs):
    data = {"email": email, "display_name": "Alice", "password": password,
            "confirm": password if confirm is None else confirm,
            "csrf_token": csrf_of(client, "/register")}
    return client.post("/register", data=data, **kwargs)


def log_in(client, email, password=PASSWORD, next_url=None, **kwargs):
    path = "/login" if next_url is None else f"/login?next={next_url}"
    data = {"email": email, "password": password, "csrf_token": csrf_of(client)}
    return client.post(path, data=data, **kwargs)


def is_logged_in(client, **kwargs) -> bool:
    return client.get("/api/v1/devices", **kwargs).status_code == 200


# --- sign up -------------------------------------------------------------------------------


def test_register_then_log_in(app, client):
    response = register(client, email="  Alice@Example.ORG ")
    assert response.status_code == 302 and response.location == "/login"
    [user] = users(app)
    assert user.email == "alice@example.org"
    assert user.display_name == "Alice"
    assert user.is_admin is False
    # Stored as a werkzeug hash, never the password itself.
    assert PASSWORD not in user.password_hash
    assert user.password_hash.startswith(("scrypt:", "pbkdf2:"))
    assert log_in(client, "ALICE@example.org").status_code == 302
    assert is_logged_in(client)


def test_register_taken_email_looks_like_success(app, client, make_user):
    make_user("alice@example.org", password="the real password 1")
    fresh = register(client, email="bob@example.org")
    taken = register(client, email="Alice@example.org", password="attacker password 2")
    assert (taken.status_code, taken.location) == (fresh.status_code, fresh.location)
    assert len(users(app)) == 2
    # The original password still works; the attacker's does not.
    assert log_in(client, "alice@example.org", "attacker password 2").status_code == 400
    assert log_in(client, "alice@example.org", "the real password 1").status_code == 302


def test_the_same_email_signing_up_at_the_same_moment_is_no_500(app, client):
    """Both sign-ups find the email free; the unique index lets one in. The other gets the
    answer a taken email gets (not a 500), and nothing of it is kept."""
    from sqlalchemy import event, insert
    from sqlalchemy.orm import Session
    from werkzeug.security import generate_password_hash

    from tsd_server.clock import utcnow

    def first_sign_up_lands(session, _context, _instances) -> None:
        if inserted or not any(isinstance(o, User) for o in session.new):
            return
        inserted.append(True)
        with db.engine.connect() as conn:
            conn.execute(insert(User).values(
                email="alice@example.org", display_name="First", is_admin=False,
                password_hash=generate_password_hash("the first password"),
                created_at=utcnow()))
            conn.commit()

    inserted: list[bool] = []
    fresh = register(client, email="bob@example.org")
    event.listen(Session, "before_flush", first_sign_up_lands)
    try:
        second = register(client, email="alice@example.org", password="the second password")
    finally:
        event.remove(Session, "before_flush", first_sign_up_lands)
    assert inserted
    assert (second.status_code, second.location) == (fresh.status_code, fresh.location)
    assert sorted(u.email for u in users(app)) == ["alice@example.org", "bob@example.org"]
    assert log_in(client, "alice@example.org", "the second password").status_code == 400
    assert log_in(client, "alice@example.org", "the first password").status_code == 302


@pytest.mark.parametrize("email, password, confirm", [
    ("alice@example.org", "short", "short"),
    ("alice@example.org", PASSWORD, PASSWORD + "x"),
    ("not-an-email", PASSWORD, PASSWORD),
    ("", PASSWORD, PASSWORD),
    ("a" * 250 + "@example.org", PASSWORD, PASSWORD),
])
def test_register_rejects_bad_input(app, client, email, password, confirm):
    response = register(client, email=email, password=password, confirm=confirm)
    assert response.status_code == 400
    assert 'class="error"' in response.get_data(as_text=True)
    assert users(app) == []


def test_register_without_csrf_token_is_refused(app, client):
    client.get("/register")
    response = client.post("/register", data={
        "email": "alice@example.org", "display_name": "Alice", "password": PASSWORD,
        "confirm": PASSWORD})
    assert response.status_code == 400
    assert users(app) == []


@pytest.mark.parametrize("app_config", [{"REGISTRATION_OPEN": False}], indirect=True)
def test_registration_closed(app, client):
    assert client.get("/register").status_code == 403
    assert register_closed_post(client).status_code == 403
    assert users(app) == []


def register_closed_post(client):
    token = csrf_of(client, "/login")
    return client.post("/register", data={"email": "alice@example.org", "display_name": "A",
                                          "password": PASSWORD, "confirm": PASSWORD,
                                          "csrf_token": token})


# --- log in, log out -----------------------------------------------------------------------


def test_login_failures_are_one_generic_answer(app, client, make_user):
    make_user("alice@example.org")
    wrong_password = log_in(client, "alice@example.org", "not the password")
    unknown_email = log_in(client, "nobody@example.org", "not the password")

    def normalised(response):
        text = response.get_data(as_text=True)
        text = CSRF_META.sub("", text)
        text = re.sub(r'name="csrf_token" type="hidden" value="[^"]*"', "", text)
        return text.replace("nobody@example.org", "EMAIL").replace("alice@example.org", "EMAIL")

    assert wrong_password.status_code == unknown_email.status_code == 400
    assert LOGIN_FAILED in wrong_password.get_data(as_text=True)
    assert normalised(wrong_password) == normalised(unknown_email)
    assert not is_logged_in(client)
    with app.app_context():
        failures = db.session.scalar(select(func.count()).select_from(AuditEvent)
                                     .where(AuditEvent.event == "login_failed"))
    assert failures == 2


def test_every_login_is_audited_with_its_account_and_address(app, client, make_user):
    """After a compromise the log must show where the account was entered from, and a
    guessing run against it; an unknown email's failure names no account."""
    user_id, email, _ = make_user("alice@example.org")
    log_in(client, email, "not the password", environ_base={"REMOTE_ADDR": "8.8.8.8"})
    log_in(client, "nobody@example.org", "not the password",
           environ_base={"REMOTE_ADDR": "8.8.8.8"})
    assert log_in(client, email, PASSWORD,
                  environ_base={"REMOTE_ADDR": "9.9.9.9"}).status_code == 302
    with app.app_context():
        rows = db.session.execute(select(AuditEvent.event, AuditEvent.user_id,
                                         AuditEvent.actor, AuditEvent.client_ip)
                                  .where(AuditEvent.event.in_(("login", "login_failed")))
                                  .order_by(AuditEvent.id)).all()
    assert [tuple(row) for row in rows] == [
        ("login_failed", user_id, "anonymous", "8.8.8.8"),
        ("login_failed", None, "anonymous", "8.8.8.8"),
        ("login", user_id, f"user:{user_id}", "9.9.9.9"),
    ]


def test_login_without_csrf_token_is_refused(client, make_user):
    _, email, password = make_user()
    client.get("/login")
    response = client.post("/login", data={"email": email, "password": password})
    assert response.status_code == 400
    assert not is_logged_in(client)


def test_login_with_another_sessions_csrf_token_is_refused(app, client, make_user):
    _, email, password = make_user()
    foreign_token = csrf_of(app.test_client())
    client.get("/login")
    response = client.post("/login", data={"email": email, "password": password,
                                           "csrf_token": foreign_token})
    assert response.status_code == 400
    assert not is_logged_in(client)


def test_logout_needs_post_and_csrf(client, make_user):
    _, email, password = make_user()
    log_in(client, email, password)
    assert client.get("/logout").status_code == 405
    assert client.post("/logout").status_code == 400  # no CSRF token: a forged cross-site form
    assert is_logged_in(client)
    response = client.post("/logout", data={"csrf_token": csrf_of(client, "/")})
    assert response.status_code == 302 and response.location == "/login"
    assert not is_logged_in(client)


def test_pages_and_api_need_a_session(client):
    page = client.get("/")
    assert page.status_code == 302 and page.location.startswith("/login?next=")
    api = client.get("/api/v1/devices")
    assert api.status_code == 401
    assert api.get_json()["error"] == "login_required"


@pytest.mark.parametrize("target, expected", [
    ("/printers/add", "/printers/add"),
    ("/?tab=1", "/?tab=1"),
    ("//evil.example/", "/"),
    ("/\\evil.example", "/"),
    ("https://evil.example/", "/"),
    ("javascript:alert(1)", "/"),
    ("/%0d%0aSet-Cookie:x=1", "/%0d%0aSet-Cookie:x=1"),  # stays a path on this site
    ("evil.example", "/"),
])
def test_login_redirects_only_to_this_site(client, make_user, target, expected):
    _, email, password = make_user()
    response = client.post("/login", query_string={"next": target}, data={
        "email": email, "password": password, "csrf_token": csrf_of(client)})
    assert response.status_code == 302
    assert response.location == expected


def test_is_admin_flag(app, make_user):
    make_user("admin@example.org", is_admin=True)
    make_user("user@example.org")
    assert [(u.email, u.is_admin) for u in users(app)] == [
        ("admin@example.org", True), ("user@example.org", False)]


# --- session cookies -----------------------------------------------------------------------


def session_cookie_header(response) -> str:
    """The session cookie's Set-Cookie: ``session`` over http, ``__Host-session`` when
    Secure (tsd_server.SessionInterface)."""
    [header] = [h for h in response.headers.getlist("Set-Cookie")
                if h.startswith(("session=", "__Host-session="))]
    assert header.startswith("__Host-") == ("Secure" in header), header
    return header


def test_session_cookie_flags_over_http(client, make_user):
    _, email, password = make_user()
    header = session_cookie_header(log_in(client, email, password))
    assert "HttpOnly" in header
    assert "SameSite=Lax" in header
    assert "Secure" not in header


def test_session_cookie_is_secure_over_https(client, make_user):
    _, email, password = make_user()
    https = {"base_url": "https://localhost"}
    token = csrf_of(client, **https)
    response = client.post("/login", data={"email": email, "password": password,
                                           "csrf_token": token},
                           headers={"Referer": "https://localhost/login"}, **https)
    assert response.status_code == 302
    header = session_cookie_header(response)
    assert "Secure" in header and "HttpOnly" in header and "SameSite=Lax" in header


BEHIND_TLS_PROXY = {"PROXY_FIX_X_FOR": 1, "PROXY_FIX_X_PROTO": 1,
                    "TRUSTED_PROXIES": f"{PROXY}/32"}


@pytest.mark.parametrize("app_config", [BEHIND_TLS_PROXY], indirect=True)
@pytest.mark.parametrize("peer, secure", [(PROXY, True), ("8.8.8.8", False)])
def test_session_cookie_secure_from_forwarded_proto_only_via_trusted_proxy(
        client, make_user, peer, secure):
    _, email, password = make_user()
    environ = {"REMOTE_ADDR": peer, "HTTP_X_FORWARDED_FOR": "9.9.9.9",
               "HTTP_X_FORWARDED_PROTO": "https"}
    token = csrf_of(client, environ_base=environ)
    response = client.post("/login", data={"email": email, "password": password,
                                           "csrf_token": token},
                           headers={"Referer": "https://localhost/login"}, environ_base=environ)
    assert response.status_code == 302
    assert ("Secure" in session_cookie_header(response)) is secure


# --- rate limits follow the resolved client address ------------------------------------------


def failed_login(client, **environ):
    token = csrf_of(client, environ_base=environ)
    return client.post("/login", data={"email": "x@example.org", "password": "wrong password",
                                       "csrf_token": token}, environ_base=environ)


def test_forged_forwarded_header_does_not_escape_the_login_limit(app, client):
    # 20 per 10 minutes per client address; each attempt claims a different address.
    statuses = [failed_login(client, REMOTE_ADDR="8.8.8.8", HTTP_X_FORWARDED_FOR=f"1.1.1.{i}")
                .status_code for i in range(21)]
    assert statuses[:20] == [400] * 20
    assert statuses[20] == 429
    # Someone else, really elsewhere, is not locked out.
    assert failed_login(app.test_client(), REMOTE_ADDR="9.9.9.9").status_code == 400


@pytest.mark.parametrize("app_config", [BEHIND_TLS_PROXY], indirect=True)
def test_clients_behind_a_trusted_proxy_have_their_own_limits(app):
    client = app.test_client()
    for _ in range(20):
        failed_login(client, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="8.8.8.8")
    assert failed_login(client, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="8.8.8.8"
                        ).status_code == 429
    assert failed_login(app.test_client(), REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="9.9.9.9"
                        ).status_code == 400


def test_addresses_of_one_ipv6_64_share_the_login_limit(app, client):
    # One host usually holds a whole /64: rotating the interface id must not reset the limit.
    statuses = [failed_login(client, REMOTE_ADDR=f"2001:4860:4860::{i:x}").status_code
                for i in range(1, 22)]
    assert statuses[:20] == [400] * 20
    assert statuses[20] == 429
    # The neighbouring /64 is someone else.
    assert failed_login(app.test_client(), REMOTE_ADDR="2001:4860:4861::1").status_code == 400


def test_a_service_error_on_a_page_is_an_html_page(app, client):
    from tsd_server.api.errors import ApiError

    @app.get("/raise-api-error-on-a-page")
    def raising_page():
        raise ApiError(429, "rate_limited", "Wait a minute.", retry_after=60)

    response = client.get("/raise-api-error-on-a-page")
    assert response.status_code == 429
    assert response.mimetype == "text/html"
    assert "Wait a minute." in response.get_data(as_text=True)


def test_the_session_user_is_read_without_opening_a_transaction(app, make_user):
    """Flask-Login's loader reads the user in one statement on its own; the ORM session
    holds it as loaded without touching its connection, and changes are still written."""
    from tsd_server.auth.accounts import session_user

    user_id, email, _ = make_user(display_name="Alice")
    with app.test_request_context(), sent_statements(app) as sent:
        user = session_user(f"{user_id}:0")
        assert session_user(f"{user_id}:0") is user  # the identity map answers again
        db.session.remove()
    assert user is not None and user.email == email and user.display_name == "Alice"
    assert sent == {SESSION: [], SINGLE: ["SELECT"]}
    with app.test_request_context():
        user = session_user(f"{user_id}:0")
        assert user in db.session and user not in db.session.dirty
        user.display_name = "Alice B."
        db.session.commit()
    with app.app_context():
        assert db.session.get(User, user_id).display_name == "Alice B."


@pytest.mark.parametrize("session_id", [
    "0:0", "999999:0", "12a:0", "", ":", "-1:0", "9" * 40 + ":0",
    "{id}", "{id}:", "{id}:x", "{id}:-1", "{id}:\u00b2", "\u00b9:0", "{id}:1", "{id}:0:0",
    "{id}:" + "0" * 40])
def test_no_session_user_for_unknown_or_malformed_ids(app, make_user, session_id):
    """Unknown users, junk, a cookie of the release before epochs ("{id}" alone), and an
    epoch other than the account's current one (0 for a new account) log nobody in."""
    from tsd_server.auth.accounts import session_user

    user_id, _, _ = make_user()
    with app.test_request_context():
        assert session_user(f"{user_id}:0") is not None
        db.session.remove()
        assert session_user(session_id.format(id=user_id)) is None
