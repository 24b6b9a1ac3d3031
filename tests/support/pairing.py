"""Helpers for the pairing_code / qr_code tests: the HTTP calls a device and a user make."""

from __future__ import annotations

import re

# Generous limits for tests that are not about rate limiting (they make many calls).
LOOSE_LIMITS = {
    "PAIRING_GUESS_LIMIT_PER_IP": "1000 per minute",
    "PAIRING_GUESS_LIMIT_PER_ACCOUNT": "1000 per minute",
    "PAIRING_CODE_CREATE_LIMIT": "1000 per minute",
    "DEVICE_FLOW_AUTHORIZE_LIMIT": "1000 per minute",
    "DEVICE_FLOW_TOKEN_LIMIT": "1000 per minute",
    "QR_LINK_LIMIT": "1000 per minute",
    "QR_IMAGE_LIMIT": "1000 per minute",
    "LINK_DECISION_LIMIT": "1000 per minute",
    "PAIRING_FAILURE_BREAKER_PER_MINUTE": 1000,
}

DEVICE_IP = "8.8.8.8"
USER_IP = "1.1.1.1"
CODE_FORMAT = re.compile(r"^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$")
TOKEN_PATH = "/api/v1/device/token"
# A scan: the browser says the person started the navigation. Without the header a QR
# link asks "Did you just scan...?" first, as when another site opened it (fetch_metadata).
FRESH_SCAN = {"Sec-Fetch-Site": "none"}


def device_env(ip: str = DEVICE_IP) -> dict:
    return {"REMOTE_ADDR": ip}


def issue_code(session) -> dict:
    response = session.post("/api/v1/pairing/codes")
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def redeem(client, code, *, device_id: str = "printer-0001", name: str = "Prusa in the lab",
           model: str | None = "MK4", ip: str = DEVICE_IP):
    body = {"code": code, "device_id": device_id, "name": name}
    if model is not None:
        body["model"] = model
    return client.post("/api/v1/pairing/redeem", json=body, environ_base=device_env(ip))


def authorize(client, *, device_id: str = "printer-0002", name: str = "Voron in the garage",
              model: str | None = "2.4", ip: str = DEVICE_IP, **kwargs):
    body = {"device_id": device_id, "name": name}
    if model is not None:
        body["model"] = model
    kwargs.setdefault("environ_base", device_env(ip))
    return client.post("/api/v1/device/authorize", json=body, **kwargs)


def started(client, **kwargs) -> dict:
    """``authorize`` that must succeed: the RFC 8628 answer as a dict."""
    response = authorize(client, **kwargs)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def qr_token(answer: dict) -> str:
    """The QR link's token in an authorize answer (its ``verification_uri_complete``)."""
    return answer["verification_uri_complete"].rsplit("/", 1)[1]


def qr_path(answer: dict) -> str:
    """The QR link of an authorize answer, as a path on this server."""
    return "/link/qr/" + qr_token(answer)


def poll(client, device_code: str, *, ip: str = DEVICE_IP):
    return client.post(TOKEN_PATH, json={"device_code": device_code},
                       environ_base=device_env(ip))


def poll_error(response) -> str:
    """The RFC 8628 error code of a refused token request (section 3.5: always 400)."""
    assert response.status_code == 400, (response.status_code, response.get_json())
    return response.get_json()["error"]


def enter_code(session, code: str):
    """Type a code on /link (the form), as the logged-in user."""
    return session.form_post("/link", {"code": code})


# The approval form names the request its page showed (link_pages.DecisionForm).
SHOWN_REQUEST = re.compile(r'name="authorization" type="hidden" value="([0-9a-f.]*)"')


def shown_request(html: str) -> str:
    """What an approval page's form names: its request's id and tag ("" on a page with
    nothing bound)."""
    found = SHOWN_REQUEST.search(html)
    return found.group(1) if found else ""


def decide(session, decision: str = "approve", *, shown: str | None = None):
    """Answer on the approval page as a person would: the page is drawn (now, unless
    ``shown`` names the request a page drawn earlier showed), then its button pressed."""
    if shown is None:
        shown = shown_request(session.get("/link/confirm").get_data(as_text=True))
    return session.form_post("/link/confirm", {"decision": decision, "authorization": shown})


# The link on from the question page ("Yes, I scanned it: continue"), with its one-time value.
QUESTION_LINK = re.compile(r'href="(/link/qr/[^"?]+\?answer=[^"]+)"')


def question_link(html: str) -> str:
    """Where the question page's "Yes, I scanned it" leads (its href, unescaped)."""
    from html import unescape

    found = QUESTION_LINK.search(html)
    assert found, "no question page link in the page"
    return unescape(found.group(1))


def me(client, token: str):
    return client.get("/api/v1/device/me", headers={"Authorization": f"Bearer {token}"})


def audit_rows(app, event: str | None = None) -> list:
    from sqlalchemy import select

    from tsd_server.extensions import db
    from tsd_server.models import AuditEvent

    with app.app_context():
        query = select(AuditEvent).order_by(AuditEvent.id)
        if event is not None:
            query = query.where(AuditEvent.event == event)
        rows = db.session.scalars(query).all()
        for row in rows:
            db.session.expunge(row)
        return rows


def switch(app, strategy: str, enabled: bool) -> None:
    from tsd_server.discovery import kill_switch

    with app.test_request_context():
        kill_switch.set_flag(strategy, enabled=enabled, reason="test", actor="cli")
