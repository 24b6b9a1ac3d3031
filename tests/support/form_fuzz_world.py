"""The world the fuzzed pages act on, for tests/test_fuzz_forms.py (import the fixture into
the test module).

``world``: an ordinary user and an admin, each logged in at a public household address
(``HOME``), their printers, a device flow's request waiting for the user's answer and its QR
link, a printer announcing in the household and the user's ip_match offer for it. Its ids,
codes and emails are the real values the generated requests draw from, and ``World`` sends
a well-formed request the way the generated ones are sent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import update
from werkzeug.test import TestResponse

from tests.support.form_fuzz import Fuzzed, Part, fields_of, page_routes, send
from tests.support.ip_match_world import (
    InProcessEndpoint,
    Printer,
    fast_user_factory,
    layout_direct,
)
from tests.support.pairing import shown_request, started
from tsd_server.discovery import registry
from tsd_server.extensions import db, limiter
from tsd_server.models import User

ROLES = ("user", "admin")
HOME = "8.8.8.8"  # public: ip_match takes it as a household, so its views get past that check


@dataclass
class World:
    app: Flask
    login: Callable[..., Any]
    accounts: dict[str, tuple[str, str]]  # role: (email, password)
    sessions: dict[str, Any]  # role: a logged-in browser (conftest.UserSession)
    user_devices: list[int]
    user_code: str
    qr_token: str
    printer: Printer
    offer_id: str
    all_fields: list[str]
    url_values: dict[str, list[str]]
    field_values: list[str]

    def settle(self, role: str) -> list[str]:
        """The messages the last answer flashed (taken out of the session). A request that
        logged the browser out is followed by a new login, and one that cleared the session's
        CSRF token by fetching the new one."""
        session = self.sessions[role]
        with session.client.session_transaction() as cookie:
            flashed = [message for _, message in cookie.pop("_flashes", [])]
            logged_in, has_token = "_user_id" in cookie, "csrf_token" in cookie
        if not logged_in:
            # The log-in limit counts the test's own log-ins too; they are not under test.
            limiter.reset()
            self.sessions[role] = self.login(*self.accounts[role], REMOTE_ADDR=HOME)
        elif not has_token:
            session.refresh_csrf()
        return flashed

    def submit(self, role: str, method: str, path: str, **fields: str) -> TestResponse:
        """A well-formed request, sent as the generated ones are."""
        if method == "GET":
            request = Fuzzed(path, query=tuple(fields.items()))
        else:
            request = Fuzzed(path, body=tuple(Part(*pair) for pair in fields.items()))
        response = send(self.sessions[role], method, request)
        self.settle(role)
        return response

    def scalar(self, query: Any) -> Any:
        with self.app.app_context():
            value = db.session.scalar(query)
            db.session.remove()
        return value


def make_admin(app: Flask, user_id: int) -> None:
    with app.app_context():
        db.session.execute(update(User).where(User.id == user_id).values(is_admin=True))
        db.session.commit()
        db.session.remove()


@pytest.fixture
def world(app: Flask, login: Callable[..., Any], link_device: Callable[..., Any]) -> World:
    """A user with two printers, an ip_match offer and a device flow's request to answer,
    an admin with one printer, a printer announcing in their household and the request's QR
    link."""
    new_account = fast_user_factory(app)  # a cheap hash: logins here are many
    ids, accounts = {}, {}
    for role in ROLES:
        user_id, email, password = new_account(display_name=f"Fuzzed {role}")
        ids[role], accounts[role] = user_id, (email, password)
    make_admin(app, ids["admin"])
    user_devices = [link_device(ids["user"], f"printer-000{n}")[0] for n in (1, 2)]
    admin_device, _ = link_device(ids["admin"], "printer-0003")
    sessions = {role: login(*accounts[role], REMOTE_ADDR=HOME) for role in ROLES}
    flow = started(app.test_client())
    qr_token = flow["verification_uri_complete"].rsplit("/", 1)[1]
    # The user's session is bound to that request (the code typed), so that answers get as
    # far as comparing the request their page showed.
    assert sessions["user"].form_post("/link", {"code": flow["user_code"]}).status_code == 302
    shown = shown_request(sessions["user"].get("/link/confirm").get_data(as_text=True))
    printer = Printer(InProcessEndpoint(app, HOME, layout_direct), HOME, "Fuzzed printer")
    assert printer.announce().status == 200
    offer = sessions["user"].post(f"/api/v1/discovery/nearby/{printer.device_id}/link")
    assert offer.status_code == 200, offer.get_json()
    offer_id = offer.get_json()["offer_id"]
    all_fields = sorted({name for _, _, endpoint in page_routes()
                         for name in fields_of(app, endpoint)})
    return World(
        app=app, login=login, accounts=accounts, sessions=sessions, user_devices=user_devices,
        user_code=flow["user_code"], qr_token=qr_token, printer=printer, offer_id=offer_id,
        all_fields=all_fields,
        url_values={"device_pk": [str(pk) for pk in (*user_devices, admin_device)],
                    "token": [qr_token], "device_id": [printer.device_id, "printer-0001"],
                    "offer_id": [offer_id]},
        field_values=[accounts["user"][0], accounts["admin"][0], *registry.names(), "all",
                      "enable", "disable", "yes", "y", "approve", "deny", flow["user_code"],
                      shown, "123456", "2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z",
                      printer.device_id, "8.8.8.8", "2001:db8::1"])

