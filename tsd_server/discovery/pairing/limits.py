"""Rate limits of the code routes (Flask-Limiter), keyed so one attacker is one key.

Guessing a typed code is the attack: a device guessing web codes would link itself to a
stranger's account, and a logged-in person guessing device codes on /link would take over a
stranger's printer. Every code submission therefore counts (not only failures: counting
after the answer would let concurrent requests through uncounted) against

* ``PAIRING_GUESS_LIMIT_PER_IP`` per client address, IPv6 keyed by its /64 (one host
  usually holds the whole /64, so a per-address key would be no limit at all), once for
  ``POST /api/v1/pairing/redeem`` and once for ``POST /link``. The two routes guess disjoint
  sets of codes (web codes vs. device user codes), so separate budgets give the same bound
  as one shared budget, and a household's printer redeeming a code does not use up the
  budget its owner needs to type another printer's code; and
* ``PAIRING_GUESS_LIMIT_PER_ACCOUNT`` on ``POST /link``, so many addresses do not help a
  logged-in attacker either.

docs/security.md turns these into the brute-force bound; tests/test_pairing_bound.py checks
it against the configured defaults. A refusal is 429 ``rate_limited`` with Retry-After and
is audited (at most once a minute per key and limit, so a flood cannot flood the log too).
"""

from __future__ import annotations

from collections.abc import Callable

from flask import request

from tsd_server.config import configured_limit
from tsd_server.discovery.pairing import codes
from tsd_server.extensions import limiter
from tsd_server.rate_limit_audit import audit_breach
from tsd_server.rate_limit_keys import account_key, address_key

GUESS_MESSAGE = "Too many code attempts; wait before trying again (see Retry-After)."
BUSY_MESSAGE = "Too many requests; wait before trying again (see Retry-After)."


def _shared_limit(name: str, scope: str, key_func: Callable[[], str],
                  message: str = GUESS_MESSAGE,
                  exempt_when: Callable[[], bool] | None = None):
    """One budget per key for every POST route the limit decorates (``scope``)."""
    return limiter.shared_limit(configured_limit(name), scope=scope, key_func=key_func,
                                methods=["POST"], error_message=message,
                                on_breach=audit_breach, exempt_when=exempt_when)


def typed_no_code() -> bool:
    """The /link form sent with nothing that can be a code (empty, half-typed, a letter
    outside the alphabet): the form refuses it before any code is looked up, so it guesses
    nothing and costs no try of the person's. Only well-formed codes count, and only they
    are looked up: the brute-force bound (docs/security.md) is over those. It reads the
    form only: a body of another type (JSON, which Flask-WTF would read as the form) is
    refused first by request_guard (415), which this exemption relies on."""
    return codes.normalise(request.form.get("code")) is None


def busy_limit(name: str, key_func: Callable[[], str] = address_key,
               methods: list[str] | None = None):
    """A plain per-route limit for the routes that are not guesses (DoS protection)."""
    return limiter.limit(configured_limit(name), key_func=key_func, methods=methods,
                         error_message=BUSY_MESSAGE, on_breach=audit_breach)


# One budget per address for each code-entry route; one per account on /link.
redeem_guess_per_address = _shared_limit("PAIRING_GUESS_LIMIT_PER_IP",
                                         "pairing-redeem-address", address_key)
link_guess_per_address = _shared_limit("PAIRING_GUESS_LIMIT_PER_IP", "pairing-link-address",
                                       address_key, exempt_when=typed_no_code)
code_guess_per_account = _shared_limit("PAIRING_GUESS_LIMIT_PER_ACCOUNT",
                                       "pairing-guess-account", account_key,
                                       exempt_when=typed_no_code)
# Web codes a user may create, shared by the API and the "Add printer" page: per account,
# and per address, so that accounts signed up from one address do not multiply it.
code_create_per_account = _shared_limit("PAIRING_CODE_CREATE_LIMIT", "pairing-code-create",
                                        account_key, BUSY_MESSAGE)
code_create_per_address = _shared_limit("PAIRING_CODE_CREATE_LIMIT",
                                        "pairing-code-create-address", address_key,
                                        BUSY_MESSAGE)
