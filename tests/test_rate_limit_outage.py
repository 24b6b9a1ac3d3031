"""The rate-limit storage (Redis) down: rate-limited requests are refused with 503
``rate_limit_unavailable`` and Retry-After (an error page on web routes), never served
unlimited and never a 500 with a traceback per request. The outage is logged once a minute.

The storage is a Redis URI on a closed loopback port, so every storage call is refused.
A Redis that accepts and never answers: tests/test_rate_limit_stalled_redis.py.
"""

from __future__ import annotations

import logging
import re

import pytest

from tests.support.apps import another_app
from tests.support.pairing import authorize
from tests.support.rows import count_rows

CLOSED_PORT = "redis://127.0.0.1:1"
CSRF_FIELD = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


@pytest.fixture
def app_config():
    return {"RATELIMIT_STORAGE_URI": CLOSED_PORT}


def unavailable(response) -> None:
    assert response.status_code == 503, (response.status_code, response.get_data(as_text=True))
    assert response.headers["Retry-After"] == "10"


def test_api_route_answers_503_and_does_nothing(app, client):
    from tsd_server.models import AuditEvent, DeviceAuthorization

    response = authorize(client)
    unavailable(response)
    assert response.get_json()["error"] == "rate_limit_unavailable"
    assert "Rate limits cannot be checked" in response.get_json()["message"]
    # Fail-closed: the view never ran.
    assert count_rows(app, DeviceAuthorization) == 0
    assert count_rows(app, AuditEvent) == 0


def test_web_route_answers_an_error_page_and_logs_nobody_in(app, client, make_user):
    _, email, password = make_user()
    token = CSRF_FIELD.search(client.get("/login").get_data(as_text=True)).group(1)
    response = client.post("/login", data={"email": email, "password": password,
                                           "csrf_token": token})
    unavailable(response)
    assert response.mimetype == "text/html"
    assert "Temporarily unavailable" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302  # still logged out


def test_routes_without_limits_still_answer(app, client, make_user, link_device):
    """Linked printers keep working through the outage (docs/production.md)."""
    assert client.get("/healthz").status_code == 200
    user_id, _, _ = make_user()
    _, token = link_device(user_id)
    me = client.get("/api/v1/device/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200, me.get_json()


def test_qr_links_opened_from_another_site_write_no_audit_row_per_request(
        app, client, caplog, monkeypatch):
    """Such an opening is audited once a minute per address before any limit or login has
    run; with the storage that counts the minute down, it must not be audited per request
    (docs/security.md: the audit log must not be floodable), nor logged per request."""
    from tsd_server import audit_throttle
    from tsd_server.models import AuditEvent

    monkeypatch.setattr(audit_throttle, "_next_warning", [0.0])
    with caplog.at_level(logging.WARNING, logger="tsd_server.audit_throttle"):
        for attempt in range(5):
            page = client.get(f"/link/qr/{'Q' * 42}{attempt}",
                              headers={"Sec-Fetch-Site": "cross-site"})
            assert page.status_code == 200, page.status_code
    assert count_rows(app, AuditEvent) == 0
    warned = [r for r in caplog.records if r.name == "tsd_server.audit_throttle"]
    assert len(warned) == 1 and "audit throttle unavailable" in warned[0].getMessage()


def test_the_outage_is_logged_once_not_per_request(app, client, caplog):
    with caplog.at_level(logging.INFO):
        for _ in range(5):
            unavailable(authorize(client))
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].name == "tsd_server.api.errors"
    assert "rate-limit storage unavailable" in errors[0].getMessage()
    assert errors[0].exc_info is None  # no traceback


def test_swallowing_storage_errors_cannot_be_switched_on(app, database, monkeypatch):
    """TSD_RATELIMIT_SWALLOW_ERRORS=true would serve every request unlimited while Redis is
    down. (The Limiter is one object per process and keeps the first app's choice, so it is
    reset here to read this app's setting, as a fresh process would.)"""
    from tsd_server.extensions import limiter
    from tsd_server.models import DeviceAuthorization

    monkeypatch.setattr(limiter, "_swallow_errors", None)
    monkeypatch.setenv("TSD_RATELIMIT_SWALLOW_ERRORS", "true")
    with another_app(database, RATELIMIT_STORAGE_URI=CLOSED_PORT,
                     RATELIMIT_SWALLOW_ERRORS=True) as application:
        assert application.config["RATELIMIT_SWALLOW_ERRORS"] is False
        response = authorize(application.test_client())
        unavailable(response)
        assert response.get_json()["error"] == "rate_limit_unavailable"
        assert count_rows(application, DeviceAuthorization) == 0
