"""Settings checked at start-up: rate limits that must parse, numbers within their range,
the kill-switch cache at most one second, no empty yes/no setting or database URL, and
trusted proxies that trust no more than written. A bad value stops create_app() with a
ConfigurationError naming the setting, instead of starting a server that fails open (a
limit Flask-Limiter cannot parse is skipped on every request) or answers 500 later.

These build apps without touching a database, so they run once, not per backend.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from limits import parse_many

from tests.support import clean_env
from tsd_server import create_app
from tsd_server.config import (
    DEFAULTS,
    NUMBER_BOUNDS,
    RATE_LIMIT_SETTINGS,
    SWITCHES,
    ConfigurationError,
    configured_limit,
)

ROOT = Path(__file__).resolve().parent.parent
KEY = {"SECRET_KEY": "k" * 32}


instance = clean_env.instance


def refused(monkeypatch, key: str, value: str) -> str:
    """Start with TSD_<key>=value (JSON where it parses, as in production); the message."""
    monkeypatch.setenv(f"TSD_{key}", value)
    with pytest.raises(ConfigurationError, match=f"TSD_{key}") as caught:
        create_app(KEY)
    return str(caught.value)


# --- rate limits ---------------------------------------------------------------------------


def _limit_names_in_code() -> set[str]:
    """Settings the code hands to Flask-Limiter: configured_limit("X"), and the wrappers
    named ..._limit("X", ...) around it."""
    call = re.compile(r'\b\w*limit\(\s*"([A-Z_0-9]+)"')
    return {name for path in (ROOT / "tsd_server").rglob("*.py")
            for name in call.findall(path.read_text())}


def test_every_limit_setting_is_checked():
    used = _limit_names_in_code()
    assert {"PAIRING_GUESS_LIMIT_PER_IP", "IP_MATCH_CLAIM_RATE_LIMIT",
            "LOGIN_LIMIT_PER_EMAIL"} <= used
    assert used <= set(RATE_LIMIT_SETTINGS)
    # And every default that reads as a rate limit is one of them.
    limit_like = set()
    for key, default in DEFAULTS.items():
        try:
            if isinstance(default, str) and parse_many(default):
                limit_like.add(key)
        except ValueError:
            pass
    assert limit_like == set(RATE_LIMIT_SETTINGS)


def test_a_limit_from_a_setting_start_up_does_not_check_cannot_be_written():
    with pytest.raises(ValueError, match="RATE_LIMIT_SETTINGS"):
        configured_limit("SECRET_KEY")


@pytest.mark.parametrize("key", RATE_LIMIT_SETTINGS)
@pytest.mark.parametrize("value", ["5", "five per minute", "", "10 per fortnight", "[5]",
                                   "true", "5 per minute;"])
def test_a_limit_that_does_not_parse_stops_start_up(instance, monkeypatch, key, value):
    message = refused(monkeypatch, key, value)
    assert repr(DEFAULTS[key]) in message  # an example of a valid value


@pytest.mark.parametrize("value", ["5 per minute", "5/minute", "1 per second; 100 per hour",
                                   "0 per minute"])
def test_limits_that_parse_are_accepted(instance, monkeypatch, value):
    for key in RATE_LIMIT_SETTINGS:
        monkeypatch.setenv(f"TSD_{key}", value)
    app = create_app(KEY)
    assert all(app.config[key] == value for key in RATE_LIMIT_SETTINGS)


def test_a_limit_from_the_config_file_is_checked_too(instance):
    instance.mkdir()
    (instance / "config.py").write_text("PAIRING_GUESS_LIMIT_PER_IP = 5\n")
    with pytest.raises(ConfigurationError, match="TSD_PAIRING_GUESS_LIMIT_PER_IP"):
        create_app(KEY)


# --- numbers -------------------------------------------------------------------------------


def test_the_bounded_settings_include_the_pairing_times():
    assert {"PAIRING_CODE_TTL", "DEVICE_FLOW_TTL", "DEVICE_FLOW_INTERVAL",
            "PAIRING_FAILURE_BREAKER_PER_MINUTE"} <= set(NUMBER_BOUNDS)
    for key, (low, high) in NUMBER_BOUNDS.items():
        assert low <= DEFAULTS[key] <= high, key


@pytest.mark.parametrize("key", sorted(NUMBER_BOUNDS))
@pytest.mark.parametrize("value", ["true", "false", "-600", "1e12", "[5]", '{"a": 1}',
                                   "1.5", "soon", "null", "100000000"])
def test_a_number_of_the_wrong_kind_or_out_of_range_stops_start_up(
        instance, monkeypatch, key, value):
    message = refused(monkeypatch, key, value)
    low, high = NUMBER_BOUNDS[key]
    assert f"from {low} to {high}" in message or "must be a number" in message


@pytest.mark.parametrize("key", sorted(NUMBER_BOUNDS))
def test_numbers_at_the_ends_of_their_range_are_accepted(instance, monkeypatch, key):
    for end in NUMBER_BOUNDS[key]:
        monkeypatch.setenv(f"TSD_{key}", str(end))
        assert create_app(KEY).config[key] == end
        monkeypatch.setenv(f"TSD_{key}", f'"{end}"')  # text, as an instance file may hold
        assert create_app(KEY).config[key] == end
    low, high = NUMBER_BOUNDS[key]
    for outside in (low - 1, high + 1):
        refused(monkeypatch, key, str(outside))


# --- the kill-switch cache -----------------------------------------------------------------


@pytest.mark.parametrize("value", ["1.5", "2", "60", "3600", "-0.1", "true", "soon", "nan"])
def test_kill_switch_cache_over_a_second_stops_start_up(instance, monkeypatch, value):
    refused(monkeypatch, "KILL_SWITCH_CACHE_SECONDS", value)


@pytest.mark.parametrize("value, seconds", [("0", 0), ("0.5", 0.5), ("1", 1), ("1.0", 1.0)])
def test_kill_switch_cache_up_to_a_second_is_accepted(instance, monkeypatch, value, seconds):
    monkeypatch.setenv("TSD_KILL_SWITCH_CACHE_SECONDS", value)
    assert create_app(KEY).config["KILL_SWITCH_CACHE_SECONDS"] == seconds


# --- the rate-limit storage's options ------------------------------------------------------


def test_storage_errors_are_always_wrapped(instance, monkeypatch):
    """tsd_server/api/errors.py answers limits' StorageError (whatever the backend) with 503;
    an operator's own options are kept, but cannot unwrap the errors into 500s."""
    monkeypatch.setenv("TSD_RATELIMIT_STORAGE_OPTIONS",
                       '{"socket_timeout": 2, "wrap_exceptions": false}')
    app = create_app(KEY)
    assert app.config["RATELIMIT_STORAGE_OPTIONS"] == {"socket_timeout": 2,
                                                       "wrap_exceptions": True}
    monkeypatch.setenv("TSD_RATELIMIT_STORAGE_OPTIONS", "socket_timeout=2")
    with pytest.raises(ConfigurationError, match="TSD_RATELIMIT_STORAGE_OPTIONS"):
        create_app(KEY)


@pytest.mark.parametrize("value", ["fixed-window", "sliding-window-counter", "moving_window"])
def test_a_rate_limit_strategy_other_than_the_moving_window_stops_start_up(
        instance, monkeypatch, value):
    """The brute-force bound counts on at most N attempts in any span of the window."""
    monkeypatch.setenv("TSD_RATELIMIT_STRATEGY", value)
    with pytest.raises(ConfigurationError, match="TSD_RATELIMIT_STRATEGY must be moving-window"):
        create_app(KEY)


# --- empty values --------------------------------------------------------------------------

YES_NO_SETTINGS = sorted(key for key, default in DEFAULTS.items() if isinstance(default, bool))


@pytest.mark.parametrize("key", [*YES_NO_SETTINGS, *SWITCHES])
@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_yes_no_setting_stops_start_up(instance, monkeypatch, key, value):
    """``TSD_IP_MATCH_REQUIRE_CONFIRMATION=`` (an unset ${VAR} in docker-compose or a systemd
    template) read as false, and switched ip_match's confirmation code off without a word."""
    assert "is empty" in refused(monkeypatch, key, value)


def test_an_empty_yes_no_setting_in_the_config_file_stops_start_up_too(instance):
    instance.mkdir()
    (instance / "config.py").write_text('IP_MATCH_REQUIRE_CONFIRMATION = ""\n')
    with pytest.raises(ConfigurationError, match="TSD_IP_MATCH_REQUIRE_CONFIRMATION is empty"):
        create_app(KEY)


@pytest.mark.parametrize("value", ["", " "])
def test_an_empty_database_url_stops_start_up(instance, monkeypatch, value):
    """Unset means SQLite in instance/; empty would too, and a server meant for PostgreSQL
    would start on a database of its own, without the operator's kill switches."""
    assert "is empty" in refused(monkeypatch, "DATABASE_URL", value)


@pytest.mark.parametrize(("value", "words"), [
    ("mysql://tsd:hunter2-secret@127.0.0.1/tsd", "SQLite or PostgreSQL only"),
    ("mariadb+pymysql://tsd:hunter2-secret@127.0.0.1/tsd", "SQLite or PostgreSQL only"),
    ("hunter2-secret", "is not a database URL"),
    ("mysql://tsd:x@127.0.0.1/tsd?password=hunter2-secret", "SQLite or PostgreSQL only"),
    ("postgresql+pg8000://tsd:hunter2-secret@127.0.0.1/tsd", "which is not installed"),
    ("postgresql+nosuchdriver://tsd:hunter2-secret@127.0.0.1/tsd", "which is not installed"),
], ids=["mysql", "mariadb", "not-a-url", "password-in-query", "driver-not-installed",
        "driver-unknown"])
def test_a_database_url_the_server_cannot_use_stops_start_up(instance, monkeypatch, value,
                                                             words):
    """Named at start-up, not as a missing module or a failed migration later; and the
    message never repeats the password."""
    message = refused(monkeypatch, "DATABASE_URL", value)
    assert words in message
    assert "hunter2-secret" not in message


# --- trusted proxies -----------------------------------------------------------------------


@pytest.mark.parametrize("value, network, address", [
    ("172.17.0.1/16", "172.17.0.0/16", "172.17.0.1/32"),  # as `ip addr` prints the bridge
    ("127.0.0.1/32, 10.1.2.3/8", "10.0.0.0/8", "10.1.2.3/32"),
    ("2001:db8::1/64", "2001:db8::/64", "2001:db8::1/128"),
    ("::ffff:172.17.0.1/112", "172.17.0.0/16", "172.17.0.1/32"),
])
def test_a_trusted_proxy_address_with_a_prefix_stops_start_up(instance, monkeypatch, value,
                                                              network, address):
    """Read as its network, 172.17.0.1/16 trusted every container on the bridge."""
    message = " ".join(refused(monkeypatch, "TRUSTED_PROXIES", value).split())
    assert value.split(", ")[-1] in message
    assert f"Write {network} to trust the whole network" in message
    assert f"or {address} to trust that one proxy" in message


@pytest.mark.parametrize("value, expected", [
    ("172.17.0.1", ["172.17.0.1/32"]), ("172.17.0.0/16", ["172.17.0.0/16"]),
    ("::1", ["::1/128"]), ("10.0.0.0/8, 2001:db8::/32", ["10.0.0.0/8", "2001:db8::/32"]),
])
def test_bare_addresses_and_networks_are_trusted_as_written(instance, monkeypatch, value,
                                                            expected):
    monkeypatch.setenv("TSD_TRUSTED_PROXIES", value)
    monkeypatch.setenv("TSD_PROXY_FIX_X_FOR", "1")
    trusted = create_app(KEY).extensions["tsd.proxy_settings"].trusted_proxies
    assert [str(network) for network in trusted] == expected


@pytest.mark.parametrize("value", ["0.0.0.0/0", "::/0", "::ffff:0:0/96", "10.0.0.0/7",
                                   "2001::/31", "127.0.0.1/32, 0.0.0.0/1"])
def test_a_far_too_wide_trusted_network_stops_start_up(instance, monkeypatch, value):
    """Anyone inside it could connect directly and choose their address with a forged
    X-Forwarded-For: per-address rate limits and households would be the client's choice.
    proxy-check calls the same networks errors (tests/test_ip_match_proxy_check.py)."""
    monkeypatch.setenv("TSD_PROXY_FIX_X_FOR", "1")
    assert "far too wide" in refused(monkeypatch, "TRUSTED_PROXIES", value)


@pytest.mark.parametrize("prefix", ["32", "47"])
def test_an_ipv6_household_wider_than_a_home_stops_start_up(instance, monkeypatch, prefix):
    """A /32 holds many customers of one provider: ip_match would make them one household,
    each seeing and linking the others' printers (proxy-check's error)."""
    message = refused(monkeypatch, "IPV6_HOUSEHOLD_PREFIX", prefix)
    assert "from 48 to 128" in message and "printers" in message


def test_an_ipv6_household_of_a_home_starts(instance, monkeypatch):
    monkeypatch.setenv("TSD_IPV6_HOUSEHOLD_PREFIX", "48")
    assert create_app(KEY).extensions["tsd.proxy_settings"].ipv6_household_prefix == 48
