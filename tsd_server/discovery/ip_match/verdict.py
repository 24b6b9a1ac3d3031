"""Would "Printers near you" work for a request from this address, and if not, why?

The checks that do not depend on who asks, in the order requests meet them: kill switch,
address, household block, device cap. Nothing is written and no breaker is fed, so the
admin's proxy diagnostics and the public ``GET /api/v1/client-address`` can ask freely.
"""

from __future__ import annotations

from dataclasses import dataclass

from tsd_server.client_address import ClientAddress
from tsd_server.clock import utcnow
from tsd_server.discovery import kill_switch
from tsd_server.discovery.ip_match import announcements, breaker, eligibility
from tsd_server.discovery.ip_match.settings import current as ip_match_settings


@dataclass(frozen=True)
class Verdict:
    """Would "Printers near you" work for a request like this one?"""

    works: bool
    reason: str | None = None
    message: str | None = None


def ip_match_verdict(address: ClientAddress, *, fresh: bool = True) -> Verdict:
    """The ip_match checks in the order requests meet them, without side effects.
    ``fresh=False`` trusts the kill switch's cached flags (at most a second old)."""
    state = kill_switch.state(eligibility.STRATEGY, fresh=fresh)
    if not state.enabled:
        return Verdict(False, eligibility.STRATEGY_DISABLED,
                       f"{eligibility.message_for(eligibility.STRATEGY_DISABLED)} "
                       f"({state.disabled_by}: {state.reason or state.public_reason})")
    if not address.eligible or address.household is None:
        reason = address.ineligibility_reason
        return Verdict(False, reason, eligibility.message_for(reason))
    now = utcnow()
    if breaker.is_blocked(address.household, now):
        return Verdict(False, eligibility.HOUSEHOLD_BLOCKED,
                       eligibility.message_for(eligibility.HOUSEHOLD_BLOCKED))
    if announcements.over_household_limit(address.household, ip_match_settings(), now):
        return Verdict(False, eligibility.HOUSEHOLD_LIMIT,
                       eligibility.message_for(eligibility.HOUSEHOLD_LIMIT))
    return Verdict(True)
