"""Configuration layers: defaults here, then instance/config.py, then TSD_* environment
variables, then the dict a caller (a test) passes to create_app().

Every key below can be set as ``TSD_<KEY>`` in the environment; values are parsed as JSON
where they parse (``TSD_PROXY_FIX_X_FOR=1`` is the integer 1, ``true`` is a bool).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from flask import Config, Flask, current_app
from limits import parse_many
from limits.storage import RedisStorage

from tsd_server import setting_names
from tsd_server.database_url import engine_url

# Reading single values lives in setting_values; its names stay importable from here.
from tsd_server.setting_values import (  # noqa: F401 - comma_list: re-exported
    UNSET_VARIABLE,
    ConfigurationError,
    bounded_int_setting,
    comma_list,
    parse_bool,
    parse_number,
)

DEFAULTS: dict[str, Any] = {
    # "production" requires TSD_SECRET_KEY; "development" keeps a generated key in instance/.
    "ENV": "production",
    "SECRET_KEY": None,
    # Flask 3.1: old keys whose session cookies are still accepted while a new SECRET_KEY
    # is rolled out (docs/production.md). Each signs sessions as well as SECRET_KEY does,
    # so outside development each is held to the same rule (secret_keys.py).
    "SECRET_KEY_FALLBACKS": [],
    # None means SQLite at instance/tsd.sqlite3.
    "DATABASE_URL": None,
    # Seconds a web request waits on PostgreSQL for each statement before it answers 503,
    # and every connection, commands' too, to connect or for a peer gone silent (a few
    # seconds more: database_timeout.py); 0 = no bound. Commands' statements are never bound.
    "DATABASE_TIMEOUT": 5,
    "MAX_CONTENT_LENGTH": 64 * 1024,
    "LOG_LEVEL": "INFO",
    # Whether anyone may sign up on /register (the CLI can always create accounts).
    "REGISTRATION_OPEN": True,
    # Printers one account may hold; re-linking one it holds always passes. Its pages and
    # device list grow with every printer, and sign-up is open (docs/security.md).
    "MAX_PRINTERS_PER_ACCOUNT": 100,
    # Werkzeug ProxyFix: how many proxies set each header. 0 = no proxy in front.
    "PROXY_FIX_X_FOR": 0,
    "PROXY_FIX_X_PROTO": 0,
    "PROXY_FIX_X_HOST": 0,
    "PROXY_FIX_X_PORT": 0,
    "PROXY_FIX_X_PREFIX": 0,
    # Forwarded headers are honoured only from direct peers inside these networks.
    "TRUSTED_PROXIES": "",
    "IPV6_HOUSEHOLD_PREFIX": 64,
    # LAN mode: private and loopback addresses count as households (one-box self-hosting).
    "IP_MATCH_ALLOW_PRIVATE": False,
    "IP_MATCH_PRIVATE_PREFIX_V4": 24,
    "IP_MATCH_PRIVATE_PREFIX_V6": 64,
    # ip_match (docs/ip-match.md); times in seconds. An announcement is listed for this
    # long after the device's last announce; devices are told to announce every POLL_INTERVAL.
    "IP_MATCH_ANNOUNCE_TTL": 30,
    "IP_MATCH_POLL_INTERVAL": 5,
    # last_seen is written at most this often per device, so announces are mostly reads:
    # longer than POLL_INTERVAL, or every announce writes (2 of 3 are reads at 15 and 5;
    # docs/performance.md). POLL_INTERVAL + this must stay below ANNOUNCE_TTL.
    "IP_MATCH_LAST_SEEN_WRITE_INTERVAL": 15,
    # More unlinked devices than this in one household: nearby lists none (household_limit).
    "IP_MATCH_MAX_DEVICES_PER_HOUSEHOLD": 3,
    # Anomaly breaker: more accounts than this using ip_match from one household within
    # the window blocks the household for the cooldown; this many blocked households
    # within the window switch ip_match off for everyone (actor "auto").
    "IP_MATCH_MAX_ACCOUNTS_PER_HOUSEHOLD": 3,
    "IP_MATCH_BREAKER_WINDOW": 900,
    "IP_MATCH_BREAKER_COOLDOWN": 3600,
    "IP_MATCH_GLOBAL_TRIP_HOUSEHOLDS": 3,
    # The device shows a 6-digit code the user types back; off = link on the next announce.
    "IP_MATCH_REQUIRE_CONFIRMATION": True,
    "IP_MATCH_OFFER_TTL": 300,
    "IP_MATCH_CODE_ATTEMPTS": 3,
    # Flask-Limiter limits per client address for device announces and user calls.
    "IP_MATCH_ANNOUNCE_RATE_LIMIT": "120 per minute",
    "IP_MATCH_NEARBY_RATE_LIMIT": "120 per minute",
    "IP_MATCH_CLAIM_RATE_LIMIT": "30 per 10 minutes",
    # Absolute base for links shown to devices (QR codes); empty = derive when trustworthy.
    "BASE_URL": "",
    # Kill switch at deployment level: "all" or a comma list; runtime cannot override it.
    "DISCOVERY_DISABLED": "",
    # How long a process trusts the runtime kill-switch flags it read (seconds). Every
    # process honours a toggle within this; keep it at or under 1.
    "KILL_SWITCH_CACHE_SECONDS": 0.5,
    # pairing_code / qr_code (docs/pairing.md, docs/security.md); times in seconds.
    # A code the web shows (XXXX-XXXX) lives this long and works once.
    "PAIRING_CODE_TTL": 600,
    # Code guesses per client address (IPv6: per /64), counted apart at each place codes
    # are typed (a device redeeming a web code; a person typing a device's code on /link),
    # and per account on /link.
    # tests/test_pairing_bound.py fails if these let one attacker reach a 1e-6 chance of
    # hitting any of 10,000 live codes within a code's lifetime (docs/security.md).
    "PAIRING_GUESS_LIMIT_PER_IP": "2 per 15 minutes",
    "PAIRING_GUESS_LIMIT_PER_ACCOUNT": "2 per 15 minutes",
    # Global failure breaker: more invalid codes than this within 60 s, from anyone,
    # switches pairing_code off (actor "auto") until an admin switches it on. 0 = no breaker.
    "PAIRING_FAILURE_BREAKER_PER_MINUTE": 20,
    # Web codes a user may create (per account).
    "PAIRING_CODE_CREATE_LIMIT": "20 per hour",
    # RFC 8628 device flow: lifetime of device_code/user_code/QR link, and poll interval.
    "DEVICE_FLOW_TTL": 900,
    "DEVICE_FLOW_INTERVAL": 5,
    "DEVICE_FLOW_AUTHORIZE_LIMIT": "10 per 10 minutes",
    # The same per IPv6 /48 (an IPv4 address: as above), for the /64s one customer holds:
    # each authorization is a row kept a day past its expiry, and an audit row.
    "DEVICE_FLOW_AUTHORIZE_LIMIT_PER_NETWORK": "100 per 10 minutes",
    "DEVICE_FLOW_TOKEN_LIMIT": "120 per minute",
    # Opening QR links (per address and per account) and fetching QR images (per address).
    "QR_LINK_LIMIT": "20 per 10 minutes",
    "QR_IMAGE_LIMIT": "30 per 10 minutes",
    # Answers on the approval page (approve or deny), per address and per account: each
    # one is audited, so unlimited answers would be unlimited audit rows.
    "LINK_DECISION_LIMIT": "20 per 10 minutes",
    # Log-in attempts per client address, and per email typed whatever the address (a
    # botnet guessing one account's password); sign-ups per address; guesses at the current
    # password from a logged-in session, per account; all three per IPv6 /48 (auth/limits.py).
    "LOGIN_LIMIT_PER_IP": "20 per 10 minutes",
    "LOGIN_LIMIT_PER_EMAIL": "25 per hour",
    "SIGN_UP_LIMIT_PER_IP": "10 per hour",
    "PASSWORD_CHANGE_LIMIT_PER_ACCOUNT": "10 per hour",
    "PASSWORD_HASH_LIMIT_PER_NETWORK": "200 per 10 minutes",
    # False switches every rate limit off, and with them the bound on guessing pairing codes
    # and passwords (docs/security.md): refused unless ENV is "development".
    "RATELIMIT_ENABLED": True,
    # Flask-Limiter: a moving window counts exactly N in any period (a fixed window lets
    # 2N through around a window boundary, which the brute-force bound has to allow for).
    "RATELIMIT_STRATEGY": "moving-window",
    # Options for the storage's client (redis-py): a JSON object; the 1 s timeouts of
    # redis_storage apply unless set here.
    "RATELIMIT_STORAGE_OPTIONS": {},
    # Before every key in the storage: one per deployment sharing a Redis server (the
    # limits and the audit throttle are shared between deployments with the same one).
    "RATELIMIT_KEY_PREFIX": "",
    "RATELIMIT_STORAGE_URI": "memory://",
    # Secure cookies are also set per request whenever it arrives over https.
    "SESSION_COOKIE_SECURE": False,
}

# Security settings of Flask, Flask-WTF and Flask-Login that no layer may change
# (TSD_WTF_CSRF_ENABLED=false would otherwise switch CSRF off everywhere, and
# TSD_LOGIN_DISABLED=true every login check): session cookies stay HttpOnly and SameSite=Lax,
# CSRF is checked on every form and cookie-authenticated call, over https the Referer must
# be this site, and pages for logged-in users need a login. A CSRF token lives as long as
# the session.
FIXED: dict[str, Any] = {
    "LOGIN_DISABLED": False,
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "WTF_CSRF_ENABLED": True,
    "WTF_CSRF_CHECK_DEFAULT": True,
    # Flask-WTF's own default; TSD_WTF_CSRF_METHODS=[] would check no method at all.
    "WTF_CSRF_METHODS": frozenset({"POST", "PUT", "PATCH", "DELETE"}),
    "WTF_CSRF_TIME_LIMIT": None,
    "WTF_CSRF_SSL_STRICT": True,
    # True would let every request through unlimited while the limit storage (Redis) is
    # down; with False such a request answers 503 rate_limit_unavailable instead
    # (tsd_server/api/errors.py).
    "RATELIMIT_SWALLOW_ERRORS": False,
    # True would give each process limits of its own while Redis is down: with N processes,
    # N times the guesses the brute-force bound (docs/security.md) allows.
    "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": False,
}

# The Flask-Limiter limits read from settings at request time (configured_limit below).
# Flask-Limiter logs and skips a limit it cannot parse, on every request, so a route would
# run unlimited: each is parsed at start-up instead.
RATE_LIMIT_SETTINGS = (
    "IP_MATCH_ANNOUNCE_RATE_LIMIT", "IP_MATCH_NEARBY_RATE_LIMIT", "IP_MATCH_CLAIM_RATE_LIMIT",
    "PAIRING_GUESS_LIMIT_PER_IP", "PAIRING_GUESS_LIMIT_PER_ACCOUNT",
    "PAIRING_CODE_CREATE_LIMIT", "DEVICE_FLOW_AUTHORIZE_LIMIT",
    "DEVICE_FLOW_AUTHORIZE_LIMIT_PER_NETWORK", "DEVICE_FLOW_TOKEN_LIMIT",
    "QR_LINK_LIMIT", "QR_IMAGE_LIMIT", "LINK_DECISION_LIMIT",
    "LOGIN_LIMIT_PER_IP", "LOGIN_LIMIT_PER_EMAIL", "SIGN_UP_LIMIT_PER_IP",
    "PASSWORD_CHANGE_LIMIT_PER_ACCOUNT", "PASSWORD_HASH_LIMIT_PER_NETWORK",
)


def configured_limit(name: str) -> Callable[[], str]:
    """A Flask-Limiter limit read from setting ``name`` at request time. Only a setting that
    start-up parses may be one, so a limit that would be skipped cannot be written."""
    if name not in RATE_LIMIT_SETTINGS:
        raise ValueError(f"{name} is not in RATE_LIMIT_SETTINGS, so start-up would not check it")
    return lambda: str(current_app.config[name])

# (lowest, highest) of whole-number settings not checked elsewhere at start-up (the proxy
# and ip_match ones are: client_address.ProxySettings, ip_match/settings.py). Times are in
# seconds; docs/pairing.md and docs/production.md list the ranges.
NUMBER_BOUNDS = {
    "MAX_CONTENT_LENGTH": (1000, 16 * 1024 * 1024),
    "PAIRING_CODE_TTL": (60, 3600),
    "DEVICE_FLOW_TTL": (60, 3600),
    "DEVICE_FLOW_INTERVAL": (1, 60),
    "PAIRING_FAILURE_BREAKER_PER_MINUTE": (0, 100_000),
    "MAX_PRINTERS_PER_ACCOUNT": (1, 100_000),
    # 0 is no bound; from 25 up gunicorn's 30 s worker timeout would end a request with one
    # stalled statement first (a dead host costs about twice the bound and 3 s: production.md).
    "DATABASE_TIMEOUT": (0, 25),
}


class _InstanceFile(Config):
    """instance/config.py as Flask reads it, plus the other values the file defines: Flask
    keeps only upper-case names, so ``discovery_disabled = "all"`` would be ignored
    silently. Imports and functions (``import os``, ``env = os.environ.get``) are the
    file's tools, never settings, so they are left out."""

    defined: frozenset[str] = frozenset()

    def from_object(self, obj: object) -> None:  # from_pyfile hands it the executed file
        self.defined = frozenset(name for name, value in vars(obj).items()
                                 if not isinstance(value, ModuleType) and not callable(value))
        super().from_object(obj)


# Flask's switches, parsed from instance/config.py and the environment so that "off" is off
# (Flask alone takes any text as true). TESTING is the test suite's (create_app's dict): it
# counts as development and lifts the secret-key and rate-limit rules, so a deployment that
# sets it true does not start.
SWITCHES = ("TESTING", "DEBUG")


def load_config(app: Flask, overrides: dict[str, Any] | None) -> None:
    """Apply the layers in order and derive the settings Flask extensions read."""
    # A copy: from_prefixed_env writes TSD_X__KEY into the dict under X, and DEFAULTS' own
    # dicts must not carry one app's settings into the next.
    app.config.from_mapping(copy.deepcopy(DEFAULTS))
    # Read on its own first, to know which names the file sets.
    from_file = _InstanceFile(app.config.root_path)
    from_file.from_pyfile("config.py", silent=True)
    app.config.update(from_file)
    app.config.from_prefixed_env("TSD")
    sources = {key: f"{key} in instance/config.py" for key in from_file}
    sources.update(setting_names.environment_keys(os.environ))  # the environment wins
    unknown = setting_names.unknown_settings(
        {*DEFAULTS, *FIXED, *app.default_config}, {*from_file, *from_file.defined}, os.environ)
    if unknown:
        raise ConfigurationError(" ".join(unknown) + " A name this server does not read "
                                 "would be ignored without a word; see README.md, "
                                 "Configuration, for the settings.")
    switches = {key: parse_bool(key, app.config[key]) for key in SWITCHES if key in sources}
    if switches.get("TESTING"):
        raise ConfigurationError(f"{sources['TESTING']} is not a deployment setting: it counts "
                                 "as development and lifts the secret-key and rate-limit "
                                 "rules. Remove it.")
    app.config.update(switches)
    if overrides:
        app.config.from_mapping(overrides)
    _coerce_to_default_types(app.config)
    app.config.update(FIXED)
    _check_settings(app.config)

    if not app.config.get("DATABASE_URL"):
        app.config["DATABASE_URL"] = "sqlite:///" + os.path.join(app.instance_path, "tsd.sqlite3")
    app.config["SQLALCHEMY_DATABASE_URI"] = engine_url(app.config["DATABASE_URL"])
    # No pool_pre_ping: a round trip per request; tsd_server/db_pool.py pings idle ones only.
    engine_options = app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {}
    if not isinstance(engine_options, dict):
        raise ConfigurationError("TSD_SQLALCHEMY_ENGINE_OPTIONS must be a JSON object.")
    # A failed statement's error (logged on an outage, in a command's traceback) would
    # otherwise carry its parameters: an email and a password hash, say. Every bind has it.
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"hide_parameters": True, **engine_options}
    # No X-RateLimit-* headers: on every answer they cost a second trip to the limit storage.
    # A refusal still says when to come back (Retry-After, tsd_server/api/errors.py).
    app.config["RATELIMIT_HEADERS_ENABLED"] = False
    # A failing limit storage raises limits.errors.StorageError, whatever the backend, which
    # tsd_server/api/errors.py answers with 503 rate_limit_unavailable.
    options = app.config.get("RATELIMIT_STORAGE_OPTIONS") or {}
    if not isinstance(options, dict):
        raise ConfigurationError("TSD_RATELIMIT_STORAGE_OPTIONS must be a JSON object.")
    app.config["RATELIMIT_STORAGE_OPTIONS"] = {**options, "wrap_exceptions": True}
    from tsd_server import secret_keys  # it raises this module's ConfigurationError

    secret_keys.configure(app, development=_is_development(app))
    if not app.config["RATELIMIT_ENABLED"] and not _is_development(app):
        raise ConfigurationError(
            "TSD_RATELIMIT_ENABLED=false switches every rate limit off, and with them the "
            "bound on guessing pairing codes and passwords (docs/security.md): it is refused "
            "unless TSD_ENV=development (a benchmark, a machine of your own).")


def _coerce_to_default_types(config: dict[str, Any]) -> None:
    """Text given for a setting whose default is a bool or a number is parsed, or start-up
    stops. Environment values arrive as JSON where they parse and as text otherwise, and
    instance/config.py may hold strings; ``bool("False")`` would silently be True."""
    for key, default in DEFAULTS.items():
        value = config.get(key)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                config[key] = parse_bool(key, value)
        elif isinstance(default, int | float) and isinstance(value, str):
            config[key] = parse_number(key, value)


def _check_settings(config: dict[str, Any]) -> None:
    """Refuse rate limits that do not parse, numbers out of their range, an empty database
    URL and a rate-limit strategy the brute-force bound does not hold under."""
    for key in RATE_LIMIT_SETTINGS:
        _check_rate_limit(key, config[key])
    for key, (low, high) in NUMBER_BOUNDS.items():
        bounded_int_setting(config, key, low, high)
    _check_storage_uri(config["RATELIMIT_STORAGE_URI"])
    _check_database_url(config["DATABASE_URL"])
    if config["RATELIMIT_STRATEGY"] != "moving-window":
        raise ConfigurationError(
            f"TSD_RATELIMIT_STRATEGY must be moving-window, not "
            f"{config['RATELIMIT_STRATEGY']!r}: the bound on guessing pairing codes "
            "(docs/security.md) counts on at most N attempts in any span of the window, and "
            "the other strategies let up to twice that through around a window's edge.")


def _check_database_url(url: Any) -> None:
    """Unset means SQLite in instance/; empty is refused. ``TSD_DATABASE_URL=`` is what an
    unset ${VAR} gives, and a server that meant PostgreSQL would start on an empty SQLite
    file of its own: the kill switches an operator set, the revocations and the audit log
    would all be elsewhere, and every process on another machine would have its own."""
    if isinstance(url, str) and not url.strip():
        raise ConfigurationError(
            f"TSD_DATABASE_URL is empty ({UNSET_VARIABLE}): give the database's URL, or remove "
            "the setting for SQLite in instance/.")


def _check_rate_limit(key: str, value: Any) -> None:
    """A rate limit as the ``limits`` library reads it: at least one "N per period"."""
    try:
        parsed = parse_many(value) if isinstance(value, str) else []
    except ValueError:
        parsed = []
    if not parsed:
        raise ConfigurationError(
            f"TSD_{key} must be a rate limit such as {DEFAULTS[key]!r} (several joined by "
            f"';'), not {value!r}: a limit that does not parse would not be applied at all.")


# The storages this server wraps (rate_limit_storage.py, redis_storage.py: a failing Redis
# answers 503 at once); other schemes of ``limits`` (memcached, sentinel, cluster) are not.
STORAGE_SCHEMES = ("memory", *RedisStorage.STORAGE_SCHEME)


def _check_storage_uri(uri: Any) -> None:
    """One of ``STORAGE_SCHEMES``, refused without repeating the URI: ``limits``' own
    error would print it whole, password included, into the log."""
    scheme = urlsplit(uri).scheme if isinstance(uri, str) else ""
    if scheme not in STORAGE_SCHEMES:
        raise ConfigurationError(
            f"TSD_RATELIMIT_STORAGE_URI has a scheme this server does not use ({scheme!r}): "
            f"one of {', '.join(f'{name}://' for name in STORAGE_SCHEMES)} (memory:// for "
            "one process, Redis shared by every process).")


def _is_development(app: Flask) -> bool:
    return app.config["ENV"] == "development" or app.testing
