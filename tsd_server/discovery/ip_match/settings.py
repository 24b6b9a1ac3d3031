"""The ip_match settings (TSD_IP_MATCH_*), read and checked in one place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import current_app

from tsd_server.config import ConfigurationError, bounded_int_setting, configured_limit
from tsd_server.extensions import limiter

# (setting, lowest, highest) for every whole-number setting; times are in seconds.
_BOUNDS = {
    "IP_MATCH_ANNOUNCE_TTL": (5, 3600),
    "IP_MATCH_POLL_INTERVAL": (1, 600),
    "IP_MATCH_LAST_SEEN_WRITE_INTERVAL": (0, 600),
    "IP_MATCH_MAX_DEVICES_PER_HOUSEHOLD": (1, 1000),
    "IP_MATCH_MAX_ACCOUNTS_PER_HOUSEHOLD": (1, 1000),
    "IP_MATCH_BREAKER_WINDOW": (1, 7 * 86400),
    "IP_MATCH_BREAKER_COOLDOWN": (1, 30 * 86400),
    "IP_MATCH_GLOBAL_TRIP_HOUSEHOLDS": (1, 100000),
    "IP_MATCH_OFFER_TTL": (30, 3600),
    "IP_MATCH_CODE_ATTEMPTS": (1, 10),
}


@dataclass(frozen=True)
class IpMatchSettings:
    announce_ttl: timedelta
    poll_interval: int
    last_seen_write_interval: timedelta
    max_devices_per_household: int
    max_accounts_per_household: int
    breaker_window: timedelta
    breaker_cooldown: timedelta
    global_trip_households: int
    require_confirmation: bool
    offer_ttl: timedelta
    code_attempts: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> IpMatchSettings:
        """Check every value; a bad one stops start-up with a message naming the setting."""
        number = {key: bounded_int_setting(config, key, low, high)
                  for key, (low, high) in _BOUNDS.items()}
        ttl, poll = number["IP_MATCH_ANNOUNCE_TTL"], number["IP_MATCH_POLL_INTERVAL"]
        write = number["IP_MATCH_LAST_SEEN_WRITE_INTERVAL"]
        # A device is live from its last announce for at least the TTL and at most TTL +
        # write interval (announcements.live_since): with this, one announcing every poll
        # interval stays listed even when announces come up to the write interval late,
        # and a silent one is gone within twice the TTL.
        if poll + write >= ttl:
            raise ConfigurationError(
                "TSD_IP_MATCH_POLL_INTERVAL + TSD_IP_MATCH_LAST_SEEN_WRITE_INTERVAL must be "
                "less than TSD_IP_MATCH_ANNOUNCE_TTL: announcing devices must stay listed "
                "when an announce is late, and a silent device is listed for up to TTL + "
                "write interval after its last announce.")
        confirmation = config["IP_MATCH_REQUIRE_CONFIRMATION"]
        if not isinstance(confirmation, bool):
            raise ConfigurationError("TSD_IP_MATCH_REQUIRE_CONFIRMATION must be true or false.")
        return cls(
            announce_ttl=timedelta(seconds=ttl),
            poll_interval=poll,
            last_seen_write_interval=timedelta(seconds=write),
            max_devices_per_household=number["IP_MATCH_MAX_DEVICES_PER_HOUSEHOLD"],
            max_accounts_per_household=number["IP_MATCH_MAX_ACCOUNTS_PER_HOUSEHOLD"],
            breaker_window=timedelta(seconds=number["IP_MATCH_BREAKER_WINDOW"]),
            breaker_cooldown=timedelta(seconds=number["IP_MATCH_BREAKER_COOLDOWN"]),
            global_trip_households=number["IP_MATCH_GLOBAL_TRIP_HOUSEHOLDS"],
            require_confirmation=confirmation,
            offer_ttl=timedelta(seconds=number["IP_MATCH_OFFER_TTL"]),
            code_attempts=number["IP_MATCH_CODE_ATTEMPTS"],
        )


# What a refusal by each ip_match rate limit says (429 with Retry-After), in the words of
# the pairing limits; without one, Flask-Limiter says the limit itself ("120 per 1 minute").
ANNOUNCE_LIMIT_MESSAGE = ("Too many announcements from this address; wait before trying "
                          "again (see Retry-After).")
NEARBY_LIMIT_MESSAGE = ("Too many requests for printers near you from this address; wait "
                        "before trying again (see Retry-After).")
CLAIM_LIMIT_MESSAGE = ("Too many attempts to link or confirm a printer from this address; "
                       "wait before trying again (see Retry-After).")

# Linking and confirming, on the API and on the web pages alike, draw on one budget per
# client address: with a budget per route, one address had four times the setting's
# guesses at printers' confirmation codes.
claim_limit = limiter.shared_limit(configured_limit("IP_MATCH_CLAIM_RATE_LIMIT"),
                                   scope="ip-match-claim", error_message=CLAIM_LIMIT_MESSAGE)


def current() -> IpMatchSettings:
    """The settings of the running app (read per call, so tests can change them)."""
    return IpMatchSettings.from_config(current_app.config)
