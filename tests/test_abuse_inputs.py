"""Abuse: hostile input on every real JSON route and URL parameter is a 4xx, never a 500.

tests/test_api_errors.py checks the body readers on a probe route; this file sends the same
kinds of abuse to the routes the server really has, behind their own guards and limits, and
the URL numbers that reached the database or int() unchecked (fixed with these tests).
"""

from __future__ import annotations

import io
import json

import pytest

from tests.support.pairing import LOOSE_LIMITS

DEVICE_ROUTES = ["/api/v1/discovery/announce", "/api/v1/pairing/redeem",
                 "/api/v1/device/authorize", "/api/v1/device/token"]
CONFIRM_ROUTE = "/api/v1/discovery/offers/{}/confirm"
HUGE_NUMBERS = ["2147483648", "9223372036854775808", "9" * 40]


@pytest.fixture
def app_config():
    return {**LOOSE_LIMITS, "IP_MATCH_ANNOUNCE_RATE_LIMIT": "1000 per minute",
            "IP_MATCH_CLAIM_RATE_LIMIT": "1000 per minute"}


@pytest.fixture
def user(make_user, login):
    _, email, password = make_user()
    return login(email, password, REMOTE_ADDR="8.8.8.8")


def within_limit(app, prefix: bytes, unit: bytes) -> bytes:
    """As many ``unit`` after ``prefix`` as fit under MAX_CONTENT_LENGTH."""
    room = app.config["MAX_CONTENT_LENGTH"] - len(prefix) - 16
    return prefix + unit * (room // len(unit))


def bodies(app) -> dict[str, tuple[bytes, int, str]]:
    limit = app.config["MAX_CONTENT_LENGTH"]
    return {
        "nested arrays": (within_limit(app, b"", b"["), 400, "invalid_json"),
        "nested objects": (within_limit(app, b"", b'{"a":'), 400, "invalid_json"),
        "nested in a field": (within_limit(app, b'{"device_id": "printer-0001", "name": ',
                                           b"["), 400, "invalid_json"),
        "5000-digit number": (b'{"device_id": ' + b"9" * 5000 + b"}", 400, "invalid_json"),
        "over the limit": (json.dumps({"name": "x" * limit}).encode(), 413,
                           "payload_too_large"),
    }


def assert_refused(response, status: int, code: str, context: str = "") -> None:
    assert response.status_code == status, (context, response.get_data(as_text=True)[:300])
    assert response.mimetype == "application/json"
    assert response.get_json()["error"] == code


@pytest.mark.parametrize("path", DEVICE_ROUTES)
def test_hostile_bodies_on_device_routes_are_refused(app, client, path):
    for name, (raw, status, code) in bodies(app).items():
        response = client.post(path, data=raw, content_type="application/json",
                               environ_base={"REMOTE_ADDR": "8.8.8.8"})
        assert_refused(response, status, code, name)
        chunked = client.post(path, input_stream=io.BytesIO(raw), environ_base={
            "REMOTE_ADDR": "8.8.8.8", "wsgi.input_terminated": True},
            headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"})
        assert_refused(chunked, status, code, name)


def test_lone_surrogates_in_text_fields_are_refused_and_change_nothing(app, client, user):
    """JSON may escape half of a UTF-16 pair ("\\ud800"); Python decodes it into a string
    no database driver can store. It was a 500 on every route that stores a name."""
    from tests.support.pairing import issue_code

    device = {"REMOTE_ADDR": "8.8.8.8"}

    def post(path: str, raw: str):
        return client.post(path, data=raw.encode(), content_type="application/json",
                           environ_base=device)

    code = issue_code(user)["code"]
    for path, raw in [
        ("/api/v1/device/authorize",
         '{"device_id": "printer-0002", "name": "Voron \\ud800", "model": "2.4"}'),
        ("/api/v1/pairing/redeem",
         f'{{"code": "{code}", "device_id": "printer-0003", "name": "P", "model": "\\udfff"}}'),
        ("/api/v1/discovery/announce", '{"device_id": "printer-0004", "device_secret": "'
         + "a" * 22 + '", "name": "\\udbff\\udc00 is a pair, \\udc00 is not"}'),
    ]:
        assert_refused(post(path, raw), 400, "invalid_field", path)
    # The code was not spent by the refused redemption, and nothing was stored.
    assert user.get("/api/v1/devices").get_json()["devices"] == []
    linked = post("/api/v1/pairing/redeem",
                  f'{{"code": "{code}", "device_id": "printer-0003", "name": "P \\ud83d\\ude00"}}')
    assert linked.status_code == 201, linked.get_json()
    assert linked.get_json()["device"]["name"] == "P \U0001f600"  # a real pair is text


def test_hostile_bodies_on_the_user_confirm_route_are_refused(app, user):
    for name, (raw, status, code) in bodies(app).items():
        response = user.post(CONFIRM_ROUTE.format("x" * 32), data=raw,
                             content_type="application/json")
        assert_refused(response, status, code, name)


@pytest.mark.parametrize("number", HUGE_NUMBERS)
def test_huge_device_ids_in_urls_are_not_found(app, user, number):
    assert_refused(user.delete(f"/api/v1/devices/{number}"), 404, "not_found")
    for action in ("unlink", "rename"):
        response = user.form_post(f"/printers/{number}/{action}", {"name": "x"})
        assert response.status_code == 404


@pytest.mark.parametrize("scale", ["²", "٣", "9" * 5000, "-1", "0", "21", " 6"])
def test_odd_qr_scales_are_invalid_fields(app, client, scale):
    response = client.get("/api/v1/device/authorize/qr", query_string={"scale": scale},
                          headers={"X-Device-Code": "tsd_dc_" + "A" * 43})
    assert_refused(response, 400, "invalid_field")


@pytest.mark.parametrize("page", ["²", "9" * 5000, "-3", "1e9"])
def test_odd_audit_log_pages_show_the_first(app, make_user, login, page):
    _, email, password = make_user(is_admin=True)
    admin = login(email, password)
    response = admin.get("/admin/audit", query_string={"page": page})
    assert response.status_code == 200


NUL_PATHS = [
    ("POST", "/api/v1/discovery/nearby/printer%00-0001/link"),
    ("POST", "/api/v1/discovery/offers/offer%00id/confirm"),
    ("POST", "/printers/nearby/printer%00-0001/link"),
    ("GET", "/printers/nearby/offers/offer%00id"),
    ("POST", "/printers/nearby/offers/offer%00id/confirm"),
]


def test_nul_characters_in_paths_are_not_found(app, user):
    """PostgreSQL refuses text with NUL in a query: these were 500s there."""
    for method, path in NUL_PATHS:
        response = user.client.open(path, method=method, json={"code": "123456"},
                                     headers={"X-CSRFToken": user.csrf})
        assert response.status_code == 404, (method, path, response.status_code)


def test_nul_characters_in_forms_and_queries_are_bad_requests(app, client, make_user, login):
    from tests.support.ip_match_world import CSRF_META

    token = CSRF_META.search(client.get("/login").get_data(as_text=True)).group(1)
    for path, form in (
            ("/login", {"email": "a\x00b@example.org", "password": "x" * 12}),
            ("/register", {"email": "a\x00b@example.org", "display_name": "Nul\x00",
                           "password": "x" * 12, "confirm": "x" * 12})):
        response = client.post(path, data={**form, "csrf_token": token})
        assert response.status_code == 400, path
    _, email, password = make_user(is_admin=True)
    admin = login(email, password)
    for field in ("actor", "event", "email", "outcome", "strategy"):
        response = admin.get("/admin/audit", query_string={field: "a\x00b"})
        assert response.status_code == 400, field
    assert admin.form_post("/admin/kill-switches", {
        "strategy": "ip_match", "action": "disable", "reason": "a\x00b"}).status_code == 400
    api = client.get("/api/v1/device/authorize/qr", query_string={"format": "\x00"},
                     headers={"X-Device-Code": "x"})
    assert api.status_code == 400 and api.get_json()["error"] == "bad_request"


def test_a_page_fetched_with_a_json_type_and_no_body_still_answers(app, client):
    """Only a submission fills a form: a GET that declares JSON (some uptime monitors send
    the header on every request) is an ordinary GET, on pages as on /healthz."""
    for path in ("/healthz", "/login"):
        response = client.get(path, headers={"Content-Type": "application/json"})
        assert response.status_code == 200, path


def test_json_bodies_and_file_parts_on_pages_are_refused_and_change_nothing(
        app, client, make_user, login, link_device):
    """Flask-WTF fills a form from a JSON body's values and a multipart body's files too: a
    number or a file where a field wants text was a 500 (its Length validator takes len()
    of it), also before logging in. Found by tests/test_fuzz_forms.py."""
    from tests.support.ip_match_world import CSRF_META
    from tests.support.rows import count_rows
    from tsd_server.extensions import db
    from tsd_server.models import AuditEvent, Device

    token = CSRF_META.search(client.get("/login").get_data(as_text=True)).group(1)
    as_json = client.post("/login", json={"email": 1, "password": 1},
                          headers={"X-CSRFToken": token})
    assert as_json.status_code == 415
    as_file = client.post("/login", data={"csrf_token": token, "password": "x" * 12,
                                          "email": (io.BytesIO(b"a@b.org"), "email.txt")})
    assert as_file.status_code == 400
    assert count_rows(app, AuditEvent) == 0  # not even a failed login
    user_id, email, password = make_user()
    device_pk, _ = link_device(user_id)
    user = login(email, password)
    rename = f"/printers/{device_pk}/rename"
    assert user.post(rename, json={"name": 5}).status_code == 415
    assert user.form_post(rename, {"name": (io.BytesIO(b"x"), "name.txt")}).status_code == 400
    with app.app_context():
        assert db.session.get(Device, device_pk).name == "Test printer"
    # Text fields in a multipart body are a form like any other.
    assert user.form_post(rename, {"name": "Renamed"}, content_type="multipart/form-data") \
        .status_code == 302


ESCAPES = ["Eve\x1b[2J", "line\nbreak", "bell\x07", "del\x7f", "csi\x9b31m",
           "Printer \u202egnp.exe", "isolate \u2067x\u2069", "line\u2028separator"]


@pytest.mark.parametrize("name", ESCAPES, ids=["escape", "newline", "bell", "del", "c1-csi",
                                               "bidi-override", "bidi-isolate",
                                               "line-separator"])
def test_control_characters_in_names_are_refused_on_every_way_in(app, client, make_user,
                                                                 login, link_device, name):
    """A name other people see (the agent prints the display name of the account linking
    it; the incident commands print names and emails) takes no control characters, whether
    it comes as JSON, from a page's form or from create-user."""
    from tests.support.ip_match_world import CSRF_META
    from tsd_server.extensions import db
    from tsd_server.models import Device, User
    from tsd_server.printable_text import MESSAGE

    announced = client.post("/api/v1/discovery/announce", environ_base={"REMOTE_ADDR": "8.8.8.8"},
                            json={"device_id": "printer-0005", "device_secret": "a" * 22,
                                  "name": name})
    assert_refused(announced, 400, "invalid_field", "announce")

    user_id, email, password = make_user()
    device_pk, _ = link_device(user_id)
    user = login(email, password)
    renamed = user.form_post(f"/printers/{device_pk}/rename", {"name": name})
    assert renamed.status_code == 302
    assert MESSAGE in user.get("/").get_data(as_text=True)

    def sign_up(email: str, display_name: str):
        token = CSRF_META.search(client.get("/register").get_data(as_text=True)).group(1)
        return client.post("/register", data={
            "email": email, "display_name": display_name, "password": "p" * 12,
            "confirm": "p" * 12, "csrf_token": token})

    by_name = sign_up("eve@example.org", name)
    assert by_name.status_code == 400 and MESSAGE in by_name.get_data(as_text=True)
    # Whitespace is refused by the address pattern already: this tries the rule itself.
    by_email = sign_up("".join("\x1b" if c.isspace() else c for c in f"e{name}@example.org"),
                       "Eve")
    assert by_email.status_code == 400 and MESSAGE in by_email.get_data(as_text=True)

    command = app.test_cli_runner().invoke(
        args=["create-user", "mallory@example.org", "--name", name],
        input="p" * 12 + "\n" + "p" * 12 + "\n")
    assert command.exit_code != 0 and "Control characters" in command.output
    with app.app_context():
        assert db.session.get(Device, device_pk).name == "Test printer"
        emails = set(db.session.scalars(db.select(User.email)))
    assert emails == {email}


NOT_UTF8 = "\udcff"  # how Python hands over the byte 0xff of an argument that is not UTF-8


@pytest.mark.parametrize("args", [
    ["create-user", f"a{NOT_UTF8}@example.org"],
    ["create-user", "eve@example.org", "--name", f"Eve {NOT_UTF8}"],
    ["create-user", "eve@example.org", "--password", f"p{NOT_UTF8}" * 6],
    ["set-password", f"owner{NOT_UTF8}@example.org"],
    ["set-password", "owner@example.org", "--password", f"p{NOT_UTF8}" * 6],
    ["incident", "revoke-account", f"owner{NOT_UTF8}@example.org", "--reason", "x", "--yes"],
    ["incident", "revoke-account", "owner@example.org", "--reason", f"x{NOT_UTF8}", "--yes"],
    ["discovery", "disable", "all", "--reason", f"x{NOT_UTF8}"],
], ids=["create-user-email", "create-user-name", "create-user-password", "set-password-email",
        "set-password-password", "revoke-account-email", "revoke-account-reason",
        "discovery-reason"])
def test_invalid_utf8_on_the_command_line_is_a_usage_error_and_changes_nothing(
        app, make_user, link_device, args):
    """Bytes that are not UTF-8 reach Python as lone surrogates, which neither the database
    driver nor the password hash can encode: they were an uncaught UnicodeEncodeError."""
    from sqlalchemy import select

    from tsd_server.extensions import db
    from tsd_server.models import AuditEvent, Device, StrategyFlag, User

    def state() -> tuple:
        with app.app_context():
            return (db.session.execute(select(User.email, User.password_hash,
                                              User.session_epoch)).all(),
                    db.session.execute(select(Device.id, Device.token_hash)).all(),
                    db.session.scalars(select(AuditEvent.id)).all(),
                    db.session.scalars(select(StrategyFlag.enabled)).all())

    user_id, _, _ = make_user("owner@example.org")
    link_device(user_id)
    before = state()
    result = app.test_cli_runner().invoke(args=args, input="p" * 12 + "\n" + "p" * 12 + "\n")
    assert result.exit_code == 2, result.output
    assert "is not valid UTF-8 text" in result.output
    assert isinstance(result.exception, SystemExit)  # a usage error, not a traceback
    assert state() == before
