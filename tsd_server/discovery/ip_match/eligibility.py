"""May this request use ip_match? Re-checked at every step, failing closed with a reason.

The address part (forwarded headers, trusted proxies, public or LAN addresses, households)
is decided by ``tsd_server.client_address`` alone. This module adds what only ip_match
knows: the anomaly breaker and the per-household device cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache

from sqlalchemy import Select, bindparam, select

from tsd_server import client_address, single_statement
from tsd_server.api.errors import ApiError
from tsd_server.client_address import ClientAddress
from tsd_server.discovery.ip_match import breaker
from tsd_server.discovery.ip_match.settings import IpMatchSettings

STRATEGY = "ip_match"

HOUSEHOLD_BLOCKED = "household_blocked"
HOUSEHOLD_LIMIT = "household_limit"
HOUSEHOLD_CHANGED = "household_changed"
OPENED_FROM_ANOTHER_SITE = "opened_from_another_site"
STRATEGY_DISABLED = "strategy_disabled"

REASON_MESSAGES = {
    **client_address.REASON_MESSAGES,
    HOUSEHOLD_BLOCKED: "Too many accounts used “Printers near you” from this internet "
    "connection recently, so it is paused here for a while. Use a pairing code or the QR "
    "code instead.",
    HOUSEHOLD_LIMIT: "More unlinked printers are announcing from this internet connection "
    "than allowed, so none are listed. Use a pairing code or the QR code instead.",
    HOUSEHOLD_CHANGED: "This request comes from another internet connection than the one "
    "the link started from. Start again from 'Printers near you'.",
    STRATEGY_DISABLED: "“Printers near you” is switched off on this server.",
    OPENED_FROM_ANOTHER_SITE: "Another site sent you here, so this page has not looked for "
    "printers: looking counts towards this internet connection's limits. Use Refresh to "
    "look.",
}


class Ineligible(ApiError):
    """403 ``ip_match_ineligible`` with the reason code of DESIGN.md."""

    def __init__(self, reason: str) -> None:
        super().__init__(403, "ip_match_ineligible", message_for(reason), reason=reason)
        self.reason = reason


def message_for(reason: str | None) -> str | None:
    if reason is None:
        return None
    return REASON_MESSAGES.get(reason, "“Printers near you” is not available for this request.")


@dataclass(frozen=True)
class UserCheck:
    """The outcome of the checks for a logged-in user's request."""

    address: ClientAddress
    reason: str | None

    @property
    def household(self) -> str | None:
        return self.address.household if self.reason is None else None


@cache
def _household_reads() -> Select:
    """What the breaker and the cap read, as one statement; built on first use (the
    announcements module imports this one)."""
    from tsd_server.discovery.ip_match import announcements

    household = bindparam("household")
    return select(
        breaker.blocked_until(household).label("blocked_until"),
        breaker.sighting(household, bindparam("user_id")).label("sighting"),
        breaker.accounts_seen(household, bindparam("window_start")).label("accounts"),
        announcements.live_devices(household, bindparam("live_since")).label("devices"))


def check_user(user_id: int, settings: IpMatchSettings, now: datetime) -> UserCheck:
    """Address, then breaker (this account counts towards it), then the device cap.

    Their reads are one statement outside the session's transaction (no caller has written
    yet); the breaker writes in the session only when a sighting is due or it trips.
    """
    from tsd_server.discovery.ip_match import announcements

    address = client_address.for_request()
    if not address.eligible:
        return UserCheck(address, address.ineligibility_reason)
    household = address.household
    assert household is not None
    read = single_statement.first(_household_reads(), {
        "household": household, "user_id": user_id,
        "window_start": breaker.window_start(settings, now),
        "live_since": announcements.live_since(settings, now)})
    assert read is not None  # no FROM: always one row
    seen = breaker.Seen(read.blocked_until, read.sighting, read.accounts)
    if breaker.note_account(household, user_id, seen, settings, now):
        return UserCheck(address, HOUSEHOLD_BLOCKED)
    if read.devices > settings.max_devices_per_household:
        return UserCheck(address, HOUSEHOLD_LIMIT)
    return UserCheck(address, None)
