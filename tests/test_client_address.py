"""The client-address record: which address a request is from, its household, and why
ip_match may refuse it. Every reason code is produced from a crafted WSGI environ.

Public addresses in these tests are real global ones (8.8.8.8, 1.1.1.1, 9.9.9.9, Google's
and Cloudflare's IPv6 resolvers); documentation ranges must come out as non-public.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import pytest

from tsd_server import proxy_warnings
from tsd_server.client_address import (
    CONTRADICTORY_FORWARDED_HEADERS,
    INVALID_FORWARDED_HEADER,
    MISSING_FORWARDED_HEADER,
    NON_PUBLIC_ADDRESS,
    PROXY_ADDRESS,
    UNTRUSTED_FORWARDED_HEADER,
    UNTRUSTED_PEER,
    ProxySettings,
    resolve,
)
from tsd_server.trusted_proxies import parse_networks

PROXY = "10.20.30.40"  # the reverse proxy next to the server
OUTER = "10.20.30.41"  # a load balancer in front of it

NO_PROXY = ProxySettings()
ONE_PROXY = ProxySettings(x_for=1, trusted_proxies=parse_networks(f"{PROXY}/32"))
TWO_PROXIES = ProxySettings(x_for=2, trusted_proxies=parse_networks(f"{PROXY}/32, {OUTER}/32"))
LAN = ProxySettings(allow_private=True)


def xff(value: str) -> dict[str, str]:
    return {"HTTP_X_FORWARDED_FOR": value}


# (settings, direct peer, environ, client_ip, household, reason)
CASES = {
    "direct ipv4": (NO_PROXY, "8.8.8.8", {}, "8.8.8.8", "8.8.8.8/32", None),
    "direct ipv6 is a /64": (NO_PROXY, "2001:4860:4860::8888", {}, "2001:4860:4860::8888",
                             "2001:4860:4860::/64", None),
    "ipv6 prefix is a setting": (ProxySettings(ipv6_household_prefix=48),
                                 "2606:4700:4700::1111", {}, "2606:4700:4700::1111",
                                 "2606:4700:4700::/48", None),
    "ipv4-mapped ipv6 peer is ipv4": (NO_PROXY, "::ffff:8.8.8.8", {}, "8.8.8.8",
                                      "8.8.8.8/32", None),
    "forged xff, no proxy configured": (NO_PROXY, "8.8.8.8", xff("1.1.1.1"), "8.8.8.8", None,
                                        UNTRUSTED_FORWARDED_HEADER),
    "forged Forwarded header": (NO_PROXY, "8.8.8.8", {"HTTP_FORWARDED": "for=1.1.1.1"},
                                "8.8.8.8", None, UNTRUSTED_FORWARDED_HEADER),
    "forged X-Real-IP": (NO_PROXY, "8.8.8.8", {"HTTP_X_REAL_IP": "1.1.1.1"}, "8.8.8.8", None,
                         UNTRUSTED_FORWARDED_HEADER),
    "xff from a peer outside the trusted list": (ONE_PROXY, "1.1.1.1", xff("9.9.9.9"),
                                                 "1.1.1.1", None, UNTRUSTED_FORWARDED_HEADER),
    "trusted peer but x_for=0": (ProxySettings(trusted_proxies=parse_networks(PROXY)), PROXY,
                                 xff("9.9.9.9"), PROXY, None, UNTRUSTED_FORWARDED_HEADER),
    "through the proxy": (ONE_PROXY, PROXY, xff("9.9.9.9"), "9.9.9.9", "9.9.9.9/32", None),
    "client-forged hops left of the proxy's are ignored": (
        ONE_PROXY, PROXY, xff("1.1.1.1, 8.8.8.8, 9.9.9.9"), "9.9.9.9", "9.9.9.9/32", None),
    "proxy passed no xff": (ONE_PROXY, PROXY, {}, PROXY, None, MISSING_FORWARDED_HEADER),
    "proxy passed Forwarded but not xff": (ONE_PROXY, PROXY, {"HTTP_FORWARDED": "for=9.9.9.9"},
                                           PROXY, None, MISSING_FORWARDED_HEADER),
    "blank xff from proxy": (ONE_PROXY, PROXY, xff("  "), PROXY, None,
                             MISSING_FORWARDED_HEADER),
    "two proxies, one hop": (TWO_PROXIES, PROXY, xff("9.9.9.9"), PROXY, None,
                             MISSING_FORWARDED_HEADER),
    "two proxies, full chain": (TWO_PROXIES, PROXY, xff("1.1.1.1, 9.9.9.9, " + OUTER),
                                "9.9.9.9", "9.9.9.9/32", None),
    # The attacker at 9.9.9.9 skips the load balancer and claims to be 1.1.1.1.
    "two proxies, outer one bypassed": (TWO_PROXIES, PROXY, xff("1.1.1.1, 9.9.9.9"), "9.9.9.9",
                                        None, UNTRUSTED_FORWARDED_HEADER),
    # A proxy is configured, so a request straight from anywhere else may stand for many
    # clients: a load balancer whose new address nobody listed, and which stopped passing
    # X-Forwarded-For too, would make everybody that one address.
    "straight from a peer that is not a proxy": (ONE_PROXY, "8.8.8.8", {}, "8.8.8.8", None,
                                                 UNTRUSTED_PEER),
    "straight from an ipv6 peer that is not a proxy": (
        TWO_PROXIES, "2001:4860:4860::8888", {}, "2001:4860:4860::8888", None, UNTRUSTED_PEER),
    # The proxy writes X-Real-IP or Forwarded itself but passes the client's own
    # X-Forwarded-For on (nginx with only X-Real-IP set; HAProxy's `option forwarded`): the
    # hop may be the client's choice, so no client address is believed.
    "proxy's X-Real-IP names another client": (
        ONE_PROXY, PROXY, {**xff("9.9.9.9"), "HTTP_X_REAL_IP": "8.8.4.4"}, None, None,
        CONTRADICTORY_FORWARDED_HEADERS),
    "proxy's Forwarded names another client": (
        ONE_PROXY, PROXY, {**xff("9.9.9.9"), "HTTP_FORWARDED": 'for="8.8.4.4:61234";proto=https'},
        None, None, CONTRADICTORY_FORWARDED_HEADERS),
    "proxy's Forwarded names another ipv6 client": (
        ONE_PROXY, PROXY,
        {**xff("9.9.9.9"), "HTTP_FORWARDED": 'For="[2001:4860:4860::8844]:4711"'},
        None, None, CONTRADICTORY_FORWARDED_HEADERS),
    "the last Forwarded element is the proxy's": (
        ONE_PROXY, PROXY, {**xff("9.9.9.9"), "HTTP_FORWARDED": "for=9.9.9.9, for=8.8.4.4"},
        None, None, CONTRADICTORY_FORWARDED_HEADERS),
    "a client's own Forwarded before the proxy's agreeing one": (
        ONE_PROXY, PROXY, {**xff("8.8.4.4, 9.9.9.9"), "HTTP_FORWARDED": "for=8.8.4.4, for=9.9.9.9"},
        "9.9.9.9", "9.9.9.9/32", None),
    "proxy's X-Real-IP agrees": (ONE_PROXY, PROXY, {**xff("9.9.9.9"), "HTTP_X_REAL_IP": "9.9.9.9"},
                                 "9.9.9.9", "9.9.9.9/32", None),
    "X-Real-IP repeated: the last line is the proxy's": (
        ONE_PROXY, PROXY, {**xff("9.9.9.9"), "HTTP_X_REAL_IP": "8.8.4.4, ::ffff:9.9.9.9"},
        "9.9.9.9", "9.9.9.9/32", None),
    "obfuscated and unknown Forwarded nodes claim nothing": (
        ONE_PROXY, PROXY, {**xff("9.9.9.9"), "HTTP_FORWARDED": "for=unknown, for=_hidden"},
        "9.9.9.9", "9.9.9.9/32", None),
    "X-Real-IP that is no address claims nothing": (
        ONE_PROXY, PROXY, {**xff("9.9.9.9"), "HTTP_X_REAL_IP": "client.example"},
        "9.9.9.9", "9.9.9.9/32", None),
    "two proxies, X-Real-IP names the outer one": (
        TWO_PROXIES, PROXY, {**xff("9.9.9.9, " + OUTER), "HTTP_X_REAL_IP": OUTER},
        "9.9.9.9", "9.9.9.9/32", None),
    "two proxies, X-Real-IP names a hop the client wrote": (
        TWO_PROXIES, PROXY, {**xff("1.1.1.1, 9.9.9.9, " + OUTER), "HTTP_X_REAL_IP": "1.1.1.1"},
        None, None, CONTRADICTORY_FORWARDED_HEADERS),
    "hop is not an address": (ONE_PROXY, PROXY, xff("not-an-ip"), None, None,
                              INVALID_FORWARDED_HEADER),
    "hop with a port": (ONE_PROXY, PROXY, xff("9.9.9.9:443"), None, None,
                        INVALID_FORWARDED_HEADER),
    "hop in brackets": (ONE_PROXY, PROXY, xff("[2001:4860:4860::8888]"), None, None,
                        INVALID_FORWARDED_HEADER),
    "hop with a zone id": (ONE_PROXY, PROXY, xff("fe80::1%eth0"), None, None,
                           INVALID_FORWARDED_HEADER),
    "empty last hop is not skipped": (ONE_PROXY, PROXY, xff("9.9.9.9, "), None, None,
                                      INVALID_FORWARDED_HEADER),
    "client resolves to the proxy itself": (ONE_PROXY, PROXY, xff(PROXY), PROXY, None,
                                            PROXY_ADDRESS),
    "direct request from a trusted proxy's address": (
        ProxySettings(trusted_proxies=parse_networks("8.8.8.0/24")), "8.8.8.8", {}, "8.8.8.8",
        None, PROXY_ADDRESS),
    "private client behind the proxy": (ONE_PROXY, PROXY, xff("192.168.1.10"), "192.168.1.10",
                                        None, NON_PUBLIC_ADDRESS),
    "no peer address at all": (NO_PROXY, None, {}, None, None, NON_PUBLIC_ADDRESS),
    "peer is not an address (unix socket)": (NO_PROXY, "unix:/run/tsd.sock", {}, None, None,
                                             NON_PUBLIC_ADDRESS),
    "lan mode: private ipv4 is a /24": (LAN, "192.168.1.10", {}, "192.168.1.10",
                                        "192.168.1.0/24", None),
    "lan mode: loopback": (LAN, "127.0.0.1", {}, "127.0.0.1", "127.0.0.0/24", None),
    "lan mode: ipv6 unique-local": (LAN, "fd12:3456:789a:1::5", {}, "fd12:3456:789a:1::5",
                                    "fd12:3456:789a:1::/64", None),
    "lan mode: public stays a /32": (LAN, "8.8.8.8", {}, "8.8.8.8", "8.8.8.8/32", None),
    "lan mode does not trust forged headers": (LAN, "192.168.1.10", xff("192.168.1.11"),
                                               "192.168.1.10", None,
                                               UNTRUSTED_FORWARDED_HEADER),
}


@pytest.mark.parametrize("settings, peer, environ, client_ip, household, reason",
                         CASES.values(), ids=CASES.keys())
def test_resolve(settings, peer, environ, client_ip, household, reason):
    record = resolve(peer, environ, settings)
    assert record.client_ip == client_ip
    assert record.household == household
    assert record.ineligibility_reason == reason
    assert record.eligible is (reason is None)


NON_PUBLIC = [
    "127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.10",  # loopback, RFC 1918
    "100.64.0.1", "100.127.255.254",  # CGNAT: one address, many households
    "169.254.10.10", "0.0.0.0", "240.0.0.1", "255.255.255.255", "224.0.0.1",
    "192.0.2.10", "198.51.100.10", "203.0.113.10", "198.18.0.1",  # documentation, benchmarking
    "192.88.99.1",  # 6to4 relay anycast
    "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1",
    "2001:db8::1", "3fff::1",  # IPv6 documentation (RFC 3849, RFC 9637)
    "64:ff9b::808:808", "2001::1",  # NAT64, Teredo
    "::ffff:192.168.1.1",
]


@pytest.mark.parametrize("address", NON_PUBLIC)
def test_non_public_addresses_are_never_households(address):
    record = resolve(address, {}, NO_PROXY)
    assert record.ineligibility_reason == NON_PUBLIC_ADDRESS
    assert record.household is None and not record.eligible


@pytest.mark.parametrize("address", ["100.64.0.1", "169.254.1.1", "192.0.2.10", "2001:db8::1",
                                     "3fff::1", "fe80::1", "224.0.0.1", "0.0.0.0"])
def test_lan_mode_accepts_only_lan_ranges(address):
    record = resolve(address, {}, LAN)
    assert record.ineligibility_reason == NON_PUBLIC_ADDRESS


def test_ipv4_mapped_trusted_proxy_entries_mean_their_ipv4_networks():
    """Peers are compared as IPv4 (a mapped peer is unmapped first), so an entry written as
    ``::ffff:10.20.30.40/128`` would never have matched: it is read as 10.20.30.40/32."""
    assert [str(net) for net in parse_networks(
        f"::ffff:{PROXY}/128, ::ffff:10.0.0.0/104, ::ffff:0:0/96, 2001:db8::/32")] == [
        f"{PROXY}/32", "10.0.0.0/8", "0.0.0.0/0", "2001:db8::/32"]
    mapped = ProxySettings(x_for=1, trusted_proxies=parse_networks(f"::ffff:{PROXY}/128"))
    for peer in (PROXY, f"::ffff:{PROXY}"):
        record = resolve(peer, xff("9.9.9.9"), mapped)
        assert (record.client_ip, record.household) == ("9.9.9.9", "9.9.9.9/32"), peer


def test_untrusted_record_keeps_the_forged_chain_for_audit():
    record = resolve("8.8.8.8", xff("1.1.1.1, 9.9.9.9"), NO_PROXY)
    assert record.peer_ip == "8.8.8.8"
    assert record.forwarded_for == ("1.1.1.1", "9.9.9.9")


# --- the endpoint, through the whole app -------------------------------------------------

PROXIED = {"PROXY_FIX_X_FOR": 1, "PROXY_FIX_X_PROTO": 1, "TRUSTED_PROXIES": f"{PROXY}/32"}


@pytest.fixture
def app_config(request):
    return getattr(request, "param", {})


def ask(client, **environ):
    response = client.get("/api/v1/client-address", environ_base=environ)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


def test_endpoint_shape_for_a_direct_public_client(client):
    assert ask(client, REMOTE_ADDR="2001:4860:4860::8888") == {
        "client_ip": "2001:4860:4860::8888",
        "peer_ip": "2001:4860:4860::8888",
        "forwarded_for": [],
        "household": "2001:4860:4860::/64",
        "ip_match": {"eligible": True, "reason": None},
    }


def test_endpoint_refuses_forged_header_without_proxy_settings(client):
    body = ask(client, REMOTE_ADDR="8.8.8.8", HTTP_X_FORWARDED_FOR="1.1.1.1")
    assert body["client_ip"] == "8.8.8.8"
    assert body["forwarded_for"] == ["1.1.1.1"]
    assert body["household"] is None
    assert body["ip_match"] == {"eligible": False, "reason": UNTRUSTED_FORWARDED_HEADER}


ENDPOINT_CASES = {
    "eligible through the proxy": (
        {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": "1.1.1.1, 9.9.9.9"},
        "9.9.9.9", "9.9.9.9/32", None),
    "untrusted peer forging the header": (
        {"REMOTE_ADDR": "8.8.8.8", "HTTP_X_FORWARDED_FOR": "9.9.9.9"},
        "8.8.8.8", None, UNTRUSTED_FORWARDED_HEADER),
    "proxy dropped the header": ({"REMOTE_ADDR": PROXY}, PROXY, None, MISSING_FORWARDED_HEADER),
    "straight from a peer that is not the proxy": ({"REMOTE_ADDR": "8.8.8.8"}, "8.8.8.8", None,
                                                   UNTRUSTED_PEER),
    # nginx with `proxy_set_header X-Real-IP $remote_addr` and no X-Forwarded-For line
    # passes a client's forged header on: the client at 8.8.4.4 claims 9.9.9.9.
    "proxy passed the client's own header on": (
        {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": "9.9.9.9", "HTTP_X_REAL_IP": "8.8.4.4"},
        None, None, CONTRADICTORY_FORWARDED_HEADERS),
    "proxy passed garbage": ({"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": "unknown"},
                             None, None, INVALID_FORWARDED_HEADER),
    "client is the proxy": ({"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": PROXY},
                            PROXY, None, PROXY_ADDRESS),
    "private client": ({"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": "192.168.0.7"},
                       "192.168.0.7", None, NON_PUBLIC_ADDRESS),
    "documentation address": ({"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": "203.0.113.5"},
                              "203.0.113.5", None, NON_PUBLIC_ADDRESS),
}


@pytest.mark.parametrize("app_config", [PROXIED], indirect=True)
@pytest.mark.parametrize("environ, client_ip, household, reason", ENDPOINT_CASES.values(),
                         ids=ENDPOINT_CASES.keys())
def test_endpoint_reasons_behind_a_proxy(client, environ, client_ip, household, reason):
    body = ask(client, **environ)
    assert body["peer_ip"] == environ["REMOTE_ADDR"]
    assert body["client_ip"] == client_ip
    assert body["household"] == household
    assert body["ip_match"] == {"eligible": reason is None, "reason": reason}


@pytest.mark.parametrize("app_config", [{"IP_MATCH_ALLOW_PRIVATE": True}], indirect=True)
def test_endpoint_in_lan_mode(client):
    body = ask(client, REMOTE_ADDR="192.168.1.23")
    assert body["household"] == "192.168.1.0/24"
    assert body["ip_match"]["eligible"] is True


@pytest.fixture
def proxy_log(caplog, monkeypatch):
    """The proxy-setup warnings logged so far (tsd_server/proxy_warnings.py), from a fresh
    once-per-peer memory."""
    monkeypatch.setattr(proxy_warnings, "_warned_peers", OrderedDict())
    caplog.set_level(logging.WARNING, logger=proxy_warnings.__name__)
    return lambda: [r.getMessage() for r in caplog.records if r.name == proxy_warnings.__name__]


def test_untrusted_peer_is_logged_once(client, proxy_log):
    for forged in ("1.1.1.1", "8.8.8.8", "1.0.0.1"):
        ask(client, REMOTE_ADDR="9.9.9.9", HTTP_X_FORWARDED_FOR=forged)
    ask(client, REMOTE_ADDR="2606:4700:4700::1111", HTTP_X_FORWARDED_FOR="1.1.1.1")
    warned = proxy_log()
    assert len(warned) == 2
    assert "9.9.9.9" in warned[0] and "TSD_TRUSTED_PROXIES" in warned[0]


@pytest.mark.parametrize("app_config", [
    {"TRUSTED_PROXIES": "10.0.0.1/32", "PROXY_FIX_X_FOR": 2}], indirect=True)
def test_an_untrusted_hop_behind_a_trusted_proxy_is_named_once_per_proxy(
        client, proxy_log):
    """Two proxies expected; the hop before the trusted one is not a proxy. The warning
    names that hop (the settings' gap), not the trusted peer, and a client writing a new
    hop each time gets no second line."""
    for hop in ("203.0.113.7", "203.0.113.8", "203.0.113.9"):
        ask(client, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=f"1.1.1.1, {hop}")
    warned = proxy_log()
    assert warned == [
        "X-Forwarded-For passed on by trusted proxy 10.0.0.1 names 203.0.113.7 where a proxy "
        "was expected (TSD_PROXY_FIX_X_FOR=2); ip_match refuses its requests. If 203.0.113.7 "
        "is a proxy of yours, add it to TSD_TRUSTED_PROXIES; otherwise a client wrote that "
        "hop, or TSD_PROXY_FIX_X_FOR counts more proxies than there are."]


@pytest.mark.parametrize("app_config", [PROXIED], indirect=True)
def test_a_proxy_passing_clients_headers_on_is_named_once(client, proxy_log):
    """The proxy's X-Real-IP gives it away; the log says which proxy and what to fix, once,
    whatever each client forges."""
    for forged in ("9.9.9.9", "1.1.1.1"):
        body = ask(client, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=forged,
                   HTTP_X_REAL_IP="8.8.4.4")
        assert body["ip_match"]["reason"] == CONTRADICTORY_FORWARDED_HEADERS
    warned = proxy_log()
    assert warned == [
        f"Trusted proxy {PROXY} passed X-Forwarded-For 9.9.9.9, but its X-Real-IP names "
        "8.8.4.4: either it passes clients' own X-Forwarded-For on instead of writing the "
        "address it saw (clients choose their address), or it passes on an X-Real-IP or "
        "Forwarded a client sent. ip_match refuses its requests. Make it set X-Forwarded-For "
        "(nginx: proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; HAProxy: option "
        "forwardfor) and drop X-Real-IP and Forwarded from clients "
        "(deploy/tsd-server-proxy.conf)."]


@pytest.mark.parametrize("app_config", [PROXIED], indirect=True)
def test_a_request_round_the_proxy_is_logged_once_per_peer(client, proxy_log):
    # IPv6 by /64: a host going round the proxy from a new address of its /64 each
    # time gets one line.
    for peer in ("8.8.8.8", "8.8.8.8", "8.8.4.4", "2001:4860:4860::8888",
                 "2001:4860:4860::8844", "2001:4860:4860:1::8888"):
        assert ask(client, REMOTE_ADDR=peer)["ip_match"]["reason"] == UNTRUSTED_PEER
    warned = proxy_log()
    assert len(warned) == 4
    assert warned[0].startswith("A request came straight from 8.8.8.8, which is not in "
                                "TSD_TRUSTED_PROXIES, while TSD_PROXY_FIX_X_FOR=1")
