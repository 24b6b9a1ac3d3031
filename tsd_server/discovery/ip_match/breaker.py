"""The anomaly breaker: too many accounts in one household blocks it; many blocks stop all.

In the incident every user appeared to come from one address. Seen from the server that is
one "household" in which many unrelated accounts look for devices. So: when more distinct
accounts than ``IP_MATCH_MAX_ACCOUNTS_PER_HOUSEHOLD`` use ip_match from one household within
``IP_MATCH_BREAKER_WINDOW``, the household is blocked for ``IP_MATCH_BREAKER_COOLDOWN``; when
``IP_MATCH_GLOBAL_TRIP_HOUSEHOLDS`` households trip within the window, ip_match is switched
off for everyone (actor "auto") until an admin switches it on again. The state is in the
database, so every process counts together and sees the block at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ScalarSelect, delete, func, select

from tsd_server import audit
from tsd_server.discovery import kill_switch
from tsd_server.discovery.ip_match.settings import IpMatchSettings
from tsd_server.extensions import db
from tsd_server.models.ip_match import HouseholdAccount, HouseholdBlock
from tsd_server.upsert import upsert

log = logging.getLogger(__name__)

STRATEGY = "ip_match"
# An account's sighting in a household is refreshed at most this often (fewer writes).
SIGHTING_RESOLUTION = timedelta(seconds=60)


def resolution(settings: IpMatchSettings) -> timedelta:
    """How often a sighting is rewritten: a minute, or a tenth of a shorter window."""
    return min(SIGHTING_RESOLUTION, settings.breaker_window / 10)


def window_start(settings: IpMatchSettings, now: datetime) -> datetime:
    """Sightings written after this moment count towards the breaker.

    A sighting lags the account's last use by up to the resolution, so the window reaches
    back that much further: every account that used ip_match within the window counts
    (and one up to a resolution older may), erring towards blocking.
    """
    return now - settings.breaker_window - resolution(settings)


def blocked_until(household: Any) -> ScalarSelect:
    """The household's block end (NULL when none), as a scalar subquery to fold into reads."""
    return select(HouseholdBlock.blocked_until).where(
        HouseholdBlock.household == household).scalar_subquery()


def blocks(until: datetime | None, now: datetime) -> bool:
    return until is not None and until > now


def is_blocked(household: str, now: datetime) -> bool:
    return blocks(db.session.scalar(select(blocked_until(household))), now)


def sighting(household: Any, user_id: Any) -> ScalarSelect:
    """When this account was last counted in the household (NULL: never, or purged)."""
    return select(HouseholdAccount.last_seen_at).where(
        HouseholdAccount.household == household,
        HouseholdAccount.user_id == user_id).scalar_subquery()


def accounts_seen(household: Any, since: Any) -> ScalarSelect:
    """How many accounts were counted in the household after ``since`` (``window_start``)."""
    return select(func.count()).select_from(HouseholdAccount).where(
        HouseholdAccount.household == household,
        HouseholdAccount.last_seen_at > since).scalar_subquery()


@dataclass(frozen=True)
class Seen:
    """What the breaker read about a household, in the caller's one statement."""

    blocked_until: datetime | None
    # This account's sighting, and the accounts counted within the window.
    sighting: datetime | None
    accounts: int


def note_account(household: str, user_id: int, seen: Seen, settings: IpMatchSettings,
                 now: datetime) -> bool:
    """Count ``user_id`` as using ip_match from ``household``; True if it is (now) blocked.

    ``seen`` was read before; only when the sighting is due (every ``resolution``)
    is it written, committed, and the accounts counted again (with it and any concurrent).
    """
    if blocks(seen.blocked_until, now):
        return True
    since = window_start(settings, now)
    accounts = seen.accounts
    if seen.sighting is None or now - seen.sighting >= resolution(settings):
        if seen.sighting is None:
            # New sightings are what grows the table: drop those that count no more first.
            db.session.execute(delete(HouseholdAccount).where(
                HouseholdAccount.last_seen_at <= since))
        upsert(HouseholdAccount, {"household": household, "user_id": user_id,
                                   "last_seen_at": now}, ["household", "user_id"])
        db.session.commit()
        accounts = db.session.scalar(select(accounts_seen(household, since))) or 0
    if accounts <= settings.max_accounts_per_household:
        return False
    trip(household, accounts, settings, now)
    return True


def trip(household: str, accounts: int, settings: IpMatchSettings, now: datetime) -> None:
    """Block the household (once, even when several processes trip it at the same moment)."""
    until = now + settings.breaker_cooldown
    won = upsert(HouseholdBlock, {"household": household, "tripped_at": now,
                                   "blocked_until": until, "accounts": accounts},
                  ["household"], only_if=HouseholdBlock.blocked_until <= now)
    if not won:
        db.session.rollback()
        return
    db.session.execute(delete(HouseholdBlock).where(
        HouseholdBlock.blocked_until <= now,
        HouseholdBlock.tripped_at <= now - settings.breaker_window))
    window = int((now - window_start(settings, now)).total_seconds())
    audit.record("breaker_trip", actor="auto", outcome="household_blocked", strategy=STRATEGY,
                 detail=f"{accounts} accounts used ip_match from household {household} within "
                        f"{window} s (limit {settings.max_accounts_per_household}); blocked "
                        f"until {until.isoformat()}")
    db.session.commit()
    log.warning("ip_match breaker tripped for household %s (%d accounts)", household, accounts)
    _maybe_trip_globally(settings, now)


def _maybe_trip_globally(settings: IpMatchSettings, now: datetime) -> None:
    """Switch ip_match off when enough households tripped since the window (or re-enable)."""
    counted = HouseholdBlock.tripped_at >= now - settings.breaker_window
    reenabled = kill_switch.last_switched_on(STRATEGY)
    if reenabled is not None and reenabled >= now - settings.breaker_window:
        counted = HouseholdBlock.tripped_at > reenabled
    tripped = db.session.scalar(
        select(func.count()).select_from(HouseholdBlock).where(counted)) or 0
    if tripped < settings.global_trip_households or not kill_switch.is_enabled(
            STRATEGY, fresh=True):
        return
    reason = (f"anomaly breaker: {tripped} households tripped within "
              f"{int(settings.breaker_window.total_seconds())} s; an admin must switch "
              "ip_match on again")
    audit.record("breaker_trip", actor="auto", outcome="global", strategy=STRATEGY,
                 detail=reason)  # committed with the switch-off, or not at all
    if kill_switch.set_flag(STRATEGY, enabled=False, reason=reason, actor="auto",
                            only_if_on=True) is None:
        return  # another request tripped it a moment ago
    log.error("ip_match switched off for everyone: %s", reason)

