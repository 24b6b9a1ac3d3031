"""Device access tokens: how they look, how they are stored, how devices present them, and
how an owner revokes them (refused at once, only by the owner, only with CSRF)."""

from __future__ import annotations

import hashlib
import re

import pytest
from sqlalchemy import select

from tsd_server.auth.tokens import (
    TOKEN_PREFIX,
    hashes_match,
    looks_like_access_token,
    new_access_token,
    token_hash,
)
from tsd_server.extensions import db
from tsd_server.models import AuditEvent, Device

TOKEN_SHAPE = re.compile(r"^tsd_at_[A-Za-z0-9_-]{43}$")  # 32 bytes, base64url, no padding


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def me(client, token: str | None = None, **kwargs):
    headers = kwargs.pop("headers", {})
    if token is not None:
        headers = {**bearer(token), **headers}
    return client.get("/api/v1/device/me", headers=headers, **kwargs)


def assert_invalid_token(response, challenge: str = 'Bearer error="invalid_token"'):
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_token"
    assert response.get_json()["message"]
    assert response.headers["WWW-Authenticate"] == challenge


def assert_no_credentials(response):
    """RFC 6750 §3.1: a request without any authentication information (no Authorization
    header, or another scheme) gets a challenge without an error code."""
    assert_invalid_token(response, challenge="Bearer")


def device_row(app, pk: int) -> Device:
    with app.app_context():
        device = db.session.get(Device, pk)
        db.session.expunge(device)
        return device


# --- the token itself ----------------------------------------------------------------------


def test_token_shape_and_uniqueness():
    tokens = {new_access_token() for _ in range(2000)}
    assert len(tokens) == 2000
    for token in tokens:
        assert TOKEN_SHAPE.match(token)
        assert looks_like_access_token(token)


def test_token_hash_is_sha256_hex_and_compared_exactly():
    token = new_access_token()
    assert token_hash(token) == hashlib.sha256(token.encode()).hexdigest()
    assert hashes_match(token_hash(token), token)
    assert not hashes_match(token_hash(token), token[:-1] + ("A" if token[-1] != "A" else "B"))
    assert not hashes_match(None, token)


@pytest.mark.parametrize("value", ["", TOKEN_PREFIX, "tsd_at_short", "xyz_at_" + "a" * 43,
                                   TOKEN_PREFIX + "a" * 200])
def test_values_that_are_not_tokens(value):
    assert not looks_like_access_token(value)


# --- storage -------------------------------------------------------------------------------


def test_token_is_stored_only_as_its_hash(app, make_user, link_device):
    user_id, _, _ = make_user()
    pk, token = link_device(user_id)
    secret_part = token[len(TOKEN_PREFIX):]
    with app.app_context():
        device = db.session.get(Device, pk)
        assert device.token_hash == token_hash(token)
        assert device.token_hint == token[:len(TOKEN_PREFIX) + 4]
        # Nowhere in the devices or audit tables does the token (or most of it) appear.
        for table in ("devices", "audit_events"):
            for row in db.session.execute(db.text(f"SELECT * FROM {table}")):
                for value in row:
                    assert secret_part[4:] not in str(value)


# --- presenting the token ------------------------------------------------------------------


def test_device_me(app, client, make_user, link_device, clock):
    user_id, _, _ = make_user(display_name="Alice")
    pk, token = link_device(user_id, device_uid="printer-0042", name="Workshop Mk4")
    response = me(client, token)
    assert response.status_code == 200
    body = response.get_json()
    assert body == {
        "device": {"id": "printer-0042", "name": "Workshop Mk4", "model": "Mk4",
                   "linked_via": "pairing_code", "linked_at": body["device"]["linked_at"]},
        "owner": {"display_name": "Alice"},
    }
    assert body["device"]["linked_at"].endswith("+00:00")
    assert me(client, token, headers={"Authorization": f"bearer {token}"}).status_code == 200


def test_last_seen_is_recorded_at_most_once_a_minute(app, client, make_user, link_device, clock):
    user_id, _, _ = make_user()
    pk, token = link_device(user_id)
    assert device_row(app, pk).last_seen_at is None
    me(client, token)
    first = device_row(app, pk).last_seen_at
    assert first == clock.now
    clock.advance(seconds=30)
    me(client, token)
    assert device_row(app, pk).last_seen_at == first
    clock.advance(seconds=31)
    me(client, token)
    assert device_row(app, pk).last_seen_at == clock.now


UNKNOWN = TOKEN_PREFIX + "A" * 43


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer "},
    {"Authorization": f"Bearer {UNKNOWN}"},
    {"Authorization": "Bearer not-a-token-at-all"},
    {"Authorization": f"bearer {UNKNOWN}"},
], ids=["scheme only", "blank", "unknown", "garbage", "lower case"])
def test_invalid_tokens_are_401(client, headers):
    assert_invalid_token(me(client, headers=headers))


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": ""},
    {"Authorization": f"Basic {UNKNOWN}"},
    {"Authorization": f"Token {UNKNOWN}"},
], ids=["none", "empty", "basic", "wrong scheme"])
def test_no_bearer_credentials_are_401_without_an_error_code(client, headers):
    assert_no_credentials(me(client, headers=headers))


def test_altered_token_is_refused(client, make_user, link_device):
    user_id, _, _ = make_user()
    _, token = link_device(user_id)
    assert me(client, token).status_code == 200
    assert_invalid_token(me(client, token[:-1]))
    assert_invalid_token(me(client, token + "x"))
    assert_invalid_token(me(client, token.upper()))
    assert_invalid_token(me(client, headers={"Authorization": f"Bearer {token}, {token}"}))


def test_token_in_the_url_is_refused(client, make_user, link_device):
    user_id, _, _ = make_user()
    _, token = link_device(user_id)
    assert_invalid_token(client.get("/api/v1/device/me", query_string={"access_token": token}))
    # Even together with a valid header: URLs end up in logs, so the caller must learn.
    assert_invalid_token(me(client, token, query_string={"access_token": token}))


def test_user_session_does_not_authenticate_a_device(make_user, login, link_device):
    user_id, email, password = make_user()
    link_device(user_id)
    session = login(email, password)
    assert_no_credentials(session.get("/api/v1/device/me"))


# --- revocation ----------------------------------------------------------------------------


def test_owner_revokes_through_the_api_and_the_token_dies_at_once(
        app, client, make_user, login, link_device, clock):
    user_id, email, password = make_user()
    pk, token = link_device(user_id)
    other_pk, other_token = link_device(user_id, device_uid="printer-0002")
    session = login(email, password, REMOTE_ADDR="8.8.8.8")
    assert me(client, token).status_code == 200

    response = session.delete(f"/api/v1/devices/{pk}")
    assert response.status_code == 200 and response.get_json() == {"status": "unlinked"}
    assert_invalid_token(me(client, token))
    assert me(client, other_token).status_code == 200  # only that device

    device = device_row(app, pk)
    assert device.token_hash is None and device.revoked_at == clock.now
    assert device.needs_relink is False
    with app.app_context():
        [row] = db.session.scalars(select(AuditEvent).where(AuditEvent.event == "revocation"))
        assert (row.actor, row.device_id, row.user_id) == (f"user:{user_id}", pk, user_id)
        assert (row.client_ip, row.peer_ip) == ("8.8.8.8", "8.8.8.8")

    listed = session.get("/api/v1/devices").get_json()["devices"]
    assert [d["pk"] for d in listed] == [other_pk]
    assert session.delete(f"/api/v1/devices/{pk}").status_code == 404


def test_revoke_without_a_valid_csrf_token_is_refused(client, make_user, login, link_device):
    user_id, email, password = make_user()
    pk, token = link_device(user_id)
    _, other_email, other_password = make_user()
    other_users_token = login(other_email, other_password).csrf
    session = login(email, password)
    for headers in ({}, {"X-CSRFToken": "forged"}, {"X-CSRFToken": other_users_token}):
        response = session.client.delete(f"/api/v1/devices/{pk}", headers=headers)
        assert response.status_code == 400
        assert response.get_json()["error"] == "csrf_failed"
    assert me(client, token).status_code == 200


def test_only_the_owner_can_revoke(client, make_user, login, link_device):
    owner_id, _, _ = make_user()
    pk, token = link_device(owner_id)
    _, email, password = make_user()
    stranger = login(email, password)
    response = stranger.delete(f"/api/v1/devices/{pk}")
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"
    assert stranger.delete("/api/v1/devices/999999").get_json() == response.get_json()
    assert stranger.get("/api/v1/devices").get_json() == {"devices": []}
    assert stranger.form_post(f"/printers/{pk}/unlink", {}).status_code == 404
    assert me(client, token).status_code == 200


def test_device_list_never_shows_token_material(make_user, login, link_device):
    user_id, email, password = make_user()
    _, token = link_device(user_id)
    session = login(email, password)
    [listed] = session.get("/api/v1/devices").get_json()["devices"]
    assert set(listed) == {"id", "name", "model", "linked_via", "linked_at", "pk", "active",
                           "needs_relink", "linked_from_ip", "last_seen_at"}
    assert token[len(TOKEN_PREFIX):][4:] not in str(listed)


def test_owner_unlinks_through_the_dashboard_form(client, make_user, login, link_device):
    user_id, email, password = make_user()
    pk, token = link_device(user_id)
    session = login(email, password)
    assert session.client.post(f"/printers/{pk}/unlink").status_code == 400  # no CSRF token
    assert me(client, token).status_code == 200
    response = session.form_post(f"/printers/{pk}/unlink", {})
    assert response.status_code == 302
    assert_invalid_token(me(client, token))


def test_relinking_replaces_the_token(client, make_user, link_device):
    user_id, _, _ = make_user()
    pk, old = link_device(user_id, device_uid="printer-0009")
    same_pk, new = link_device(user_id, device_uid="printer-0009")
    assert same_pk == pk and new != old
    assert_invalid_token(me(client, old))
    assert me(client, new).status_code == 200
