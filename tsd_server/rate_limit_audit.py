"""A request a rate limit refused is audited (``rate_limited``), at most once a minute per
limit key, so a flood cannot flood the log too (tsd_server/audit_throttle.py). Given to
Flask-Limiter as ``on_breach`` by the limits that guard codes and passwords."""

from __future__ import annotations

import logging

from flask import request
from flask_limiter import RequestLimit
from sqlalchemy.exc import SQLAlchemyError

from tsd_server import audit, audit_throttle
from tsd_server.extensions import db

log = logging.getLogger(__name__)


def audit_breach(request_limit: RequestLimit) -> None:
    """Record a refused request, once a minute per limit key at most."""
    if not audit_throttle.first_this_minute("tsd-audit-429", request_limit.key):
        return None
    actor, user_id = audit.request_actor()
    try:
        audit.record("rate_limited", actor=actor, outcome="refused", user_id=user_id,
                     strategy=_strategy_of_endpoint(),
                     detail=f"{request_limit.limit} on {request.endpoint} "
                            f"({_counted_key(request_limit)[:80]})")
        db.session.commit()
    except SQLAlchemyError:
        db.session.rollback()
        log.exception("could not audit a rate-limited request")
    return None


def _counted_key(request_limit: RequestLimit) -> str:
    """Whom the limit counted (``addr:…``, ``user:…``, ``email:<hmac>``): the key function's
    value, which Flask-Limiter passes before the scope."""
    return str(request_limit.request_args[-2])


def _strategy_of_endpoint() -> str | None:
    blueprint = request.blueprint or ""
    if blueprint.startswith("pairing"):
        return "pairing_code"
    if blueprint.startswith("qr"):
        return "qr_code"
    return None
