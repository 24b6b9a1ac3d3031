""""Printers near you": what a user may see, and its audit trail.

Pages refresh every few seconds, so an answer is audited when it changes, not per call.
The session cookie remembers the last audited answer, which keeps a normal browser's
refreshes away from the audit throttle. A client can replay an old cookie, though, so the
server also writes at most one row a minute per account and answer (``audit_throttle``),
keyed only by what the client cannot vary at will: the outcome and the devices listed,
never the address, the household or the forwarded headers (docs/security.md: the audit
log must not be floodable; a client holding many IPv6 /64s has as many households). The
price: a look with the same answer from another household within that minute (a copied
cookie elsewhere, say) is written only if that session looks again after the minute.
"""

from __future__ import annotations

import hashlib
from typing import Any

from flask import request, session
from limits import parse

from tsd_server import audit, audit_throttle, client_address, fetch_metadata
from tsd_server.clock import utcnow
from tsd_server.discovery.ip_match import announcements
from tsd_server.discovery.ip_match.eligibility import (
    HOUSEHOLD_LIMIT,
    OPENED_FROM_ANOTHER_SITE,
    STRATEGY,
    UserCheck,
    check_user,
    message_for,
)
from tsd_server.discovery.ip_match.offers import expires_in, is_live
from tsd_server.discovery.ip_match.settings import current
from tsd_server.extensions import db
from tsd_server.models import User

# Session key: the last audited answer (see _audit).
AUDITED_KEY = "ip_match_nearby_audited"
THROTTLE_KIND = "tsd-audit-nearby"
# Rows per account, whatever the answers: an account can make every answer new by moving
# printers of its own in and out of its household (a review wrote 170,000 rows a day from
# one address). The page looks every 5 s; a person's answers change far less often.
ACCOUNT_BUDGET_KIND = "tsd-audit-nearby-account"
ROWS_PER_ACCOUNT = parse("6 per minute")


def nearby(user: User) -> dict[str, Any]:
    """What the user may see: eligibility, and the live devices of their household.

    Not when the browser says another site started the request (a link or a redirect: the
    session cookie comes along on a top-level GET): looking counts the account towards
    the household breaker, so any site could otherwise block a network (an office's) for
    everyone by sending a few of its people here. Nothing is looked up, counted or listed
    then, for anyone who sends that header, so it cannot be used to look uncounted. A
    browser that sends no header (any browser, to a plain-http server) is still counted.
    """
    settings, now = current(), utcnow()
    if fetch_metadata.started_elsewhere(request.headers) in (None, fetch_metadata.NOT_SENT):
        check = check_user(user.id, settings, now)
    else:
        check = UserCheck(client_address.for_request(), OPENED_FROM_ANOTHER_SITE)
    devices: list[dict[str, Any]] = []
    rows = []
    if check.reason is None:
        rows = announcements.live_in_household(check.household or "", settings, now)
        if len(rows) > settings.max_devices_per_household:
            # A printer began announcing between the cap's count and this list: the cap
            # holds for what would be shown.
            check, rows = UserCheck(check.address, HOUSEHOLD_LIMIT), []
    for row in rows:
        # The row carries the offer's columns (NULL when the device has none).
        offered = row.public_id is not None and is_live(row, now)
        mine = offered and row.user_id == user.id
        devices.append({
            "device_id": row.device_uid, "name": row.name, "model": row.model,
            "last_seen": row.last_seen_at.isoformat(),
            "offer": ({"offer_id": row.public_id, "status": row.status,
                       "expires_in": expires_in(row, now)} if mine else None),
            "busy": offered and not mine,
        })
    _audit(user, check, devices)
    return {"eligible": check.reason is None, "reason": check.reason,
            "message": message_for(check.reason), "household": check.household,
            "poll_interval": settings.poll_interval, "devices": devices}


def _digest(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode("utf-8")).hexdigest()[:32]


def _audit(user: User, check: UserCheck, devices: list[dict[str, Any]]) -> None:
    """Audit what the user was shown when it changed: once per change per login, at most
    once a minute per account and answer whatever the cookie says, and at most
    ROWS_PER_ACCOUNT rows a minute per account. Each row lists every printer shown, and a
    row is due again within a minute of the last, so an account that keeps looking cannot
    be shown a printer for a minute or more without a row naming it."""
    ids = sorted(device["device_id"] for device in devices)
    outcome = check.reason or "listed"
    shown = _digest(outcome, check.address.household or "", *ids)
    if session.get(AUDITED_KEY) == shown:
        return
    if not audit_throttle.first_this_minute(THROTTLE_KIND,
                                            f"{user.id}:{_digest(outcome, *ids)}"):
        return  # the cookie keeps its old answer: this one is audited once the minute is over
    if not audit_throttle.within_budget(ROWS_PER_ACCOUNT, ACCOUNT_BUDGET_KIND, str(user.id)):
        return  # likewise: the answer shown once the budget allows is audited then
    session[AUDITED_KEY] = shown
    audit.record("ip_match_nearby", actor=f"user:{user.id}", outcome=outcome, user_id=user.id,
                 strategy=STRATEGY, address=check.address,
                 detail=("listed: " + ", ".join(ids)) if ids else "listed nothing")
    db.session.commit()
