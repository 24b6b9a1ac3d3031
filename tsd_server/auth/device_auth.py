"""``Authorization: Bearer <token>`` for device calls; cookies never authenticate a device."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import wraps
from typing import TypeVar

from flask import g, request
from sqlalchemy import bindparam, or_, select, update

from tsd_server import single_statement
from tsd_server.api.errors import ApiError
from tsd_server.auth.tokens import hashes_match, looks_like_access_token, token_hash
from tsd_server.clock import utcnow
from tsd_server.models import Device, User
from tsd_server.models.device import public_json

F = TypeVar("F", bound=Callable)

# last_seen_at is written at most this often per device, so device calls stay read-only.
LAST_SEEN_RESOLUTION = timedelta(minutes=1)


def _invalid(message: str, *, bearer_sent: bool = True) -> ApiError:
    """401 ``invalid_token``. Its challenge names the error only when the request tried the
    Bearer scheme: RFC 6750 §3.1 says a request without any authentication information (no
    Authorization header, or one of another scheme) gets a challenge without an error code."""
    error = ApiError(401, "invalid_token", message)
    error.headers["WWW-Authenticate"] = ('Bearer error="invalid_token"' if bearer_sent
                                         else "Bearer")
    return error


@dataclass(frozen=True)
class AuthenticatedDevice:
    """The calling device, as device calls need it: its row and its owner's display name."""

    pk: int
    owner_id: int
    device_uid: str
    name: str
    model: str | None
    linked_via: str
    linked_at: datetime
    owner_display_name: str

    def to_json(self) -> dict:
        return public_json(self)


_DEVICES, _USERS = Device.__table__, User.__table__
# One statement, outside any transaction (single_statement): a device call is one round trip.
# Only what device calls show is read; the owner's password hash and the like never are.
# The owner's name is a scalar subquery, not a join: less for PostgreSQL to plan
# (bench/statements.py measured 0.92 of the join's time per call).
_OWNER_NAME = (select(_USERS.c.display_name).where(_USERS.c.id == _DEVICES.c.owner_id)
               .scalar_subquery())
_BY_TOKEN_HASH = (
    select(_DEVICES.c.id, _DEVICES.c.owner_id, _DEVICES.c.device_uid, _DEVICES.c.name,
           _DEVICES.c.model, _DEVICES.c.linked_via, _DEVICES.c.linked_at,
           _DEVICES.c.token_hash, _DEVICES.c.last_seen_at, _OWNER_NAME.label("display_name"))
    .where(_DEVICES.c.token_hash == bindparam("token_hash")))
# Conditional, so concurrent calls of one device write it once.
_SEEN = (update(_DEVICES)
         .where(_DEVICES.c.id == bindparam("device_pk"), or_(
             _DEVICES.c.last_seen_at.is_(None),
             _DEVICES.c.last_seen_at <= bindparam("seen_before")))
         .values(last_seen_at=bindparam("seen_at", type_=_DEVICES.c.last_seen_at.type)))


def authenticate_device() -> AuthenticatedDevice:
    """The active device that presented the bearer token, or 401 ``invalid_token``."""
    if "access_token" in request.args:
        raise _invalid("Tokens are accepted only in the Authorization header, never in URLs.")
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer":
        raise _invalid("A valid 'Authorization: Bearer <token>' header is required.",
                       bearer_sent=False)
    if not token or not looks_like_access_token(token):
        raise _invalid("A valid 'Authorization: Bearer <token>' header is required.")
    row = single_statement.first(_BY_TOKEN_HASH, {"token_hash": token_hash(token)})
    if row is None or not hashes_match(row.token_hash, token):
        raise _invalid("The access token is unknown or has been revoked.")
    now = utcnow()
    if row.last_seen_at is None or now - row.last_seen_at >= LAST_SEEN_RESOLUTION:
        single_statement.rowcount(_SEEN, {"device_pk": row.id,
                                          "seen_before": now - LAST_SEEN_RESOLUTION,
                                          "seen_at": now})
    return AuthenticatedDevice(
        pk=row.id, owner_id=row.owner_id, device_uid=row.device_uid, name=row.name,
        model=row.model, linked_via=row.linked_via, linked_at=row.linked_at,
        owner_display_name=row.display_name)


def device_required(view: F) -> F:
    @wraps(view)
    def wrapped(*args, **kwargs):
        g.device = authenticate_device()
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]
