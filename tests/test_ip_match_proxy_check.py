"""``flask proxy-check``: settings explained, visible mistakes found, requests simulated."""

from __future__ import annotations

import ipaddress
import json

import pytest
from flask import Flask

from tsd_server import proxy_check
from tsd_server.client_address import ProxySettings
from tsd_server.config import ConfigurationError


@pytest.fixture
def check(app, database):
    """Run ``proxy-check`` on an app with the given settings: (exit code, output). With
    ``proxy_settings``, on those instead of the ones start-up read (settings start-up
    refuses, which proxy-check must still call errors)."""
    from tsd_server import create_app

    def run(settings: dict | None = None, *args: str,
            proxy_settings: ProxySettings | None = None) -> tuple[int, str]:
        configured = create_app({"TESTING": True, "SECRET_KEY": "x" * 32,
                                 "DATABASE_URL": database, **(settings or {})})
        if proxy_settings is not None:
            configured.extensions["tsd.proxy_settings"] = proxy_settings
        result = configured.test_cli_runner().invoke(args=["proxy-check", *args])
        return result.exit_code, result.output

    return run


def test_defaults_explain_every_setting_and_find_nothing_wrong(check):
    code, out = check()
    assert code == 0
    for key in ("PROXY_FIX_X_FOR", "TRUSTED_PROXIES", "IPV6_HOUSEHOLD_PREFIX",
                "IP_MATCH_ALLOW_PRIVATE", "IP_MATCH_PRIVATE_PREFIX_V4"):
        assert f"TSD_{key} = " in out
    assert "OK: nothing wrong" in out and "ip_match is on." in out
    assert "missing_forwarded_header" in out  # the common mistakes are listed
    assert "/api/v1/client-address" in out


def wide(network: str) -> ProxySettings:
    return ProxySettings(x_for=1, trusted_proxies=(ipaddress.ip_network(network),))


@pytest.mark.parametrize("settings, proxy_settings, expected", [
    ({"PROXY_FIX_X_FOR": 1}, None, "TRUSTED_PROXIES is empty"),
    ({"TRUSTED_PROXIES": "127.0.0.1/32"}, None, "PROXY_FIX_X_FOR is 0"),
    # Start-up refuses this one too (tests/test_unix_socket_peer.py).
    ({}, ProxySettings(trusts_unix_socket=True), "PROXY_FIX_X_FOR is 0"),
    # Start-up refuses these (tests/test_config_validation.py); proxy-check still calls them
    # errors for settings it is handed.
    ({}, wide("0.0.0.0/0"), "far too wide"),
    ({}, wide("::/0"), "far too wide"),
    # One household across many homes: the incident ip_match exists to prevent.
    ({}, ProxySettings(ipv6_household_prefix=32),
     "IPV6_HOUSEHOLD_PREFIX is 32: a /32 holds many customers"),
    ({}, ProxySettings(ipv6_household_prefix=47), "IPV6_HOUSEHOLD_PREFIX is 47"),
])
def test_mistakes_in_the_settings_are_errors_and_exit_1(check, settings, proxy_settings,
                                                        expected):
    code, out = check(settings, proxy_settings=proxy_settings)
    assert code == 1
    assert "ERROR:" in out and expected in " ".join(out.split())


def errors_for(proxies: ProxySettings) -> list[str]:
    app = Flask(__name__)
    app.config["PROXY_FIX_X_PROTO"] = 1
    with app.app_context():
        return [finding.text for finding in proxy_check.findings(proxies)
                if finding.level == proxy_check.ERROR]


def starts(config: dict) -> bool:
    try:
        ProxySettings.from_config({**VALID_PROXY_SETTINGS, **config})
    except ConfigurationError:
        return False
    return True


VALID_PROXY_SETTINGS = {"TRUSTED_PROXIES": "", "PROXY_FIX_X_FOR": 1, "IPV6_HOUSEHOLD_PREFIX": 64,
                        "IP_MATCH_ALLOW_PRIVATE": False, "IP_MATCH_PRIVATE_PREFIX_V4": 24,
                        "IP_MATCH_PRIVATE_PREFIX_V6": 64}


@pytest.mark.parametrize("version, base", [(4, "10.0.0.0"), (6, "2001:4860::")])
def test_start_up_refuses_exactly_the_trusted_networks_proxy_check_calls_errors(version, base):
    """One threshold (trusted_proxies.WIDEST_PREFIX) for both: a network start-up accepts is
    never an ERROR in proxy-check, and every one it refuses is."""
    for prefix in range(0, 33 if version == 4 else 129):
        network = ipaddress.ip_network(f"{base}/{prefix}", strict=False)
        errors = errors_for(ProxySettings(x_for=1, trusted_proxies=(network,)))
        assert starts({"TRUSTED_PROXIES": str(network)}) is (not errors), network


def test_start_up_refuses_exactly_the_household_prefixes_proxy_check_calls_errors():
    for prefix in range(0, 129):
        errors = errors_for(ProxySettings(ipv6_household_prefix=prefix))
        assert starts({"IPV6_HOUSEHOLD_PREFIX": prefix}) is (not errors), prefix


@pytest.mark.parametrize("settings, expected", [
    ({"PROXY_FIX_X_FOR": 1, "TRUSTED_PROXIES": "8.8.8.0/24", "PROXY_FIX_X_PROTO": 1},
     "WARNING: TRUSTED_PROXIES contains the public network 8.8.8.0/24"),
    ({"IP_MATCH_ALLOW_PRIVATE": True}, "WARNING: LAN mode is on"),
    ({"PROXY_FIX_X_FOR": 1, "TRUSTED_PROXIES": "127.0.0.1/32"}, "NOTE: PROXY_FIX_X_PROTO is 0"),
    ({"IPV6_HOUSEHOLD_PREFIX": 80}, "NOTE: IPV6_HOUSEHOLD_PREFIX is 80"),
])
def test_risky_settings_are_warnings(check, settings, expected):
    code, out = check(settings)
    assert code == 0
    assert expected in " ".join(out.split())


@pytest.mark.parametrize("prefix", [48, 56, 64])
def test_a_home_sized_ipv6_household_prefix_is_fine(check, prefix):
    code, out = check({"IPV6_HOUSEHOLD_PREFIX": prefix})
    assert code == 0 and "IPV6_HOUSEHOLD_PREFIX is" not in " ".join(out.split())


def test_a_good_proxy_setup_has_no_findings(check):
    code, out = check({"PROXY_FIX_X_FOR": 1, "PROXY_FIX_X_PROTO": 1,
                       "TRUSTED_PROXIES": "127.0.0.1/32,::1/128"})
    assert code == 0 and "OK: nothing wrong" in out


def test_the_shipped_unix_socket_setup_is_no_error_but_names_who_may_connect(check):
    """deploy/tsd-server.env.example's TSD_TRUSTED_PROXIES=unix: is a complete setup; the
    note says the socket's permissions now decide who can choose an address."""
    code, out = check({"PROXY_FIX_X_FOR": 1, "PROXY_FIX_X_PROTO": 1,
                       "TRUSTED_PROXIES": "unix:"})
    assert code == 0 and "ERROR" not in out, out
    assert "NOTE: TRUSTED_PROXIES contains unix:, so whoever can open" in out


def simulated(out: str) -> dict:
    return json.loads(out[out.index("would be seen as:") + len("would be seen as:"):])


@pytest.mark.parametrize("args, client_ip, reason", [
    (("--peer", "127.0.0.1", "--forwarded-for", "8.8.8.8"), "8.8.8.8", None),
    (("--peer", "127.0.0.1"), "127.0.0.1", "missing_forwarded_header"),
    (("--peer", "9.9.9.9", "--forwarded-for", "8.8.8.8"), "9.9.9.9",
     "untrusted_forwarded_header"),
    (("--peer", "127.0.0.1", "--forwarded-for", "1.1.1.1, 8.8.8.8"), "8.8.8.8", None),
    # Through gunicorn's unix socket, which these settings do not trust.
    (("--peer", "unix:", "--forwarded-for", "8.8.8.8"), None, "untrusted_forwarded_header"),
])
def test_a_request_can_be_simulated(check, args, client_ip, reason):
    code, out = check({"PROXY_FIX_X_FOR": 1, "PROXY_FIX_X_PROTO": 1,
                       "TRUSTED_PROXIES": "127.0.0.1/32"}, *args)
    assert code == 0
    record = simulated(out)
    assert record["client_ip"] == client_ip and record["ip_match"]["reason"] == reason


def test_the_kill_switch_state_is_shown(app, check):
    from tsd_server.discovery import kill_switch

    with app.test_request_context():
        kill_switch.set_flag("ip_match", enabled=False, reason="proxy broken", actor="cli")
    _, out = check()
    assert "ip_match is off (runtime: proxy broken)" in out
