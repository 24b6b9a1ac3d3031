"""Everything under /api answers JSON ``{"error", "message"}`` with the right status: bad
bodies, unknown routes, wrong methods, oversize bodies, CSRF failures, rate limits and
unexpected exceptions. Never a 500 for bad input, never an HTML page.

The body readers (tsd_server/api/request_body.py) are exercised through a small blueprint
registered on the test app only.
"""

from __future__ import annotations

import io
import json
import logging

import pytest
from flask import Blueprint, jsonify
from flask_login import login_required
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.pairing import FRESH_SCAN, qr_token, started
from tsd_server.api.request_body import device_id_field, json_object, string_field
from tsd_server.extensions import csrf, limiter

probe = Blueprint("api_error_probe", __name__, url_prefix="/api/v1/test-probe")


@probe.post("/device")
@csrf.exempt
def device_body():
    body = json_object()
    return jsonify({"device_id": device_id_field(body),
                    "name": string_field(body, "name"),
                    "model": string_field(body, "model", required=False)})


@probe.post("/empty-ok")
@csrf.exempt
def empty_ok():
    return jsonify(json_object(allow_empty=True))


@probe.post("/user")
@login_required
def user_post():
    return jsonify(json_object(allow_empty=True))


@probe.get("/boom")
def boom():
    raise RuntimeError("secret internals: /etc/tsd/password=hunter2")


@probe.get("/limited")
@limiter.limit("2 per minute")
def limited():
    return jsonify({"ok": True})


@pytest.fixture
def api(app):
    app.register_blueprint(probe)
    return app.test_client()


GOOD = {"device_id": "printer-0001", "name": "Workshop", "model": "Mk4"}


def post(api, body, path="/api/v1/test-probe/device", **kwargs):
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    kwargs.setdefault("content_type", "application/json")
    return api.post(path, data=data, **kwargs)


def assert_error(response, status: int, code: str, **extra):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    for key, value in extra.items():
        assert body[key] == value
    return body


def test_good_body(api):
    response = post(api, GOOD)
    assert response.status_code == 200
    assert response.get_json() == GOOD


def test_strings_are_stripped_and_optional_fields_may_be_missing(api):
    response = post(api, {"device_id": " printer-0001 ", "name": "  Workshop  "})
    assert response.get_json() == {"device_id": "printer-0001", "name": "Workshop",
                                   "model": None}


@pytest.mark.parametrize("raw", [b"", b"   ", b"{", b"{'a': 1}", b"[1, 2]", b'"text"', b"null",
                                 b"42", b"\xff\xfe\x00", b"{\"a\": 1} trailing",
                                 b"[" * 50_000, b'{"a":' * 10_000])
def test_malformed_json(api, raw):
    assert_error(post(api, raw), 400, "invalid_json")


def test_empty_body_allowed_where_the_view_says_so(api):
    assert post(api, b"", path="/api/v1/test-probe/empty-ok").get_json() == {}
    assert_error(post(api, b"[]", path="/api/v1/test-probe/empty-ok"), 400, "invalid_json")


@pytest.mark.parametrize("change, code, field", [
    ({"device_id": None}, "missing_field", "device_id"),
    ({"device_id": "   "}, "missing_field", "device_id"),
    ({"device_id": 12345678}, "invalid_field", "device_id"),
    ({"device_id": ["printer-0001"]}, "invalid_field", "device_id"),
    ({"device_id": "short"}, "invalid_field", "device_id"),
    ({"device_id": "has space inside"}, "invalid_field", "device_id"),
    ({"device_id": "drucker-ü-0001"}, "invalid_field", "device_id"),
    ({"device_id": "x" * 65}, "invalid_field", "device_id"),
    ({"name": None}, "missing_field", "name"),
    ({"name": ""}, "missing_field", "name"),
    ({"name": True}, "invalid_field", "name"),
    ({"name": {"first": "a"}}, "invalid_field", "name"),
    ({"name": "n" * 81}, "invalid_field", "name"),
    ({"name": "line\nbreak"}, "invalid_field", "name"),
    ({"name": "nul\x00byte"}, "invalid_field", "name"),
    ({"model": 4}, "invalid_field", "model"),
])
def test_wrong_fields(api, change, code, field):
    body = {**GOOD, **change}
    body = {key: value for key, value in body.items() if value is not None}
    assert_error(post(api, body), 400, code, field=field)


def test_oversize_body_is_413_json(app, api):
    limit = app.config["MAX_CONTENT_LENGTH"]
    assert limit == 64 * 1024
    big = json.dumps({**GOOD, "padding": "x" * limit})
    assert_error(post(api, big), 413, "payload_too_large")


def chunked(api, body: bytes):
    """Post as gunicorn hands over a chunked request: no Content-Length, input terminated."""
    return api.post("/api/v1/test-probe/device", input_stream=io.BytesIO(body),
                    headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
                    environ_overrides={"wsgi.input_terminated": True})


def test_chunked_body_within_the_limit(api):
    assert chunked(api, json.dumps(GOOD).encode()).get_json() == GOOD


@pytest.mark.parametrize("body", [
    json.dumps({**GOOD, "padding": "x" * (128 * 1024)}).encode(),
    # Cut at the limit this would still parse: it must be refused, not accepted in part.
    json.dumps(GOOD).encode() + b" " * (128 * 1024),
], ids=["big object", "object plus padding"])
def test_oversize_chunked_body_is_413_json(api, body):
    assert_error(chunked(api, body), 413, "payload_too_large")


def test_unknown_api_route_is_404_json(api):
    assert_error(api.get("/api/v1/no-such-thing"), 404, "not_found")
    assert_error(api.get("/api/nothing"), 404, "not_found")


def test_wrong_method_is_405_json_with_allow(api):
    response = api.get("/api/v1/test-probe/device")
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


def test_unexpected_exception_is_500_json_without_details(api, caplog):
    with caplog.at_level(logging.ERROR, logger="tsd_server.api.errors"):
        response = api.get("/api/v1/test-probe/boom")
    body = assert_error(response, 500, "internal_error")
    assert "hunter2" not in json.dumps(body) and "RuntimeError" not in json.dumps(body)
    assert any("test-probe/boom" in record.getMessage() for record in caplog.records)


def test_unexpected_exception_on_a_qr_link_logs_its_route_not_its_token(
        app, client, make_user, login, monkeypatch, caplog):
    """The QR link's one-time token is in the path; the log names the route instead, so
    whoever reads the journal cannot open the link first (the access logs redact it too)."""
    from tsd_server.discovery.pairing import approvals

    _, email, password = make_user()
    session = login(email, password)
    token = qr_token(started(client))

    def fails(*_args, **_kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(approvals, "open_qr_link", fails)
    with caplog.at_level(logging.DEBUG):
        response = session.get("/link/qr/" + token, headers=FRESH_SCAN)
    assert response.status_code == 500 and response.mimetype == "text/html"
    assert token not in response.get_data(as_text=True)
    failed = [record for record in caplog.records
              if record.name == "tsd_server.api.errors" and record.exc_info]
    assert len(failed) == 1 and failed[0].exc_info[0] is RuntimeError
    assert "GET /link/qr/<token> (qr_web.open_qr_link)" in failed[0].getMessage()
    assert token not in caplog.text
    for record in caplog.records:
        assert token not in record.getMessage()
        assert token not in str(record.args)


def test_rate_limit_is_429_json_with_retry_after(api):
    for _ in range(2):
        assert api.get("/api/v1/test-probe/limited").status_code == 200
    response = api.get("/api/v1/test-probe/limited")
    assert_error(response, 429, "rate_limited")
    assert int(response.headers["Retry-After"]) > 0


def test_cookie_authenticated_json_post_needs_csrf(api, make_user, login):
    _, email, password = make_user()
    session = login(email, password)
    missing = session.client.post("/api/v1/test-probe/user", json={"a": 1})
    assert_error(missing, 400, "csrf_failed")
    forged = session.client.post("/api/v1/test-probe/user", json={"a": 1},
                                 headers={"X-CSRFToken": "forged"})
    assert_error(forged, 400, "csrf_failed")
    assert session.post("/api/v1/test-probe/user", json={"a": 1}).get_json() == {"a": 1}


def test_api_without_session_is_401_json(api):
    assert_error(api.post("/api/v1/test-probe/user", json={}), 400, "csrf_failed")
    assert_error(api.get("/api/v1/devices"), 401, "login_required")


def test_pages_keep_html_errors(api):
    response = api.get("/no-such-page")
    assert response.status_code == 404
    assert response.mimetype == "text/html"


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(str.encode),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                 lambda children: st.lists(children, max_size=4)
                 | st.dictionaries(st.sampled_from(["device_id", "name", "model", "x"]),
                                   children, max_size=4),
                 max_leaves=12).map(lambda value: json.dumps(value).encode()),
))
def test_no_body_makes_a_500(api, raw):
    response = post(api, raw)
    assert response.status_code in (200, 400)
    assert response.mimetype == "application/json"
    assert set(response.get_json()) in ({"device_id", "name", "model"},
                                        {"error", "message"}, {"error", "message", "field"})
