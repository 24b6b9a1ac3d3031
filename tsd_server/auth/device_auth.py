"""``Authorization: Bearer <token>`` for device calls; cookies never authenticate a device."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import TypeVar

from flask import g, request
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from tsd_server.api.errors import ApiError
from tsd_server.auth.tokens import hashes_match, looks_like_access_token, token_hash
from tsd_server.clock import utcnow
from tsd_server.extensions import db
from tsd_server.models import Device, User

F = TypeVar("F", bound=Callable)

# last_seen_at is written at most this often per device, so device calls stay read-only.
LAST_SEEN_RESOLUTION = timedelta(minutes=1)


def _invalid(message: str) -> ApiError:
    error = ApiError(401, "invalid_token", message)
    error.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return error


def authenticate_device() -> Device:
    """The active device that presented the bearer token, or 401 ``invalid_token``."""
    if "access_token" in request.args:
        raise _invalid("Tokens are accepted only in the Authorization header, never in URLs.")
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or not looks_like_access_token(token):
        raise _invalid("A valid 'Authorization: Bearer <token>' header is required.")
    # The owner's display name comes in the same query (device/me shows it): one round trip
    # per device call, and the rest of the user row (password hash...) is never read.
    device = db.session.scalar(
        select(Device).where(Device.token_hash == token_hash(token))
        .options(joinedload(Device.owner).load_only(User.display_name)))
    if device is None or not hashes_match(device.token_hash, token):
        raise _invalid("The access token is unknown or has been revoked.")
    now = utcnow()
    if device.last_seen_at is None or now - device.last_seen_at >= LAST_SEEN_RESOLUTION:
        device.last_seen_at = now
        db.session.commit()
    return device


def device_required(view: F) -> F:
    @wraps(view)
    def wrapped(*args, **kwargs):
        g.device = authenticate_device()
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]
