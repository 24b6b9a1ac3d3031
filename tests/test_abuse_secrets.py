"""Abuse: secrets never travel in URLs and never reach a log.

Every way of linking runs end to end (ip_match with its confirmation code, a web pairing
code, the device flow with a typed user code, a QR link), each device then uses its access
token, and the refusals an attacker would cause happen too (a replayed QR link, a wrong
token). Every secret seen on the wire -- access tokens, the device secret, device codes,
user and pairing codes, the QR token and the confirmation code -- is then looked for in
every log record of the process (in-process, at DEBUG, with SQLAlchemy's statement log on,
so no raw secret reaches the database either), and in everything gunicorn wrote: its error
log, the app's log and the access log in the project's own gunicorn.conf.py format.
"""

from __future__ import annotations

import logging
import re
import runpy
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from tests.support import servers
from tests.support.apps import another_app
from tests.support.ip_match_world import (
    CSRF_META,
    DIRECT,
    HttpEndpoint,
    InProcessEndpoint,
    World,
    layout_direct,
)
from tests.support.pairing import FRESH_SCAN, LOOSE_LIMITS, decide, shown_request
from tests.test_database_outage import CSRF_FIELD
from tests.test_database_timeout import held

ROOT = Path(__file__).resolve().parent.parent
HOME = "127.0.0.2"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
SETTINGS = {**LOOSE_LIMITS, **DIRECT}


@pytest.fixture
def app_config():
    return dict(SETTINGS)


def every_link_flow(world: World) -> dict[str, str]:
    """Link four printers, one per way, and use every token; returns the secrets seen."""
    seen: dict[str, str] = {}
    person = world.person(HOME)
    web = person.endpoint
    csrf = {"X-CSRFToken": person.csrf}

    # ip_match: announce (device secret), pick, code shown on the printer, confirm, token.
    printer = world.printer(HOME)
    assert printer.announce().status == 200
    offer = person.link(printer.device_id)
    shown = printer.announce().json
    code = shown["confirmation"]["code"]
    assert person.confirm(offer.json["offer_id"], code).json == {"status": "confirmed"}
    assert printer.announce().json["status"] == "linked"
    seen.update(device_secret=printer.secret, confirmation_code=code,
                ip_match_token=printer.access_token)

    device = world.endpoint(HOME)  # a device's own connection, no cookies
    # A code the web shows, redeemed by a device.
    issued = web.request("POST", "/api/v1/pairing/codes", headers=csrf).json["code"]
    redeemed = device.request("POST", "/api/v1/pairing/redeem", json={
        "code": issued, "device_id": "printer-web-code", "name": "Web code printer"})
    assert redeemed.status == 201, redeemed.body
    seen.update(pairing_code=issued, pairing_token=redeemed.json["access_token"])

    # The device flow with the user code typed on /link, then the one with the QR link.
    for way in ("user_code", "qr"):
        started = device.request("POST", "/api/v1/device/authorize", json={
            "device_id": f"printer-{way.replace('_', '-')}", "name": f"{way} printer"}).json
        qr_token = started["verification_uri_complete"].rsplit("/", 1)[1]
        if way == "user_code":
            entered = web.request("POST", "/link", data={"code": started["user_code"],
                                                          "csrf_token": person.csrf})
        else:
            entered = web.request("GET", f"/link/qr/{qr_token}", headers=FRESH_SCAN)
        assert entered.status in (200, 302), entered.body
        shown = shown_request(web.request("GET", "/link/confirm").body)
        decided = web.request("POST", "/link/confirm", data={
            "decision": "approve", "authorization": shown, "csrf_token": person.csrf})
        assert decided.status == 302, decided.body
        token = device.request("POST", "/api/v1/device/token", json={
            "device_code": started["device_code"], "grant_type": GRANT_TYPE})
        assert token.status == 200, token.body
        seen.update({f"{way}_device_code": started["device_code"],
                     f"{way}_user_code": started["user_code"],
                     f"{way}_qr_token": qr_token,
                     f"{way}_token": token.json["access_token"]})

    # What an attacker who saw a secret would try: replays and URL placements.
    assert web.request("GET", f"/link/qr/{seen['qr_qr_token']}", headers=FRESH_SCAN
                       ).status == 400
    assert device.request("POST", "/api/v1/device/token", json={
        "device_code": seen["qr_device_code"]}).json["error"] == "invalid_grant"
    assert device.request("GET", f"/api/v1/device/me?access_token={seen['pairing_token']}"
                          ).status == 401
    for name in ("ip_match_token", "pairing_token", "user_code_token", "qr_token"):
        me = device.request("GET", "/api/v1/device/me",
                            headers={"Authorization": f"Bearer {seen[name]}"})
        assert me.status == 200, (name, me.body)
    assert device.request("GET", "/api/v1/device/me", headers={
        "Authorization": "Bearer tsd_at_" + secrets.token_urlsafe(32)}).status == 401
    return seen


# Any run of this many characters of a long random secret counts as a leak (60 bits of
# base64: no log line has it by chance), so a log of "the last few characters" is caught.
WINDOW = 10


def patterns(value: str) -> list[re.Pattern[str]]:
    """How a secret could appear in a log: in part, without the dash, in any case."""
    if len(value) > 20:
        random_part = value.removeprefix("tsd_at_").removeprefix("tsd_dc_")
        return [re.compile(re.escape(random_part[i:i + WINDOW]))
                for i in range(len(random_part) - WINDOW + 1)]
    forms = {value, value.replace("-", "")}
    # Short codes: not inside a longer run of letters/digits (or a decimal like 0.000123s).
    return [re.compile(rf"(?<![\w.]){re.escape(form)}(?!\w)", re.IGNORECASE) for form in forms]


def leaks(text: str, seen: dict[str, str]) -> list[str]:
    return [name for name, value in seen.items()
            if any(pattern.search(text) for pattern in patterns(value))]


def test_no_secret_reaches_any_log_record_in_process(app, caplog):
    # SQLAlchemy's statement log first: each call also sets the capture handler's level.
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")  # statements and parameters
    caplog.set_level(logging.DEBUG)
    world = World(app, lambda home: InProcessEndpoint(app, home, layout_direct))
    seen = every_link_flow(world)
    assert len(seen) == 13 and all(seen.values())
    logged = "\n".join(f"{record.name} {record.getMessage()} {record.exc_text or ''}"
                       for record in caplog.records)
    assert "INSERT INTO devices" in logged and "announcements" in logged  # it did log
    assert leaks(logged, seen) == []


def test_no_secret_reaches_gunicorn_logs_or_its_access_log(app, database, tmp_path,
                                                           monkeypatch):
    # gunicorn's own debug level too, which an operator turns on in trouble.
    monkeypatch.setenv("GUNICORN_CMD_ARGS", "--log-level debug")
    with servers.gunicorn(tmp_path / "gunicorn", database_url=database, workers=1,
                          settings={**SETTINGS, "LOG_LEVEL": "DEBUG"}) as server:
        world = World(app, lambda home: HttpEndpoint(server.base_url, home))
        seen = every_link_flow(world)
    logged = server.log_path.read_text(errors="replace")
    assert '"GET /link/qr/[redacted]" 200' in logged  # the access log was written
    assert '"POST /api/v1/device/token" 200' in logged
    assert "[DEBUG] GET /link/qr/[redacted]" in logged  # and gunicorn's debug lines
    assert leaks(logged, seen) == []


def test_a_failed_statement_logs_no_parameters(database, caplog):
    """A sign-up cut off by the database bound logs its error, once with its parameters
    (SQLAlchemy's default): the new account's email and password hash. Another session
    holds an uncommitted sign-up of the same email, so the INSERT waits past the bound."""
    if not database.startswith("postgresql"):
        pytest.skip("PostgreSQL only: a statement cut off by its timeout")
    email = f"held-{secrets.token_hex(3)}@example.org"
    password = "held-" + secrets.token_hex(8)
    holder = ("INSERT INTO users (email, display_name, password_hash, is_admin, created_at,"
              f" session_epoch) VALUES ('{email}', 'x', 'x', false, now(), 0)")
    caplog.set_level(logging.INFO)
    with another_app(database, DATABASE_TIMEOUT=1) as application, held(database, holder):
        client = application.test_client()
        page = client.get("/register").get_data(as_text=True)
        answer = client.post("/register", data={
            "email": email, "display_name": "Held", "password": password,
            "confirm": password, "csrf_token": CSRF_FIELD.search(page).group(1)})
    assert answer.status_code == 503
    logged = "\n".join(f"{record.getMessage()}\n{record.exc_text or ''}"
                       for record in caplog.records)
    assert "INSERT INTO users" in logged  # the failed statement was logged
    assert "scrypt:" not in logged and email not in logged


def test_the_access_log_format_has_no_query_referer_or_header_atoms():
    """%(U)s is the path without the query; %(r)s, %(q)s, %(f)s and header atoms would log
    query strings (a pasted code), Referer (a QR link page) or Authorization."""
    config = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    atoms = set(re.findall(r"%\(([^)]+)\)s", config["access_log_format"]))
    assert atoms <= {"h", "l", "u", "t", "m", "U", "s", "B", "b", "L", "T", "D", "M", "p"}
    assert "U" in atoms


def test_an_access_token_in_the_query_string_is_refused_even_with_the_header(
        client, make_user, link_device):
    user_id, _, _ = make_user()
    _, token = link_device(user_id)
    bearer = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/device/me", headers=bearer).status_code == 200
    for query in ({"access_token": token}, {"access_token": "x"}):
        response = client.get("/api/v1/device/me", query_string=query, headers=bearer)
        assert response.status_code == 401 and response.get_json()["error"] == "invalid_token"
    assert client.get("/api/v1/device/me", query_string={"access_token": token}
                      ).status_code == 401


def test_an_access_token_in_a_cookie_or_form_body_is_not_a_credential(
        client, make_user, link_device):
    user_id, _, _ = make_user()
    _, token = link_device(user_id)
    client.set_cookie("access_token", token)
    client.set_cookie("session", token)
    assert client.get("/api/v1/device/me").status_code == 401
    # A form body on the API is not even read: 415, before any credential is looked at.
    assert client.get("/api/v1/device/me", data={"access_token": token}).status_code == 415


def test_device_and_pairing_codes_in_the_query_string_are_not_used(app, client, make_user,
                                                                   login):
    device = {"REMOTE_ADDR": "8.8.8.8"}
    started = client.post("/api/v1/device/authorize", environ_base=device, json={
        "device_id": "printer-query", "name": "Query printer"}).get_json()
    code = started["device_code"]
    qr = client.get("/api/v1/device/authorize/qr", query_string={"device_code": code},
                    headers={"X-Device-Code": code}, environ_base=device)
    assert qr.status_code == 400 and qr.get_json()["error"] == "device_code_in_url"
    polled = client.post(f"/api/v1/device/token?device_code={code}", environ_base=device)
    assert polled.status_code == 400 and polled.get_json()["error"] == "invalid_json"

    _, email, password = make_user()
    web_code = login(email, password).post("/api/v1/pairing/codes").get_json()["code"]
    redeemed = client.post("/api/v1/pairing/redeem", environ_base=device, query_string={
        "code": web_code, "device_id": "printer-query", "name": "Query printer"})
    assert redeemed.status_code == 400
    # Neither code was spent by the URL attempts: sent properly, they still work.
    assert client.post("/api/v1/device/token", json={"device_code": code},
                       environ_base=device).get_json()["error"] == "authorization_pending"
    assert client.post("/api/v1/pairing/redeem", environ_base=device, json={
        "code": web_code, "device_id": "printer-query", "name": "Query printer"}
    ).status_code == 201


def test_csrf_meta_is_the_only_token_a_page_carries(app, make_user, login):
    """Pages carry the CSRF token, never a device credential, in their HTML."""
    _, email, password = make_user()
    session = login(email, password)
    page = session.get("/").get_data(as_text=True)
    assert CSRF_META.search(page)
    assert "tsd_at_" not in page and "tsd_dc_" not in page


def test_a_used_qr_link_is_refused_on_replay_by_anyone(app, client, make_user, login):
    """Whoever copies a QR link after its first use (from a screen, a photo, a history)
    gets nothing: not the approval page, not a binding, not the QR image again."""
    from tsd_server.extensions import db
    from tsd_server.models import AuditEvent

    device = {"REMOTE_ADDR": "8.8.8.8"}
    started = client.post("/api/v1/device/authorize", environ_base=device, json={
        "device_id": "printer-qr-replay", "name": "QR printer"}).get_json()
    link = urlsplit(started["verification_uri_complete"]).path
    (_, owner_email, password), (_, thief_email, _) = make_user(), make_user()
    owner, thief = login(owner_email, password), login(thief_email, password)

    assert owner.get(link, headers=FRESH_SCAN).status_code == 200
    assert owner.get(link, headers=FRESH_SCAN).status_code == 200  # reloaded, same browser
    owner_elsewhere = login(owner_email, password)  # the owner's own other browser too
    for replayer in (thief, owner_elsewhere):
        assert replayer.get(link, headers=FRESH_SCAN).status_code == 400
    assert thief.get("/link/confirm").status_code == 404  # nothing bound to the thief
    assert owner_elsewhere.get("/link/confirm").status_code == 404
    image = client.get("/api/v1/device/authorize/qr", environ_base=device,
                       headers={"X-Device-Code": started["device_code"]})
    assert image.status_code == 409 and image.get_json()["error"] == "qr_link_used"

    assert decide(owner, "approve").status_code == 302
    for replayer in (thief, owner):  # answered: nobody, the owner's browser included
        assert replayer.get(link, headers=FRESH_SCAN).status_code == 400
    assert client.post("/api/v1/device/token", environ_base=device, json={
        "device_code": started["device_code"]}).status_code == 200
    with app.app_context():
        refused = db.session.scalars(select(AuditEvent).where(
            AuditEvent.event == "qr_link_invalid")).all()
        assert len(refused) == 4
        db.session.remove()
