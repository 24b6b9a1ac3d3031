"""Who may call each route: one table classifies every (rule, method) of the app.

A route the table does not classify, or a row naming a route the app no longer has, fails
``test_the_table_classifies_every_route_and_nothing_else``: a new route gets reviewed here
before it ships. Each route is then called by every caller its class must refuse, with a
request that would act if it got through (real ids, codes and CSRF tokens of the world in
tests/support/route_access.py); each must be refused the way the contract says and leave
every table as it was. Last, the right caller gets the route's answer, so a matrix that
refused everyone would fail too. Ownership between accounts (IDOR) is
tests/test_route_access_ownership.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from flask import Flask

from tests.support import route_access
from tests.support.ip_match_world import fast_user_factory
from tests.support.pairing import FRESH_SCAN
from tests.support.route_access import (
    FORBIDDEN,
    INVALID_TOKEN,
    LOGIN_REDIRECT,
    LOGIN_REQUIRED,
    World,
    changed_tables,
    logged_in,
    refusal_of,
    snapshot,
)

world = route_access.world  # the fixture
app_config = route_access.app_config

ANYONE = "anyone"  # no credential: health, public diagnostics, log-in and sign-up forms
USER = "user"  # a logged-in session (pages: redirect to log in; /api/: 401 login_required)
ADMIN = "admin"  # a logged-in administrator (others logged in: 403)
DEVICE_TOKEN = "device token"  # Authorization: Bearer <access token>; cookies are nothing
# A device proves itself by what it sends (device_secret, pairing code, device code):
# neither a session nor another device's token stands in for it.
DEVICE_PROOF = "device proof"

ENDED = ("ended_session", "locked_session", "deleted_session")  # old cookies of admins
WRONG_CALLERS = {
    ANYONE: (),
    USER: ("anonymous", "device_token", "revoked_token", *ENDED),
    ADMIN: ("anonymous", "device_token", "revoked_token", *ENDED, "user", "demoted_admin"),
    DEVICE_TOKEN: ("anonymous", "user", "admin", "revoked_token"),
    DEVICE_PROOF: ("anonymous", "user", "admin", "device_token"),
}
RIGHT_CALLER = {ANYONE: "anonymous", USER: "user", ADMIN: "admin",
                DEVICE_TOKEN: "device_token", DEVICE_PROOF: "device"}


@dataclass(frozen=True)
class Call:
    """A request that does the route's job when the right caller sends it."""

    who: str
    ok: int  # the right caller's status
    path: str = ""  # the rule with the world's values; the rule itself when empty
    form: dict = field(default_factory=dict)
    json: dict | None = None
    headers: dict = field(default_factory=dict)
    # DEVICE_PROOF: what callers without the proof send instead, and the answer they get.
    forged: dict = field(default_factory=dict)
    refused: tuple[int, str] | None = None


NEW = "a new password 0123"
PAST = {"since": "2000-01-01T00:00:00Z", "until": "{settled}"}
TABLE: dict[tuple[str, str], Call] = {
    ("/", "GET"): Call(USER, 200),
    ("/account/password", "GET"): Call(USER, 200),
    ("/account/password", "POST"): Call(USER, 302, form={
        "current": "{password}", "password": NEW, "confirm": NEW}),
    ("/admin/", "GET"): Call(ADMIN, 302),
    ("/admin/audit", "GET"): Call(ADMIN, 200, "/admin/audit?email={owner_email}"),
    ("/admin/diagnostics", "GET"): Call(ADMIN, 200, "/admin/diagnostics?peer=8.8.4.4"),
    ("/admin/incident", "GET"): Call(ADMIN, 200),
    ("/admin/incident/affected.csv", "GET"): Call(
        ADMIN, 200, "/admin/incident/affected.csv?strategy=all&since=2000-01-01T00:00:00Z"
                    "&until=2100-01-01T00:00:00Z"),
    ("/admin/incident/lock-account", "POST"): Call(ADMIN, 302, form={
        "email": "{owner_email}", "reason": "test", "action": "lock"}),
    ("/admin/incident/revoke", "POST"): Call(ADMIN, 200, form={
        "strategy": "all", **PAST, "confirm": "yes"}),
    ("/admin/incident/revoke-account", "POST"): Call(ADMIN, 302, form={
        "email": "{owner_email}", "reason": "test", "confirm": "yes"}),
    ("/admin/kill-switches", "GET"): Call(ADMIN, 200),
    ("/admin/kill-switches", "POST"): Call(ADMIN, 302, form={
        "target": "all", "action": "disable", "reason": "test"}),
    ("/api/v1/client-address", "GET"): Call(ANYONE, 200),
    # Anyone may ask to be linked: nothing is granted until a person approves.
    ("/api/v1/device/authorize", "POST"): Call(ANYONE, 200, json={
        "device_id": "printer-0009", "name": "Asking printer"}),
    ("/api/v1/device/authorize/qr", "GET"): Call(
        DEVICE_PROOF, 200, headers={"X-Device-Code": "{device_code}"},
        forged={"X-Device-Code": "x" * 43}, refused=(400, "invalid_grant")),
    ("/api/v1/device/me", "GET"): Call(DEVICE_TOKEN, 200),
    ("/api/v1/device/token", "POST"): Call(
        DEVICE_PROOF, 400, json={"device_code": "{device_code}"},
        forged={"device_code": "x" * 43}, refused=(400, "invalid_grant")),
    ("/api/v1/devices", "GET"): Call(USER, 200),
    ("/api/v1/devices/<int:device_pk>", "DELETE"): Call(USER, 200),
    ("/api/v1/discovery/announce", "POST"): Call(
        DEVICE_PROOF, 200, json={"device_id": "{device_id}", "device_secret": "{device_secret}",
                                 "name": "Nearby Voron", "model": "Mk4"},
        forged={"device_secret": "f" * 43}, refused=(409, "device_id_taken")),
    ("/api/v1/discovery/nearby", "GET"): Call(USER, 200),
    ("/api/v1/discovery/nearby/<device_id>/link", "POST"): Call(USER, 200, json={}),
    ("/api/v1/discovery/offers/<offer_id>/confirm", "POST"): Call(
        USER, 200, json={"code": "{offer_code}"}),
    ("/api/v1/discovery/status", "GET"): Call(ANYONE, 200),
    ("/api/v1/openapi.json", "GET"): Call(ANYONE, 200),
    ("/api/v1/pairing/codes", "POST"): Call(USER, 201, json={}),
    ("/api/v1/pairing/redeem", "POST"): Call(
        DEVICE_PROOF, 201, json={"code": "{web_code}", "device_id": "printer-0008",
                                 "name": "Redeeming printer"},
        forged={"code": "BCDF-GHJK"}, refused=(400, "invalid_code")),
    ("/api/v1/ping", "GET"): Call(ANYONE, 200),
    ("/healthz", "GET"): Call(ANYONE, 200),
    ("/link", "GET"): Call(USER, 200),
    ("/link", "POST"): Call(USER, 302, form={"code": "{user_code}"}),
    ("/link/confirm", "GET"): Call(USER, 200),
    ("/link/confirm", "POST"): Call(USER, 302, form={
        "decision": "approve", "authorization": "{shown}"}),
    ("/link/qr/<token>", "GET"): Call(USER, 200, headers=FRESH_SCAN),
    ("/login", "GET"): Call(ANYONE, 200),
    ("/login", "POST"): Call(ANYONE, 302, form={
        "email": "{stranger_email}", "password": "{password}"}),
    ("/logout", "POST"): Call(USER, 302),
    ("/printers/<int:device_pk>/rename", "POST"): Call(USER, 302, form={"name": "Renamed"}),
    ("/printers/<int:device_pk>/unlink", "GET"): Call(USER, 200),
    ("/printers/<int:device_pk>/unlink", "POST"): Call(USER, 302),
    ("/printers/add", "GET"): Call(USER, 200),
    ("/printers/add/code", "GET"): Call(USER, 200),
    ("/printers/add/code", "POST"): Call(USER, 200),
    ("/printers/add/qr", "GET"): Call(USER, 200),
    ("/printers/nearby", "GET"): Call(USER, 200),
    ("/printers/nearby/<device_id>/link", "POST"): Call(USER, 302),
    ("/printers/nearby/offers/<offer_id>", "GET"): Call(USER, 200),
    ("/printers/nearby/offers/<offer_id>/confirm", "POST"): Call(
        USER, 302, form={"code": "{offer_code}"}),
    ("/printers/unlink-all", "POST"): Call(USER, 302, form={"confirm": "y"}),
    ("/register", "GET"): Call(ANYONE, 200),
    ("/register", "POST"): Call(ANYONE, 302, form={
        "email": "new-account@example.org", "display_name": "New", "password": NEW,
        "confirm": NEW}),
}
IGNORED_METHODS = {"HEAD", "OPTIONS"}  # Flask answers them from the GET view or by itself


def served_routes(app: Flask) -> set[tuple[str, str]]:
    return {(rule.rule, method) for rule in app.url_map.iter_rules()
            if rule.endpoint != "static" for method in rule.methods - IGNORED_METHODS}


def expected_refusal(who: str, caller: str, path: str) -> str:
    if who == DEVICE_TOKEN:
        return INVALID_TOKEN
    if who == ADMIN and caller in ("user", "demoted_admin"):
        return FORBIDDEN
    return LOGIN_REQUIRED if path.startswith("/api/") else LOGIN_REDIRECT


def send(world: World, caller: str, route: tuple[str, str], *, forged: bool = False):
    rule, method = route
    call = TABLE[route]
    path = world.fill(call.path or rule.replace("<int:", "<").replace("<", "{")
                      .replace(">", "}"))
    json, headers = world.fill(call.json), world.fill(call.headers)
    if forged and json is not None:
        json = {**json, **call.forged}
    elif forged:
        headers = {**headers, **call.forged}
    return world.callers[caller].send(method, path, form=world.fill(call.form), json=json,
                                      headers=headers)


def route_id(route: tuple[str, str]) -> str:
    return f"{route[1]} {route[0]}"


def test_the_table_classifies_every_route_and_nothing_else(app):
    """New routes cannot slip in unreviewed, and removed ones do not linger here."""
    served = served_routes(app)
    assert sorted(served - TABLE.keys()) == [], "routes nobody classified: add them to TABLE"
    assert sorted(TABLE.keys() - served) == [], "TABLE names routes the app does not have"


@pytest.mark.parametrize("route", sorted(TABLE), ids=route_id)
def test_wrong_callers_are_refused_and_change_nothing_and_the_right_one_is_served(
        world: World, route: tuple[str, str]):
    """Every wrong caller of the route's class is refused as the contract says, with no
    row changed; then the right caller gets the route's answer (the positive control)."""
    call = TABLE[route]
    proof = call.who == DEVICE_PROOF
    for caller in WRONG_CALLERS[call.who]:
        # A refused device proof is audited by design; nothing else may change.
        before = snapshot(world.app, skip=("audit_events",) if proof else ())
        response = send(world, caller, route, forged=proof)
        where = f"{route_id(route)} as {caller}: {response.status_code}"
        if proof:
            body = response.get_json(silent=True) or {}
            assert (response.status_code, body.get("error")) == call.refused, where
            assert "access_token" not in body and "confirmation" not in body, where
        else:
            assert refusal_of(response) == expected_refusal(call.who, caller, route[0]), where
        after = snapshot(world.app, skip=("audit_events",) if proof else ())
        assert changed_tables(before, after) == [], where
    response = send(world, RIGHT_CALLER[call.who], route)
    assert response.status_code == call.ok, response.get_data(as_text=True)[:500]
    assert refusal_of(response) is None


def test_the_device_flow_answers_pending_to_its_device_code(world: World):
    """The one right answer of the token route that is a 400 (RFC 8628 §3.5): the device
    code was taken; an unknown one is invalid_grant (above)."""
    response = send(world, "device", ("/api/v1/device/token", "POST"))
    assert response.get_json()["error"] == "authorization_pending"


def test_a_session_does_not_bind_a_request_a_device_starts(world: World):
    """Device calls never read cookies: a request started with a session cookie is held by
    nobody until a person reaches it by its code or QR link."""
    from sqlalchemy import select

    from tsd_server.extensions import db
    from tsd_server.models import DeviceAuthorization

    assert send(world, "user", ("/api/v1/device/authorize", "POST")).status_code == 200
    with world.app.app_context():
        rows = db.session.execute(select(DeviceAuthorization.bound_to_id).where(
            DeviceAuthorization.device_uid == "printer-0009")).all()
        db.session.remove()
    assert rows == [(None,)]


def test_a_deleted_accounts_cookie_does_not_log_in_the_next_account(app):
    """An account removed from the database (its owner asked) may leave copies of its
    cookie; the next account to sign up must not be logged in by them. SQLite gave the
    newest account's id to the next one until migration 0014."""
    from sqlalchemy import delete

    from tsd_server.extensions import db
    from tsd_server.models import User

    new_account = fast_user_factory(app)
    new_account(display_name="Someone earlier")
    gone_id, gone_email, _ = new_account(display_name="Leaving")
    old_cookie = route_access.cookie_copy(app, logged_in(app, gone_email, "gone"), "old")
    with app.app_context():
        db.session.execute(delete(User).where(User.id == gone_id))
        db.session.commit()
        db.session.remove()
    newcomer_id, _, _ = new_account(display_name="Newcomer")
    answer = old_cookie.send("GET", "/api/v1/devices")
    assert answer.status_code == 401, (
        f"the deleted account {gone_id}'s cookie is logged in as account {newcomer_id}")
