"""``flask proxy-check``: settings explained, visible mistakes found, requests simulated."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def check(app, database):
    """Run ``proxy-check`` on an app with the given settings: (exit code, output)."""
    from tsd_server import create_app

    def run(settings: dict | None = None, *args: str) -> tuple[int, str]:
        configured = create_app({"TESTING": True, "SECRET_KEY": "x" * 32,
                                 "DATABASE_URL": database, **(settings or {})})
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


@pytest.mark.parametrize("settings, expected", [
    ({"PROXY_FIX_X_FOR": 1}, "TRUSTED_PROXIES is empty"),
    ({"TRUSTED_PROXIES": "127.0.0.1/32"}, "PROXY_FIX_X_FOR is 0"),
    ({"PROXY_FIX_X_FOR": 1, "TRUSTED_PROXIES": "0.0.0.0/0"}, "far too wide"),
    ({"PROXY_FIX_X_FOR": 1, "TRUSTED_PROXIES": "::/0"}, "far too wide"),
    # One household across many homes: the incident ip_match exists to prevent.
    ({"IPV6_HOUSEHOLD_PREFIX": 32}, "IPV6_HOUSEHOLD_PREFIX is 32: a /32 holds many customers"),
    ({"IPV6_HOUSEHOLD_PREFIX": 47}, "IPV6_HOUSEHOLD_PREFIX is 47"),
])
def test_mistakes_in_the_settings_are_errors_and_exit_1(check, settings, expected):
    code, out = check(settings)
    assert code == 1
    assert "ERROR:" in out and expected in " ".join(out.split())


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


def simulated(out: str) -> dict:
    return json.loads(out[out.index("would be seen as:") + len("would be seen as:"):])


@pytest.mark.parametrize("args, client_ip, reason", [
    (("--peer", "127.0.0.1", "--forwarded-for", "8.8.8.8"), "8.8.8.8", None),
    (("--peer", "127.0.0.1"), "127.0.0.1", "missing_forwarded_header"),
    (("--peer", "9.9.9.9", "--forwarded-for", "8.8.8.8"), "9.9.9.9",
     "untrusted_forwarded_header"),
    (("--peer", "127.0.0.1", "--forwarded-for", "1.1.1.1, 8.8.8.8"), "8.8.8.8", None),
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
