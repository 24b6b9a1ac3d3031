"""The global failure breaker: a wave of wrong codes switches pairing_code off.

Per-address and per-account limits bound one attacker; many addresses and accounts together
are bounded only by the total. Every invalid code is an audit row (``code_invalid``), so
the total over the last minute is one indexed count in the database every process shares.
When it exceeds ``PAIRING_FAILURE_BREAKER_PER_MINUTE``, pairing_code is switched off with
actor "auto" (the kill switch audits the toggle; a ``breaker_trip`` row says why) and stays
off until an admin switches it back on.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import bindparam, func, select

from tsd_server import audit, single_statement
from tsd_server.clock import utcnow
from tsd_server.discovery import kill_switch
from tsd_server.models import AuditEvent

log = logging.getLogger(__name__)

STRATEGY = "pairing_code"
EVENT = "code_invalid"
WINDOW = timedelta(minutes=1)


def record_invalid_code(*, where: str, actor: str, user_id: int | None = None,
                        device_uid: str | None = None) -> None:
    """Audit one wrong code, then trip the breaker if the wave is too big.

    The row is written at once on its own (``audit.record_now``): a refused code changes
    nothing else. So the caller's session must hold no uncommitted writes.
    """
    audit.record_now(EVENT, actor=actor, outcome="refused", user_id=user_id,
                     device_uid=device_uid, strategy=STRATEGY, detail=where)
    check()


_RECENT = select(func.count()).select_from(AuditEvent).where(
    AuditEvent.event == EVENT, AuditEvent.strategy == STRATEGY,
    AuditEvent.at > bindparam("since"))


def recent_failures(since: datetime | None = None) -> int:
    """Invalid codes in the last minute (or since ``since``, if later): one statement on its
    own, outside any transaction."""
    window_start = utcnow() - WINDOW
    row = single_statement.first(_RECENT, {"since": max(since or window_start, window_start)})
    return row[0] if row else 0


def check() -> bool:
    """Trip when the last minute's failures exceed the setting; True when it tripped now.
    Failures before pairing_code was last switched on are forgiven: otherwise an admin who
    switches it on within the minute after a trip sees the next wrong code trip it again."""
    threshold = int(current_app.config["PAIRING_FAILURE_BREAKER_PER_MINUTE"])
    if threshold <= 0:
        return False
    failures = recent_failures()
    if failures <= threshold or not kill_switch.is_enabled(STRATEGY, fresh=True):
        return False
    failures = recent_failures(since=kill_switch.last_switched_on(STRATEGY))
    if failures <= threshold:
        return False
    reason = (f"failure breaker: {failures} invalid codes within a minute "
              f"(limit {threshold}); switch pairing_code on again once it is understood")
    audit.record("breaker_trip", actor="auto", outcome="tripped", strategy=STRATEGY,
                 detail=reason)  # committed with the switch-off, or not at all
    if kill_switch.set_flag(STRATEGY, enabled=False, reason=reason, actor="auto",
                            only_if_on=True) is None:
        return False  # another request tripped it a moment ago
    log.error("pairing_code switched off: %s", reason)
    return True
