"""JSON request bodies: only declared JSON is read, a key named twice is refused, and a
device_id in a URL is checked, never cut to length.

Why the media type matters: ``text/plain`` (like the two form encodings, or no type at all)
is what any web page can make a visitor's browser POST to another site without a CORS
preflight: a ``<form enctype="text/plain">`` or ``fetch(url, {mode: "no-cors", body})``.
Were such a body parsed, a page could announce phantom printers, start device
authorizations or redeem codes from its visitors' household addresses.
"""

from __future__ import annotations

import json
import secrets

import pytest

from tests.support.ip_match_fixtures import UNLIMITED
from tests.support.pairing import LOOSE_LIMITS, issue_code
from tests.support.rows import count_rows

HOME = "8.8.8.8"
DEVICE = {"REMOTE_ADDR": HOME}
EVIL_ORIGIN = {"Origin": "https://evil.example"}
# What a page on another site can send without a preflight, and no type at all (a Blob).
NOT_JSON = ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x", None]


@pytest.fixture
def app_config():
    return {**LOOSE_LIMITS, **UNLIMITED}


def announce_body(device_id: str = "printer-0001") -> dict:
    return {"device_id": device_id, "device_secret": secrets.token_urlsafe(16),
            "name": "Your printer"}


def post_raw(client, path: str, body: str | bytes, content_type: str | None, **kwargs):
    headers = dict(kwargs.pop("headers", {}))
    if content_type is not None:
        headers["Content-Type"] = content_type
    kwargs.setdefault("environ_base", DEVICE)
    return client.post(path, data=body, headers=headers, **kwargs)


def assert_unsupported(response) -> None:
    assert response.status_code == 415, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    answer = response.get_json()
    assert answer["error"] == "unsupported_media_type"
    assert "Send Content-Type: application/json" in answer["message"]


# --- only a body declared as JSON is read -------------------------------------------------

@pytest.mark.parametrize("content_type", NOT_JSON)
def test_a_cross_site_style_announce_is_refused_and_registers_nothing(app, client,
                                                                      content_type):
    from tsd_server.models import AuditEvent
    from tsd_server.models.ip_match import Announcement

    reply = post_raw(client, "/api/v1/discovery/announce", json.dumps(announce_body()),
                     content_type, headers=EVIL_ORIGIN)
    assert_unsupported(reply)
    assert count_rows(app, Announcement) == 0
    assert count_rows(app, AuditEvent) == 0


def test_cross_site_announces_cannot_fill_the_household_cap(app, client, make_user, login):
    """The drive-by of the review: four phantom printers would have hidden the household's
    real ones (household_limit) and shown the visitor "Your printer" to link."""
    _, email, password = make_user()
    user = login(email, password, **DEVICE)
    for number in range(4):
        reply = post_raw(client, "/api/v1/discovery/announce",
                         json.dumps(announce_body(f"phantom-{number:04d}")), "text/plain",
                         headers=EVIL_ORIGIN)
        assert_unsupported(reply)
    nearby = user.get("/api/v1/discovery/nearby").get_json()
    assert (nearby["eligible"], nearby["reason"], nearby["devices"]) == (True, None, [])


@pytest.mark.parametrize("content_type", NOT_JSON)
def test_device_flow_routes_refuse_bodies_that_are_not_json(app, client, content_type):
    from tsd_server.models import AuditEvent, DeviceAuthorization

    authorize = {"device_id": "printer-0002", "name": "Phantom"}
    assert_unsupported(post_raw(client, "/api/v1/device/authorize", json.dumps(authorize),
                                content_type, headers=EVIL_ORIGIN))
    assert count_rows(app, DeviceAuthorization) == 0
    assert count_rows(app, AuditEvent) == 0
    started = client.post("/api/v1/device/authorize", json=authorize, environ_base=DEVICE)
    assert started.status_code == 200
    code = started.get_json()["device_code"]
    assert_unsupported(post_raw(client, "/api/v1/device/token",
                                json.dumps({"device_code": code}), content_type))
    # The refused poll was no poll: the first real one is pending, not slow_down.
    polled = client.post("/api/v1/device/token", json={"device_code": code},
                         environ_base=DEVICE)
    assert polled.get_json()["error"] == "authorization_pending"


def test_a_code_sent_as_text_plain_is_not_spent(app, client, make_user, login):
    from tsd_server.models import Device

    _, email, password = make_user()
    code = issue_code(login(email, password, **DEVICE))["code"]
    body = {"code": code, "device_id": "printer-0003", "name": "Lab printer"}
    assert_unsupported(post_raw(client, "/api/v1/pairing/redeem", json.dumps(body),
                                "text/plain", headers=EVIL_ORIGIN))
    assert count_rows(app, Device) == 0
    redeemed = client.post("/api/v1/pairing/redeem", json=body, environ_base=DEVICE)
    assert redeemed.status_code == 201, redeemed.get_json()


def test_refused_bodies_do_not_spend_the_households_rate_limits(app, client, make_user,
                                                                  login):
    """Any page a person in the household opens could send these; were they counted, it
    could keep the household's own printers from pairing for 15 minutes."""
    app.config["PAIRING_GUESS_LIMIT_PER_IP"] = "2 per 15 minutes"
    app.config["DEVICE_FLOW_AUTHORIZE_LIMIT"] = "2 per 10 minutes"
    _, email, password = make_user()
    code = issue_code(login(email, password, **DEVICE))["code"]
    body = {"code": code, "device_id": "printer-0003", "name": "Lab printer"}
    started = {"device_id": "printer-0004", "name": "Lab printer"}
    for _ in range(3):
        assert_unsupported(post_raw(client, "/api/v1/pairing/redeem", json.dumps(body),
                                    "text/plain", headers=EVIL_ORIGIN))
        assert_unsupported(post_raw(client, "/api/v1/device/authorize", json.dumps(started),
                                    "text/plain", headers=EVIL_ORIGIN))
    assert client.post("/api/v1/pairing/redeem", json=body,
                       environ_base=DEVICE).status_code == 201
    assert client.post("/api/v1/device/authorize", json=started,
                       environ_base=DEVICE).status_code == 200


def test_the_user_confirm_route_refuses_text_plain_before_anything_else(app, make_user,
                                                                       login):
    _, email, password = make_user()
    user = login(email, password, **DEVICE)
    reply = user.post("/api/v1/discovery/offers/" + "x" * 32 + "/confirm",
                      data='{"code": "123456"}', content_type="text/plain")
    assert_unsupported(reply)


def test_every_write_refuses_a_form_body_as_the_document_says(app, client, make_user, login):
    """Every POST and DELETE under /api/v1, whether or not it reads a body, answers a form
    body with 415, and the OpenAPI document declares that 415 (also where no body is read:
    creating a web code, linking a printer nearby, unlinking one)."""
    from tsd_server.api import openapi

    document = json.loads(openapi.DOCUMENT.read_text())
    _, email, password = make_user()
    user = login(email, password, **DEVICE)
    arguments = {"device_id": "printer-0001", "offer_id": "x" * 32, "device_pk": "1"}
    writes = [(path, method, operation) for path, item in document["paths"].items()
              for method, operation in item.items() if method in ("post", "delete")]
    assert len(writes) >= 8
    for path, method, operation in writes:
        url = path.format(**arguments)
        browser, headers = client, {}
        if operation["security"]:  # a user call: logged in, with the CSRF token
            browser, headers = user.client, {"X-CSRFToken": user.csrf}
        reply = browser.open(url, method=method.upper(), data="a=b", headers=headers,
                             content_type="application/x-www-form-urlencoded",
                             environ_base=DEVICE)
        assert_unsupported(reply)
        assert "415" in operation["responses"], f"{method.upper()} {path}: 415 not declared"


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON", "application/vnd.tsd+json"])
def test_json_media_types_are_read(app, client, content_type):
    reply = post_raw(client, "/api/v1/discovery/announce", json.dumps(announce_body()),
                     content_type)
    assert reply.status_code == 200, reply.get_json()
    assert reply.get_json()["status"] == "waiting"


@pytest.mark.parametrize("content_type", ["text/plain", None])
def test_no_body_at_all_is_still_invalid_json(app, client, content_type):
    reply = post_raw(client, "/api/v1/device/authorize", b"", content_type)
    assert reply.status_code == 400 and reply.get_json()["error"] == "invalid_json"


# --- a key named twice is refused ---------------------------------------------------------

def test_a_duplicate_key_is_refused_naming_it_and_nothing_is_stored(app, client):
    from tsd_server.models import DeviceAuthorization

    reply = post_raw(client, "/api/v1/device/authorize",
                     '{"device_id": "printer-0001", "name": "Shown name", "name": "Other"}',
                     "application/json")
    assert reply.status_code == 400
    answer = reply.get_json()
    assert answer["error"] == "invalid_json" and "'name'" in answer["message"]
    assert count_rows(app, DeviceAuthorization) == 0


def test_a_duplicate_device_id_in_an_announce_registers_nothing(app, client):
    from tsd_server.models.ip_match import Announcement

    body = ('{"device_id": "printer-0001", "device_secret": "' + "a" * 22 + '", "name": "x", '
            '"device_id": "printer-0002"}')
    reply = post_raw(client, "/api/v1/discovery/announce", body, "application/json")
    assert reply.status_code == 400 and reply.get_json()["error"] == "invalid_json"
    assert "'device_id'" in reply.get_json()["message"]
    assert count_rows(app, Announcement) == 0


LONG_KEY = "k" * 5000


@pytest.mark.parametrize("raw, named", [
    ('{"a": {"b": 1, "b": 2}}', "'b'"),
    ('{"a": [{"c": 1}, {"c": 1, "c": 1}]}', "'c'"),
    ('{"\\u006e": 1, "n": 2}', "'n'"),  # an escape names the same key
    (f'{{"{LONG_KEY}": 1, "{LONG_KEY}": 2}}', "'" + "k" * 64 + "'..."),
])
def test_duplicates_anywhere_in_the_body_are_refused(app, raw, named):
    from tsd_server.api.errors import ApiError
    from tsd_server.api.request_body import json_object

    with app.test_request_context(method="POST", data=raw, content_type="application/json"):
        with pytest.raises(ApiError) as refused:
            json_object()
    assert (refused.value.status, refused.value.code) == (400, "invalid_json")
    assert named in refused.value.message
    assert len(refused.value.message) < 200


def test_equal_keys_in_different_objects_are_fine(app):
    from tsd_server.api.request_body import json_object

    raw = '{"a": {"n": 1}, "b": {"n": 2}, "n": 3}'
    with app.test_request_context(method="POST", data=raw, content_type="application/json"):
        assert json_object() == {"a": {"n": 1}, "b": {"n": 2}, "n": 3}


# --- the device_id in the link URL is checked, never cut ----------------------------------

LONG_ID = "p" * 64


@pytest.fixture
def announced_user(app, client, make_user, login):
    """A user at HOME, and a device with a 64-character id announcing there."""
    reply = client.post("/api/v1/discovery/announce", json={
        **announce_body(LONG_ID), "device_secret": "a" * 22}, environ_base=DEVICE)
    assert reply.status_code == 200, reply.get_json()
    _, email, password = make_user()
    return login(email, password, **DEVICE)


@pytest.mark.parametrize("wrong", [LONG_ID + "-NOT-THIS-DEVICE", LONG_ID + "p", "short",
                                   LONG_ID[:10] + "%20" + LONG_ID[:10]])
def test_a_longer_or_malformed_id_in_the_api_link_path_is_not_found(app, announced_user,
                                                                    wrong):
    from tsd_server.models import AuditEvent
    from tsd_server.models.ip_match import Offer

    before = count_rows(app, AuditEvent)
    reply = announced_user.post(f"/api/v1/discovery/nearby/{wrong}/link")
    assert reply.status_code == 404, reply.get_json()
    assert reply.get_json()["error"] == "not_found"
    assert count_rows(app, Offer) == 0
    assert count_rows(app, AuditEvent) == before
    # The device itself can still be linked by its own id.
    assert announced_user.post(f"/api/v1/discovery/nearby/{LONG_ID}/link").status_code == 200
    assert count_rows(app, Offer) == 1


def test_a_longer_id_in_the_link_form_path_shows_the_page_as_not_found(app, announced_user):
    from tsd_server.models.ip_match import Offer

    reply = announced_user.form_post(f"/printers/nearby/{LONG_ID}-NOT-THIS-DEVICE/link", {})
    assert reply.status_code == 404
    page = reply.get_data(as_text=True)
    assert "No printer with this id" in page and "Printers near you" in page
    assert count_rows(app, Offer) == 0
    linked = announced_user.form_post(f"/printers/nearby/{LONG_ID}/link", {})
    assert linked.status_code == 302 and count_rows(app, Offer) == 1
