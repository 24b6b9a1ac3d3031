"""The callers and the world of tests/test_route_access_*.py (import the fixtures).

``world``: real objects made through the app, owned by an ordinary account (A): a linked
printer and its token, a revoked token, an ip_match offer and the code its printer shows, a
device flow's request that A reached by its user code (and its QR link), a pairing code.
Its callers (``Caller``) are one kind each: nobody, A, a stranger (B), an admin, A's device
token, and the old cookies of accounts whose sessions ended (logged out, locked, deleted)
or whose admin role was taken away. Every caller holds a CSRF token its cookie accepts, so
that a refusal comes from the access check, never from CSRF.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete, select, update
from werkzeug.test import TestResponse

from tests.conftest import CSRF_META
from tests.support.ip_match_fixtures import UNLIMITED
from tests.support.ip_match_world import (
    InProcessEndpoint,
    Printer,
    fast_user_factory,
    layout_direct,
)
from tests.support.pairing import LOOSE_LIMITS, shown_request, started
from tsd_server.extensions import db
from tsd_server.models import Device, User

HOME = "8.8.8.8"  # public: ip_match takes it as a household
LOGINS = {"LOGIN_LIMIT_PER_IP": "1000 per minute", "LOGIN_LIMIT_PER_EMAIL": "1000 per minute",
          "SIGN_UP_LIMIT_PER_IP": "1000 per minute",
          "PASSWORD_CHANGE_LIMIT_PER_ACCOUNT": "1000 per minute"}
CONFIG = {**LOOSE_LIMITS, **UNLIMITED, **LOGINS}
PASSWORD = "correct horse battery"


@dataclass
class Caller:
    """A browser or device of one kind: its cookie jar, a CSRF token, extra headers."""

    name: str
    client: FlaskClient
    csrf: str
    headers: dict[str, str] = field(default_factory=dict)

    def send(self, method: str, path: str, *, form: dict | None = None,
             json: dict | None = None, headers: dict | None = None) -> TestResponse:
        all_headers = {"X-CSRFToken": self.csrf, **self.headers, **(headers or {})}
        options: dict[str, Any] = {"method": method, "headers": all_headers,
                                   "environ_base": {"REMOTE_ADDR": HOME}}
        if json is not None:
            options["json"] = json
        elif method != "GET" and not path.startswith("/api/"):
            options["data"] = {"csrf_token": self.csrf, **(form or {})}
        return self.client.open(path, **options)


@dataclass
class World:
    app: Flask
    callers: dict[str, Caller]  # by kind: "anonymous", "user" (A), "stranger" (B), ...
    values: dict[str, str]  # what requests name: ids, codes, tokens, emails

    def fill(self, template: Any) -> Any:
        """``template`` with ``{name}`` replaced by the world's values (also in dicts)."""
        if isinstance(template, dict):
            return {key: self.fill(value) for key, value in template.items()}
        return template.format(**self.values) if isinstance(template, str) else template


def csrf_of(client: FlaskClient, path: str) -> str:
    page = client.get(path, environ_base={"REMOTE_ADDR": HOME}).get_data(as_text=True)
    return CSRF_META.search(page).group(1)


def logged_in(app: Flask, email: str, name: str) -> Caller:
    client = app.test_client()
    token = csrf_of(client, "/login")
    response = client.post("/login", data={"email": email, "password": PASSWORD,
                                           "csrf_token": token},
                           environ_base={"REMOTE_ADDR": HOME})
    assert response.status_code == 302, response.get_data(as_text=True)
    return Caller(name, client, csrf_of(client, "/"))


def cookie_copy(app: Flask, caller: Caller, name: str) -> Caller:
    """Another browser holding a copy of ``caller``'s session cookie (and its CSRF token)."""
    copy = app.test_client()
    copy.set_cookie("session", caller.client.get_cookie("session").value)
    return Caller(name, copy, caller.csrf)


def anonymous(app: Flask, name: str = "anonymous", **headers: str) -> Caller:
    client = app.test_client()
    return Caller(name, client, csrf_of(client, "/login"), headers)


def in_app(app: Flask, work) -> Any:
    with app.test_request_context():
        result = work()
        db.session.commit()
        db.session.remove()
    return result


@pytest.fixture
def app_config() -> dict:
    return dict(CONFIG)


@pytest.fixture
def world(app: Flask, link_device, clock) -> World:
    """A's things and every kind of caller, made through the app's own services and routes."""
    from tsd_server import devices
    from tsd_server.auth import accounts

    new_account = fast_user_factory(app)
    # The deleted account comes first: SQLite must not hand its id to a later account here.
    ids, emails = {}, {}
    for role in ("deleted", "owner", "stranger", "admin", "ended", "locked", "demoted"):
        ids[role], emails[role], _ = new_account(display_name=f"Route access {role}")
    admins = ("deleted", "admin", "ended", "locked", "demoted")
    in_app(app, lambda: db.session.execute(
        update(User).where(User.id.in_([ids[role] for role in admins])).values(is_admin=True)))
    sessions = {role: logged_in(app, emails[role], role) for role in emails}

    device_pk, token = link_device(ids["owner"], "printer-0001", name="Owner's Prusa")
    revoked_pk, revoked_token = link_device(ids["owner"], "printer-0002")
    in_app(app, lambda: devices.unlink(db.session.get(Device, revoked_pk),
                                       db.session.get(User, ids["owner"])))
    # The links are a minute old: an incident window can end after them (check_ended).
    settled = clock.now + timedelta(minutes=1)
    clock.advance(minutes=2)

    owner = sessions["owner"]
    flow = started(app.test_client())
    assert owner.send("POST", "/link", form={"code": flow["user_code"]}).status_code == 302
    shown = shown_request(owner.send("GET", "/link/confirm").get_data(as_text=True))
    printer = Printer(InProcessEndpoint(app, HOME, layout_direct), HOME, "Nearby Voron")
    assert printer.announce().status == 200
    offer = owner.send("POST", f"/api/v1/discovery/nearby/{printer.device_id}/link")
    assert offer.status_code == 200, offer.get_json()
    shown_code = printer.announce().json["confirmation"]["code"]
    issued = owner.send("POST", "/api/v1/pairing/codes")
    assert issued.status_code == 201, issued.get_json()

    # Sessions that ended: a copy of the cookie is kept, then the account logs out
    # everywhere, is locked by an operator, is deleted, or loses its admin role.
    stale = {f"{role}_session": cookie_copy(app, sessions[role], f"{role}_session")
             for role in ("ended", "locked", "deleted")}
    assert sessions["ended"].send("POST", "/logout").status_code == 302
    in_app(app, lambda: accounts.lock(db.session.get(User, ids["locked"]), actor="cli",
                                      reason="route access test"))
    in_app(app, lambda: db.session.execute(delete(User).where(User.id == ids["deleted"])))
    in_app(app, lambda: db.session.execute(
        update(User).where(User.id == ids["demoted"]).values(is_admin=False)))

    callers = {
        "anonymous": anonymous(app),
        "device": Caller("device", app.test_client(), ""),  # no cookie at all
        "user": owner, "stranger": sessions["stranger"], "admin": sessions["admin"],
        "device_token": anonymous(app, "device_token", Authorization=f"Bearer {token}"),
        "revoked_token": anonymous(app, "revoked_token",
                                   Authorization=f"Bearer {revoked_token}"),
        "demoted_admin": sessions["demoted"], **stale}
    values = {"device_pk": str(device_pk), "access_token": token, "device_id": printer.device_id,
              "device_secret": printer.secret, "offer_id": offer.get_json()["offer_id"],
              "offer_code": shown_code, "user_code": flow["user_code"],
              "device_code": flow["device_code"], "shown": shown,
              "token": flow["verification_uri_complete"].rsplit("/", 1)[1],
              "web_code": issued.get_json()["code"], "owner_email": emails["owner"],
              "stranger_email": emails["stranger"], "password": PASSWORD,
              "settled": settled.isoformat()}
    return World(app, callers, values)


# --- what a request changed -----------------------------------------------------------

Snapshot = dict[str, Counter[str]]


def snapshot(app: Flask, *, skip: tuple[str, ...] = ()) -> Snapshot:
    """Every row of every table but those named in ``skip``."""
    rows = {}
    with app.app_context(), db.engine.connect() as connection:
        for table in db.metadata.sorted_tables:
            if table.name not in skip:
                rows[table.name] = Counter(repr(tuple(row))
                                           for row in connection.execute(select(table)))
    return rows


def changed_tables(before: Snapshot, after: Snapshot) -> list[str]:
    return sorted(name for name in before if before[name] != after[name])


# --- how a request was refused --------------------------------------------------------

LOGIN_REDIRECT = "redirect to /login?next="
LOGIN_REQUIRED = "401 login_required"
INVALID_TOKEN = "401 invalid_token"
FORBIDDEN = "403"


def refusal_of(response: TestResponse) -> str | None:
    """Which access refusal ``response`` is, or None when it is none of them."""
    if response.status_code == 302:
        target = urlsplit(response.headers["Location"])
        if target.path == "/login" and "next" in parse_qs(target.query):
            return LOGIN_REDIRECT
    if response.status_code == 401:
        error = (response.get_json(silent=True) or {}).get("error")
        return {"login_required": LOGIN_REQUIRED, "invalid_token": INVALID_TOKEN}.get(error)
    if response.status_code == 403 and not response.is_json:
        return FORBIDDEN  # a page; no /api/ route is for admins
    return None
