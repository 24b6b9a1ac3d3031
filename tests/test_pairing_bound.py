"""The brute-force bound of docs/security.md, computed from the configured defaults.

One attacker (one client address, IPv6 /64; or one account on /link) guessing typed codes at
the rate limit while 10,000 codes are live must have less than a one-in-a-million chance of
hitting any of them within a code's lifetime. Changing a default so that this no longer
holds fails here.
"""

from __future__ import annotations

import math

import pytest
from limits import parse

from tsd_server.config import DEFAULTS
from tsd_server.discovery.pairing.codes import ALPHABET, CODE_LENGTH

LIVE_CODES = 10_000
TARGET = 1e-6


def max_guesses(limit: str, lifetime: int, strategy: str) -> int:
    """Most attempts a limit lets through within ``lifetime`` seconds.

    A moving window admits ``amount`` in any span of ``window`` seconds, so a lifetime covers
    ceil(lifetime / window) spans. A fixed window can admit ``amount`` at the end of one window
    and again at the start of the next, so it gets one window more.
    """
    item = parse(limit)
    windows = math.ceil(lifetime / item.get_expiry())
    if strategy != "moving-window":
        windows += 1
    return item.amount * windows


def chance_of_any_hit(guesses: int, live: int = LIVE_CODES) -> float:
    """P(at least one guess hits one of ``live`` codes) = 1 - (1 - live/space)^guesses."""
    space = len(ALPHABET) ** CODE_LENGTH
    return 1 - (1 - live / space) ** guesses


def test_code_space_is_rfc_8628_section_6_1():
    assert len(ALPHABET) ** CODE_LENGTH == 25_600_000_000


@pytest.mark.parametrize("setting", ["PAIRING_GUESS_LIMIT_PER_IP",
                                     "PAIRING_GUESS_LIMIT_PER_ACCOUNT"])
def test_default_limits_keep_one_attacker_below_one_in_a_million(setting):
    lifetime = max(DEFAULTS["PAIRING_CODE_TTL"], DEFAULTS["DEVICE_FLOW_TTL"])
    guesses = max_guesses(DEFAULTS[setting], lifetime, DEFAULTS["RATELIMIT_STRATEGY"])
    chance = chance_of_any_hit(guesses)
    assert chance < TARGET, (
        f"{setting}={DEFAULTS[setting]!r} allows {guesses} guesses per {lifetime} s: "
        f"chance {chance:.3g} >= {TARGET}; see docs/security.md")
    # The union bound (what docs/security.md shows) is above the exact value, and below target.
    assert chance <= guesses * LIVE_CODES / len(ALPHABET) ** CODE_LENGTH < TARGET


def test_the_numbers_in_docs_security_md():
    lifetime = max(DEFAULTS["PAIRING_CODE_TTL"], DEFAULTS["DEVICE_FLOW_TTL"])
    guesses = max_guesses(DEFAULTS["PAIRING_GUESS_LIMIT_PER_IP"], lifetime,
                          DEFAULTS["RATELIMIT_STRATEGY"])
    assert guesses == 2
    assert guesses * LIVE_CODES / 25_600_000_000 == pytest.approx(7.8125e-7)


@pytest.mark.parametrize("limit, strategy", [
    ("3 per 15 minutes", "moving-window"),    # one guess too many
    ("2 per 15 minutes", "fixed-window"),     # 4 around a window boundary
    ("2 per 5 minutes", "moving-window"),     # 6 within a 15-minute lifetime
])
def test_the_check_catches_defaults_that_break_the_bound(limit, strategy):
    assert chance_of_any_hit(max_guesses(limit, 900, strategy)) >= TARGET


def test_the_running_limiter_uses_the_moving_window(app):
    from limits.strategies import MovingWindowRateLimiter

    from tsd_server.extensions import limiter

    assert app.config["RATELIMIT_STRATEGY"] == DEFAULTS["RATELIMIT_STRATEGY"] == "moving-window"
    with app.app_context():
        assert isinstance(limiter.limiter, MovingWindowRateLimiter)
