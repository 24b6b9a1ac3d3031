"""Real answers of every way of linking, each checked against tsd_server/api/openapi.json.

tests/test_schemathesis.py generates requests from the document, so it reaches the
refusals of each operation but never a success that takes several calls in order: the
device flow's token, a redeemed web code, an ip_match link and its confirmation, the QR
image, nor slow_down, access_denied, expired_token or a 429. These tests walk those flows
and hold every answer on the way to the document: a declared status, the declared
headers, and a body that matches the declared schema.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from schemathesis.core.failures import Failure

from tests.support import device_flow_fixtures
from tests.support.ip_match_fixtures import UNLIMITED
from tests.support.ip_match_world import InProcessEndpoint, World, layout_direct, wrong
from tests.support.pairing import (
    LOOSE_LIMITS,
    TOKEN_PATH,
    decide,
    device_env,
    enter_code,
    issue_code,
    poll,
    redeem,
    started,
)
from tsd_server.api import openapi

schema = schemathesis.openapi.from_dict(json.loads(openapi.DOCUMENT.read_text()))
owner = device_flow_fixtures.owner
HOME = "8.8.4.4"


@pytest.fixture
def app_config():
    return {**LOOSE_LIMITS, **UNLIMITED}


def check(method: str, path: str, response):
    """``response`` (a Werkzeug test response) as the document declares it for ``method
    path``: its status, the headers declared for that status, and its body."""
    responses = schema[path][method].definition.raw["responses"]
    declared = responses.get(str(response.status_code))
    assert declared is not None, (method, path, response.status_code,
                                  response.get_data(as_text=True)[:300])
    for header in declared.get("headers", {}):
        assert header in response.headers, (method, path, response.status_code, header)
    schema[path][method].validate_response(response)
    return response


def test_device_flow_answers_match_the_document(app, client, owner, clock):
    _, session = owner
    first = started(client)
    check("POST", TOKEN_PATH, poll(client, first["device_code"]))  # authorization_pending
    clock.advance(seconds=1)
    check("POST", TOKEN_PATH, poll(client, first["device_code"]))  # slow_down, interval
    check("POST", TOKEN_PATH, client.post(TOKEN_PATH, json={},    # invalid_request
                                          environ_base=device_env()))
    enter_code(session, first["user_code"])
    decide(session, "approve")
    clock.advance(seconds=30)
    token = poll(client, first["device_code"])
    assert token.status_code == 200
    check("POST", TOKEN_PATH, token)
    check("POST", TOKEN_PATH, poll(client, first["device_code"]))  # invalid_grant
    denied = started(client, device_id="printer-0003")
    enter_code(session, denied["user_code"])
    decide(session, "deny")
    clock.advance(seconds=30)
    check("POST", TOKEN_PATH, poll(client, denied["device_code"]))  # access_denied
    expired = started(client, device_id="printer-0004")
    clock.advance(seconds=901)
    check("POST", TOKEN_PATH, poll(client, expired["device_code"]))  # expired_token
    app.config["DEVICE_FLOW_TOKEN_LIMIT"] = "1 per minute"
    poll(client, expired["device_code"], ip="9.9.9.9")
    limited = poll(client, expired["device_code"], ip="9.9.9.9")
    assert limited.status_code == 429
    check("POST", TOKEN_PATH, limited)


def test_qr_image_answer_matches_the_document(app, client):
    answer = started(client)
    image = client.get("/api/v1/device/authorize/qr?format=png",
                       headers={"X-Device-Code": answer["device_code"]},
                       environ_base=device_env())
    assert image.status_code == 200
    check("GET", "/api/v1/device/authorize/qr", image)


def test_web_code_answers_match_the_document(app, client, owner):
    _, session = owner
    code = issue_code(session)
    check("POST", "/api/v1/pairing/codes", session.post("/api/v1/pairing/codes"))
    linked = redeem(client, code["code"])
    assert linked.status_code == 201
    check("POST", "/api/v1/pairing/redeem", linked)
    check("POST", "/api/v1/pairing/redeem", redeem(client, code["code"]))  # invalid_code


def test_ip_match_answers_match_the_document(app, clock):
    world = World(app, lambda home: InProcessEndpoint(app, home, layout_direct))
    printer, person = world.printer(HOME), world.person(HOME)
    browser, env = person.endpoint.client, {"REMOTE_ADDR": HOME}
    csrf = {"X-CSRFToken": person.csrf}

    def announce():
        return printer.endpoint.client.post("/api/v1/discovery/announce", json={
            "device_id": printer.device_id, "device_secret": printer.secret, "name": "P"},
            environ_base=env)

    check("POST", "/api/v1/discovery/announce", announce())  # waiting
    near = browser.get("/api/v1/discovery/nearby", environ_base=env)
    assert near.get_json()["devices"], near.get_json()
    check("GET", "/api/v1/discovery/nearby", near)
    link = browser.post(f"/api/v1/discovery/nearby/{printer.device_id}/link", headers=csrf,
                        environ_base=env)
    check("POST", "/api/v1/discovery/nearby/{device_id}/link", link)
    check("GET", "/api/v1/discovery/nearby",  # the printer with its offer
          browser.get("/api/v1/discovery/nearby", environ_base=env))
    shown = announce()
    check("POST", "/api/v1/discovery/announce", shown)  # confirm, with the code
    code, offer_id = shown.get_json()["confirmation"]["code"], link.get_json()["offer_id"]
    confirm = f"/api/v1/discovery/offers/{offer_id}/confirm"
    for typed in (wrong(code), code):  # wrong_code with attempts_left, then confirmed
        check("POST", "/api/v1/discovery/offers/{offer_id}/confirm",
              browser.post(confirm, json={"code": typed}, headers=csrf, environ_base=env))
    linked = announce()
    assert linked.get_json()["status"] == "linked"
    check("POST", "/api/v1/discovery/announce", linked)


def test_refusals_before_any_view_match_the_document(app, client, owner):
    """Refused by the CSRF check, the body's media type or the bearer check, before the
    view runs: each answer is declared where it can come."""
    _, session = owner
    env = device_env()
    check("POST", "/api/v1/pairing/codes",  # no session cookie at all: csrf_failed
          client.post("/api/v1/pairing/codes", headers={"X-CSRFToken": "x"},
                      environ_base=env))
    for method, path, url in [
            ("POST", "/api/v1/pairing/codes", "/api/v1/pairing/codes"),
            ("POST", "/api/v1/discovery/nearby/{device_id}/link",
             "/api/v1/discovery/nearby/printer-0001/link"),
            ("DELETE", "/api/v1/devices/{device_pk}", "/api/v1/devices/1")]:
        refused = session.client.open(url, method=method, data="a=b",
                                      content_type="application/x-www-form-urlencoded",
                                      headers={"X-CSRFToken": session.csrf},
                                      environ_base=session.environ_base)
        assert refused.status_code == 415
        check(method, path, refused)
    check("POST", TOKEN_PATH, client.post(TOKEN_PATH, data="device_code=x", environ_base=env,
                                          content_type="application/x-www-form-urlencoded"))
    for headers in ({}, {"Authorization": "Bearer tsd_at_" + "A" * 43}):
        check("GET", "/api/v1/device/me", client.get("/api/v1/device/me", headers=headers))


def test_an_answer_that_differs_from_the_document_is_caught(app, client):
    """The checks above would pass vacuously if ``check`` accepted anything."""
    answer = started(client)
    pending = poll(client, answer["device_code"])
    check("POST", TOKEN_PATH, pending)
    pending.set_data(json.dumps({**pending.get_json(), "error": "not_a_declared_code"}))
    with pytest.raises(Failure):
        check("POST", TOKEN_PATH, pending)
    with pytest.raises(AssertionError, match="400"):  # a status not declared there
        check("GET", "/api/v1/device/me", client.get("/api/v1/device/authorize/qr"))
    with pytest.raises(Failure):  # {"status": "ok"} is no authorize answer
        check("POST", "/api/v1/device/authorize", client.get("/api/v1/ping"))
