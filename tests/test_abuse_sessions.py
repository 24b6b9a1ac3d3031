"""Abuse of sessions and accounts: fixation, stale CSRF tokens, cookie writes without CSRF,
open redirects through ``next=``, and telling who has an account."""

from __future__ import annotations

import json
import re
from urllib.parse import urljoin, urlsplit

import pytest
from werkzeug import security

from tests.support.ip_match_world import CSRF_META, fast_user_factory
from tests.support.pairing import LOOSE_LIMITS, authorize, decide, poll
from tsd_server.api import openapi

CSRF_FIELD = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
HOST = "localhost"


@pytest.fixture
def app_config():
    return dict(LOOSE_LIMITS)


def csrf_of(client, path: str = "/login") -> str:
    return CSRF_META.search(client.get(path).get_data(as_text=True)).group(1)


def log_in(client, email: str, password: str, **kwargs):
    return client.post("/login", data={"email": email, "password": password,
                                       "csrf_token": csrf_of(client)}, **kwargs)


def cookie(client) -> str | None:
    found = client.get_cookie("session")
    return found.value if found else None


def session_of(app, value: str) -> dict:
    """What a session cookie holds (it is signed, not encrypted)."""
    serializer = app.session_interface.get_signing_serializer(app)
    return serializer.loads(value)


def logged_in(client) -> bool:
    return client.get("/api/v1/devices").status_code == 200


# --- session fixation --------------------------------------------------------------------

def test_a_session_planted_before_login_is_not_the_session_after_it(app, make_user):
    _, email, password = make_user()
    attacker = app.test_client()
    attacker.get("/login")
    planted = cookie(attacker)
    planted_content = session_of(app, planted)
    assert "csrf_token" in planted_content and "_user_id" not in planted_content

    victim = app.test_client()
    victim.set_cookie("session", planted)
    assert log_in(victim, email, password).status_code == 302
    after = cookie(victim)
    assert after != planted
    content = session_of(app, after)
    assert content.get("_user_id") and content.get("_id")
    assert content.get("csrf_token") != planted_content["csrf_token"]

    # The attacker's copy of the pre-login cookie still grants nothing.
    assert not logged_in(attacker)
    replay = app.test_client()
    replay.set_cookie("session", planted)
    assert not logged_in(replay)
    assert replay.get("/").status_code == 302


def test_a_planted_approval_binding_does_not_survive_the_victims_login(app, client, make_user,
                                                                       login):
    """The attacker enters their own printer's code, then plants that cookie in a victim's
    browser hoping the victim approves it after logging in: login drops the binding."""
    _, attacker_email, password = make_user()
    _, victim_email, _ = make_user()
    user_code = authorize(client).get_json()["user_code"]
    attacker = login(attacker_email, password)
    assert attacker.form_post("/link", {"code": user_code}).status_code == 302
    binding = cookie(attacker.client)
    assert "tsd_link" in session_of(app, binding)

    victim = app.test_client()
    victim.set_cookie("session", binding)
    assert log_in(victim, victim_email, password).status_code == 302
    assert "tsd_link" not in session_of(app, cookie(victim))
    assert victim.get("/link/confirm").status_code == 404


def test_a_tampered_session_cookie_is_ignored(app, make_user):
    """A changed signature, a changed payload, another account's id signed with another
    key, junk in front, nothing: none logs anyone in. (Each is checked to differ from the
    real cookie: a replacement that found nothing to replace would test nothing.)"""
    from flask import Flask

    _, email, password = make_user()
    other_id, _, _ = make_user()
    client = app.test_client()
    log_in(client, email, password)
    value = cookie(client)
    payload, _, signature = value.rpartition(".")
    last = payload[-1]
    elsewhere = Flask("elsewhere")
    elsewhere.secret_key = "another key of at least 32 characters"
    signed_elsewhere = elsewhere.session_interface.get_signing_serializer(elsewhere).dumps(
        {"_user_id": f"{other_id}:0", "_fresh": True})
    forged = app.test_client()
    for bad in (payload + "." + signature[::-1],
                payload[:-1] + ("B" if last == "A" else "A") + "." + signature,
                signed_elsewhere, "x" + value, ""):
        assert bad != value
        forged.set_cookie("session", bad)
        assert not logged_in(forged), bad


# --- logout --------------------------------------------------------------------------------

def log_out(client) -> None:
    answer = client.post("/logout", data={"csrf_token": csrf_of(client, "/")})
    assert answer.status_code == 302


def test_a_copied_session_cookie_is_refused_after_logout(app, make_user):
    """Whoever copied the cookie (a shared computer, a leaked backup) loses it at logout."""
    _, email, password = make_user()
    owner = app.test_client()
    log_in(owner, email, password)
    stolen = cookie(owner)
    thief = app.test_client()
    thief.set_cookie("session", stolen)
    assert logged_in(thief)

    log_out(owner)
    thief.set_cookie("session", stolen)
    assert not logged_in(thief)
    page = thief.get("/")
    assert page.status_code == 302 and page.location.startswith("/login")
    refused = thief.get("/api/v1/discovery/nearby")
    assert refused.status_code == 401 and refused.get_json()["error"] == "login_required"


def test_logging_out_ends_every_session_of_the_account_and_a_new_login_works(app, make_user):
    _, email, password = make_user()
    _, other_email, other_password = make_user()
    laptop, phone, someone_else = app.test_client(), app.test_client(), app.test_client()
    for client, (address, secret) in ((laptop, (email, password)), (phone, (email, password)),
                                      (someone_else, (other_email, other_password))):
        assert log_in(client, address, secret).status_code == 302
    old_phone_cookie = cookie(phone)

    log_out(laptop)
    assert not logged_in(laptop) and not logged_in(phone)
    assert logged_in(someone_else)  # another account's sessions are untouched

    assert log_in(phone, email, password).status_code == 302
    assert logged_in(phone)
    replay = app.test_client()
    replay.set_cookie("session", old_phone_cookie)
    assert not logged_in(replay)  # logging in again does not revive the old cookie


def test_a_session_cookie_from_before_session_epochs_logs_nobody_in(app, make_user):
    """A cookie signed with the right key but naming the bare user id (the format before
    migration 0005) is not a session: after that upgrade everyone logs in once more."""
    user_id, email, password = make_user()
    client = app.test_client()
    log_in(client, email, password)
    current = session_of(app, cookie(client))
    assert current["_user_id"] == f"{user_id}:0"
    serializer = app.session_interface.get_signing_serializer(app)
    client.set_cookie("session", serializer.dumps({**current, "_user_id": str(user_id)}))
    assert not logged_in(client)


# --- stale CSRF tokens --------------------------------------------------------------------

def test_approving_with_a_stale_csrf_token_is_refused(app, client, make_user, login):
    """Logging out and in again rotates the token: the old one approves nothing."""
    _, email, password = make_user()
    started = authorize(client).get_json()
    person = login(email, password)
    stale = person.csrf
    assert person.form_post("/logout", {}).status_code == 302
    assert log_in(person.client, email, password).status_code == 302
    person.refresh_csrf()
    assert person.csrf != stale
    assert person.form_post("/link", {"code": started["user_code"]}).status_code == 302

    refused = person.client.post("/link/confirm", data={"decision": "approve",
                                                        "csrf_token": stale})
    assert refused.status_code == 400
    assert poll(client, started["device_code"]).get_json()["error"] == "authorization_pending"
    api = person.client.post("/api/v1/pairing/codes", headers={"X-CSRFToken": stale})
    assert api.status_code == 400 and api.get_json()["error"] == "csrf_failed"

    approved = decide(person, "approve")
    assert approved.status_code == 302
    assert poll(client, started["device_code"]).status_code == 200


def test_another_sessions_csrf_token_is_refused(app, make_user, login):
    _, email, password = make_user()
    mine, theirs = login(email, password), login(email, password)
    response = mine.client.post("/api/v1/pairing/codes", headers={"X-CSRFToken": theirs.csrf})
    assert response.status_code == 400 and response.get_json()["error"] == "csrf_failed"


def cookie_writes() -> list[tuple[str, str]]:
    """Every cookie-authenticated write of the API, from the OpenAPI document."""
    document = json.loads(openapi.DOCUMENT.read_text())
    values = {"device_id": "printer-0001", "offer_id": "o" * 32, "device_pk": "1"}
    return [(method.upper(), re.sub(r"{(\w+)}", lambda m: values[m.group(1)], path))
            for path, item in document["paths"].items() for method, op in item.items()
            if {"sessionCookie", "csrfToken"} <= {n for r in op["security"] for n in r}]


@pytest.mark.parametrize("method, path", cookie_writes())
def test_every_cookie_write_needs_the_sessions_csrf_token(app, login, link_device, method,
                                                          path):
    user_id, email, password = fast_user_factory(app)("Writer")
    link_device(user_id)  # device pk 1 exists and is theirs
    person = login(email, password, REMOTE_ADDR="8.8.8.8")
    stale = person.csrf
    log_in(person.client, email, password)  # a second login: fresh session, fresh token
    person.refresh_csrf()
    body = {"code": "123456"}
    attempts = {
        "no cookie, no token": app.test_client().open(path, method=method, json=body),
        "cookie, no token": person.client.open(path, method=method, json=body),
        "cookie, stale token": person.client.open(path, method=method, json=body,
                                                  headers={"X-CSRFToken": stale}),
        "cookie, token in the body": person.client.open(
            path, method=method, json={**body, "csrf_token": person.csrf}),
    }
    for name, response in attempts.items():
        assert response.status_code == 400, (name, response.get_data(as_text=True))
        assert response.get_json()["error"] == "csrf_failed", name
    assert logged_in(person.client)
    assert len(person.get("/api/v1/devices").get_json()["devices"]) == 1  # nothing unlinked


# --- open redirects -----------------------------------------------------------------------

REDIRECT_PAYLOADS = [
    "//evil.example", "//evil.example/%2F..", "///evil.example", "////evil.example",
    "/\\evil.example", "\\\\evil.example", "/\\/evil.example", "\\/evil.example",
    "https:evil.example", "https:/evil.example", "https://evil.example", "http:\\\\evil.example",
    "HTTPS://evil.example", "%2F%2Fevil.example", "/%2F%2Fevil.example", "%2F%5Cevil.example",
    "/%5Cevil.example", "/%09/evil.example", "/\t/evil.example", "/\n/evil.example",
    "/\r\n/evil.example", " //evil.example", "\t//evil.example", "javascript:alert(1)",
    "JaVaScRiPt:alert(1)", "java\tscript:alert(1)", "data:text/html,<script>x</script>",
    "evil.example", "@evil.example", "/@evil.example", "//evil.example@localhost",
    "//localhost@evil.example", "/.//evil.example", "/..//evil.example", "//\u3002evil",
    "/\u2215evil.example", "//%65vil.example", "/\x00/evil.example", "?next=//evil.example",
]


def browser_target(location: str) -> tuple[str, str]:
    """Where a browser goes: WHATWG URL parsing drops tabs and newlines and reads "\\" as
    "/" in http(s) URLs; the result is resolved against the login page."""
    cleaned = re.sub(r"[\t\n\r]", "", location).replace("\\", "/").strip("\x00 ")
    target = urlsplit(urljoin(f"http://{HOST}/login", cleaned))
    return target.scheme, target.netloc


@pytest.mark.parametrize("payload", REDIRECT_PAYLOADS)
def test_next_never_leaves_the_site(app, payload):
    _, email, password = fast_user_factory(app)("Redirected")
    client = app.test_client()
    response = log_in(client, email, password, query_string={"next": payload})
    if "\x00" in payload:  # refused before the view (tsd_server/request_guard.py)
        assert response.status_code == 400 and "Location" not in response.headers
        return
    assert response.status_code == 302
    assert browser_target(response.headers["Location"]) == ("http", HOST)


def test_next_pointing_inside_the_site_is_kept(app, make_user):
    _, email, password = make_user()
    response = log_in(app.test_client(), email, password,
                      query_string={"next": "/printers/add?tab=qr"})
    assert response.headers["Location"] == "/printers/add?tab=qr"


# --- telling who has an account -------------------------------------------------------------

def normalised(response, *secrets_shown: str) -> tuple[int, str | None, str]:
    """Status, redirect and page with the per-request parts (CSRF tokens, the typed email)
    blanked, for comparing the answers to two people."""
    page = response.get_data(as_text=True)
    page = CSRF_META.sub("", CSRF_FIELD.sub("", page))
    for shown in secrets_shown:
        page = page.replace(shown, "EMAIL")
    return response.status_code, response.headers.get("Location"), page


def register(client, email: str, **environ):
    token = csrf_of(client, "/register")
    return client.post("/register", environ_base=environ, data={
        "email": email, "display_name": "Somebody", "password": "some password 123",
        "confirm": "some password 123", "csrf_token": token})


def test_sign_up_answers_alike_for_taken_and_free_emails(app, make_user):
    make_user("taken@example.org")
    answers = []
    for email in ("taken@example.org", "free@example.org"):
        client = app.test_client()
        response = register(client, email)
        followed = client.get(response.headers["Location"])
        answers.append((normalised(response, email), normalised(followed, email)))
    assert answers[0] == answers[1]


def test_sign_up_does_the_same_hashing_work_for_taken_and_free_emails(app, make_user,
                                                                       monkeypatch):
    """The residual timing difference is a database insert, not a password hash."""
    make_user("taken@example.org")
    calls = []
    real = security.generate_password_hash
    monkeypatch.setattr("tsd_server.models.user.generate_password_hash",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    for email in ("taken@example.org", "free@example.org"):
        calls.clear()
        register(app.test_client(), email)
        assert len(calls) == 1, email


def test_login_answers_alike_for_unknown_emails_and_wrong_passwords(app, make_user):
    make_user("known@example.org", password="the right password")
    answers = []
    for email in ("known@example.org", "unknown@example.org"):
        response = log_in(app.test_client(), email, "a wrong password")
        answers.append(normalised(response, email))
    assert answers[0] == answers[1]
    assert answers[0][0] == 400
