"""Property tests: no forwarded header, peer or setting makes an address eligible unless it
came from the direct peer or from the hop a trusted proxy vouches for."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from tsd_server.client_address import (
    LAN_NETWORKS,
    ProxySettings,
    is_public,
    parse_ip,
    resolve,
    split_hops,
)
from tsd_server.recorded_chain import MAX_CLAIMED_HOPS, MAX_HOP_LENGTH

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
# Real addresses, plus the shapes attackers and broken proxies send.
hop = st.one_of(
    ipv4,
    ipv6,
    st.sampled_from(["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "127.0.0.1", "10.0.0.1",
                     "::ffff:8.8.8.8", "fe80::1%eth0", "8.8.8.8:443", "[2001:4860::1]:80",
                     "unknown", "", " ", "for=8.8.8.8", "999.1.1.1", "8.8.8.8\x00"]),
    st.text(max_size=40),
)
header = st.lists(hop, max_size=12).map(", ".join)
networks = st.lists(
    st.one_of(st.sampled_from(["127.0.0.1/32", "10.0.0.0/8", "::1/128", "8.8.8.0/24",
                               "0.0.0.0/0", "2001:4860::/32", "172.16.0.0/12"]),
              st.ip_addresses().map(lambda ip: f"{ip}/{ip.max_prefixlen}")),
    max_size=4,
)
proxy_settings = st.builds(
    lambda x_for, nets, v6, lan, p4, p6: ProxySettings(
        x_for=x_for,
        trusted_proxies=tuple(ipaddress.ip_network(n, strict=False) for n in nets),
        ipv6_household_prefix=v6, allow_private=lan, private_prefix_v4=p4,
        private_prefix_v6=p6),
    st.integers(min_value=0, max_value=4), networks, st.integers(min_value=32, max_value=128),
    st.booleans(), st.integers(min_value=8, max_value=32), st.integers(min_value=32, max_value=128),
)
peer = st.one_of(ipv4, ipv6, st.sampled_from(["127.0.0.1", "::1", "", "not-an-ip", "10.1.2.3"]))


def environ_for(xff: str | None, forwarded: str | None, real_ip: str | None) -> dict:
    environ = {}
    if xff is not None:
        environ["HTTP_X_FORWARDED_FOR"] = xff
    if forwarded is not None:
        environ["HTTP_FORWARDED"] = forwarded
    if real_ip is not None:
        environ["HTTP_X_REAL_IP"] = real_ip
    return environ


@settings(max_examples=600, deadline=None)
@given(peer=peer, cfg=proxy_settings, xff=st.none() | header,
       forwarded=st.none() | header, real_ip=st.none() | hop)
def test_eligible_address_comes_from_peer_or_trusted_hop(peer, cfg, xff, forwarded, real_ip):
    environ = environ_for(xff, forwarded, real_ip)
    record = resolve(peer, environ, cfg)
    if not record.eligible:
        assert record.household is None
        return

    client = ipaddress.ip_address(record.client_ip)
    peer_address = parse_ip(peer)
    peer_trusted = cfg.x_for > 0 and cfg.is_trusted_proxy(peer_address)
    if peer_trusted:
        hops = split_hops(xff)
        assert len(hops) >= cfg.x_for
        assert parse_ip(hops[-cfg.x_for]) == client
    else:
        # An untrusted peer's headers never count: eligible only with no forwarded header.
        assert not any(environ.values())
        assert client == peer_address

    assert not cfg.is_trusted_proxy(client)
    assert client in ipaddress.ip_network(record.household)
    assert is_public(client) or (cfg.allow_private and any(client in n for n in LAN_NETWORKS))


@settings(max_examples=300, deadline=None)
@given(peer=peer, xff=header)
def test_without_trusted_proxies_any_forwarded_header_is_refused(peer, xff):
    for cfg in (ProxySettings(), ProxySettings(x_for=1), ProxySettings(
            trusted_proxies=(ipaddress.ip_network("0.0.0.0/0"),))):
        record = resolve(peer, {"HTTP_X_FORWARDED_FOR": xff or " "}, cfg)
        assert not record.eligible
        assert record.ineligibility_reason == "untrusted_forwarded_header"


@settings(max_examples=200, deadline=None)
@given(count=st.integers(min_value=1, max_value=2000), size=st.integers(0, 300))
def test_many_and_huge_headers_are_bounded_in_the_record(count, size):
    xff = ", ".join(["8.8.8.8" + "x" * size] * count)
    cfg = ProxySettings(x_for=1, trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),))
    record = resolve("127.0.0.1", {"HTTP_X_FORWARDED_FOR": xff}, cfg)
    assert len(record.forwarded_for) <= 1 + MAX_CLAIMED_HOPS + 1  # the proxy's, claims, CUT
    assert all(len(h) <= MAX_HOP_LENGTH for h in record.forwarded_for)
    if size:
        assert record.ineligibility_reason == "invalid_forwarded_header"
