"""At most one audit row a minute per kind of refusal and client: for refusals that can
come as fast as a rate limit allows, so that nobody can fill the audit log with them
(docs/security.md: the audit log must not be floodable). The first one in each minute is
kept, which is the trace an incident needs; counting uses the rate-limit storage, so it is
shared by every process where that storage is (Redis)."""

from __future__ import annotations

import logging
from time import monotonic

from flask import current_app
from limits import RateLimitItem, parse

from tsd_server.extensions import limiter

log = logging.getLogger(__name__)

ONCE_A_MINUTE = parse("1 per minute")
WARNING_INTERVAL = 60.0  # seconds: a failing storage is logged once a minute per process
_next_warning = [0.0]


def first_this_minute(kind: str, key: str, *, fail_open: bool = True) -> bool:
    """True for the first call a minute per ``kind`` and ``key`` (``within_budget``)."""
    return within_budget(ONCE_A_MINUTE, kind, key, fail_open=fail_open)


def within_budget(budget: RateLimitItem, kind: str, key: str, *,
                  fail_open: bool = True) -> bool:
    """True for the calls within ``budget`` (say 6 per minute) per ``kind`` and ``key``.

    If the storage fails, ``fail_open`` decides. Open (audit) suits a refusal that a route's
    rate limit counted first: with the storage down that limit refuses before this runs, so
    only a brief failure between the two gets here, and auditing too much beats auditing
    nothing. A caller that no limit guards must fail closed: open, anyone could write one
    row per request for as long as Redis is down."""
    prefix = str(current_app.config.get("RATELIMIT_KEY_PREFIX") or "")
    try:
        return limiter.limiter.hit(budget, prefix, kind, key)
    except Exception as error:  # noqa: BLE001 - any failure: the storage cannot count
        now = monotonic()
        if now >= _next_warning[0]:  # not a line per request while Redis is down
            _next_warning[0] = now + WARNING_INTERVAL
            log.warning("audit throttle unavailable (%s: %s): refusals it counts are audited "
                        "without it, QR links opened from elsewhere not at all (logged at "
                        "most once a minute)", type(error).__name__, error)
        return fail_open
