"""Property tests for the edges tests/test_client_address_properties.py does not reach:
IPv4-mapped IPv6, zone ids and ports where an address is expected, a header sent as many
lines (joined by the WSGI server), prepended forgeries, huge headers through the real app
(in-process and under gunicorn), and arbitrary settings."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tsd_server.client_address import (
    INVALID_FORWARDED_HEADER,
    MAX_RECORDED_HOPS,
    SHORTEST_HOME_PREFIX_V6,
    ProxySettings,
    is_public,
    resolve,
    split_hops,
)
from tsd_server.config import ConfigurationError
from tsd_server.recorded_chain import MAX_HOP_LENGTH
from tsd_server.trusted_proxies import is_too_wide

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
PUBLIC_V4 = ["8.8.8.8", "1.1.1.1", "9.9.9.9", "208.67.222.222"]
PUBLIC_V6 = ["2001:4860:4860::8888", "2606:4700:4700::1111"]

public_v4 = st.sampled_from(PUBLIC_V4) | st.ip_addresses(v=4).filter(is_public).map(str)
any_ip = st.ip_addresses().map(str)
# Trusted-proxy settings with one to three hops, proxies on loopback and 10/8.
proxied = st.builds(
    lambda x_for, lan: ProxySettings(
        x_for=x_for, allow_private=lan,
        trusted_proxies=(LOOPBACK, ipaddress.ip_network("10.0.0.0/8"))),
    st.integers(min_value=1, max_value=3), st.booleans())
proxy_hop = st.sampled_from(["127.0.0.1", "10.0.0.5", "10.20.30.40"])
junk_hop = st.one_of(any_ip, st.text(max_size=30),
                     st.sampled_from(["unknown", "", "_hidden", "for=8.8.8.8"]))


def mapped(ip: str) -> str:
    return f"::ffff:{ip}"


def summary(record):
    return (record.client_ip, record.household, record.ineligibility_reason)


# --- IPv4-mapped IPv6 -------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(peer=st.ip_addresses(v=4).map(str), cfg=proxied,
       hops=st.lists(st.ip_addresses(v=4).map(str), max_size=5), mask=st.lists(st.booleans(),
                                                                               max_size=6))
def test_mapped_addresses_resolve_as_their_ipv4_address(peer, cfg, hops, mask):
    """::ffff:a.b.c.d is a.b.c.d everywhere: peer, hops, trust and household alike."""
    spelled = [mapped(hop) if i < len(mask) and mask[i] else hop for i, hop in enumerate(hops)]
    plain = resolve(peer, {"HTTP_X_FORWARDED_FOR": ", ".join(hops)} if hops else {}, cfg)
    as_mapped = resolve(mapped(peer),
                        {"HTTP_X_FORWARDED_FOR": ", ".join(spelled)} if hops else {}, cfg)
    assert summary(as_mapped) == summary(plain)
    if plain.household is not None:
        assert plain.household.endswith("/32") or cfg.allow_private


def test_a_mapped_loopback_peer_is_a_trusted_proxy_not_a_household():
    cfg = ProxySettings(x_for=1, trusted_proxies=(LOOPBACK,))
    record = resolve("::ffff:127.0.0.1", {"HTTP_X_FORWARDED_FOR": "8.8.8.8"}, cfg)
    assert record.client_ip == "8.8.8.8" and record.household == "8.8.8.8/32"
    record = resolve("::ffff:127.0.0.1", {"HTTP_X_FORWARDED_FOR": "::ffff:127.0.0.1"}, cfg)
    assert record.ineligibility_reason == "proxy_address"


# --- zone ids and ports where an address is expected ---------------------------------------

zone = st.from_regex(r"[A-Za-z0-9]{1,8}", fullmatch=True)
with_zone = st.tuples(st.sampled_from(["fe80::1", "2001:4860:4860::8888", "::1"]), zone).map(
    "%".join)
with_port = st.one_of(
    st.tuples(public_v4, st.integers(0, 65535)).map(lambda t: f"{t[0]}:{t[1]}"),
    st.tuples(st.sampled_from(PUBLIC_V6), st.integers(0, 65535)).map(
        lambda t: f"[{t[0]}]:{t[1]}"),
    st.sampled_from(PUBLIC_V6).map(lambda ip: f"[{ip}]"))


@settings(max_examples=300, deadline=None)
@given(cfg=proxied, bad=with_zone | with_port,
       inner=st.lists(proxy_hop, min_size=2, max_size=2),
       outer=st.lists(junk_hop, max_size=3))
def test_a_zone_id_or_port_in_the_client_hop_is_invalid_never_parsed_around(cfg, bad, inner,
                                                                          outer):
    """The hop the proxies vouch for must be a bare IP; "8.8.8.8:443" is not 8.8.8.8."""
    hops = [*outer, bad, *inner[:cfg.x_for - 1]]
    record = resolve("127.0.0.1", {"HTTP_X_FORWARDED_FOR": ", ".join(hops)}, cfg)
    assert not record.eligible
    assert record.ineligibility_reason == INVALID_FORWARDED_HEADER
    assert record.client_ip is None


@settings(max_examples=100, deadline=None)
@given(peer=with_zone | with_port, xff=st.none() | st.sampled_from(PUBLIC_V4),
       cfg=proxied | st.just(ProxySettings()))
def test_a_peer_with_a_zone_id_or_port_is_never_eligible(peer, xff, cfg):
    record = resolve(peer, {"HTTP_X_FORWARDED_FOR": xff} if xff else {}, cfg)
    assert not record.eligible and record.household is None


# --- many header lines, and forgeries prepended by the client -----------------------------

@settings(max_examples=300, deadline=None)
@given(cfg=proxied, client=public_v4, inner=st.lists(proxy_hop, min_size=2, max_size=2),
       forged=st.lists(st.lists(junk_hop, min_size=1, max_size=3), max_size=4),
       separator=st.sampled_from([",", ", ", " ,  "]))
def test_forwarded_lines_joined_by_the_server_resolve_as_one_header(cfg, client, inner, forged,
                                                                   separator):
    """A client may send X-Forwarded-For as several lines; gunicorn joins them with ",",
    Werkzeug with ", ". Whatever the client wrote stays left of the proxies' hops, so it
    never becomes the address, however many lines it sends."""
    proxies_hops = [client, *inner[:cfg.x_for - 1]]
    lines = [", ".join(line) for line in forged] + [", ".join(proxies_hops)]
    record = resolve("127.0.0.1", {"HTTP_X_FORWARDED_FOR": separator.join(lines)}, cfg)
    honest = resolve("127.0.0.1", {"HTTP_X_FORWARDED_FOR": ", ".join(proxies_hops)}, cfg)
    assert summary(record) == summary(honest)
    assert record.client_ip == client and record.eligible


@settings(max_examples=200, deadline=None)
@given(cfg=proxied, hops=st.lists(junk_hop | proxy_hop, max_size=6),
       forged=st.lists(junk_hop, min_size=1, max_size=6))
def test_prepending_hops_never_changes_a_resolved_address(cfg, hops, forged):
    header = ", ".join(hops)
    assume(len(split_hops(header)) >= cfg.x_for)
    before = resolve("127.0.0.1", {"HTTP_X_FORWARDED_FOR": header}, cfg)
    after = resolve("127.0.0.1", {"HTTP_X_FORWARDED_FOR": ", ".join([*forged, *hops])}, cfg)
    assert summary(after) == summary(before)


# --- arbitrary settings --------------------------------------------------------------------

setting_value = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                          st.floats(allow_nan=True), st.text(max_size=40),
                          st.lists(st.text(max_size=20) | st.integers(), max_size=3),
                          st.sampled_from(["127.0.0.1/32", "10.0.0.0/8, ::1", "0.0.0.0/0",
                                           "8.8.8.8/33", "fe80::/10%eth0", "*",
                                           "172.17.0.1/16", "::ffff:0:0/96", 32, 47, 48]))
SETTING_KEYS = ["TRUSTED_PROXIES", "PROXY_FIX_X_FOR", "IPV6_HOUSEHOLD_PREFIX",
                "IP_MATCH_ALLOW_PRIVATE", "IP_MATCH_PRIVATE_PREFIX_V4",
                "IP_MATCH_PRIVATE_PREFIX_V6"]
VALID = {"TRUSTED_PROXIES": "", "PROXY_FIX_X_FOR": 0, "IPV6_HOUSEHOLD_PREFIX": 64,
         "IP_MATCH_ALLOW_PRIVATE": False, "IP_MATCH_PRIVATE_PREFIX_V4": 24,
         "IP_MATCH_PRIVATE_PREFIX_V6": 64}


@settings(max_examples=500, deadline=None)
@given(changes=st.dictionaries(st.sampled_from(SETTING_KEYS), setting_value, min_size=1))
def test_arbitrary_proxy_settings_are_accepted_or_refused_with_a_message(changes):
    """Start-up either gets usable settings or a ConfigurationError naming the setting;
    never a TypeError or a half-usable object."""
    try:
        cfg = ProxySettings.from_config({**VALID, **changes})
    except ConfigurationError as error:
        assert "TSD_" in str(error)
        return
    assert 0 <= cfg.x_for <= 10 and SHORTEST_HOME_PREFIX_V6 <= cfg.ipv6_household_prefix <= 128
    assert not any(is_too_wide(network) for network in cfg.trusted_proxies)
    resolve("127.0.0.1", {"HTTP_X_FORWARDED_FOR": "8.8.8.8"}, cfg)  # usable


# --- huge headers through the real app -----------------------------------------------------

@pytest.fixture
def app_config():
    return {"TRUSTED_PROXIES": "127.0.0.0/8", "PROXY_FIX_X_FOR": 1}


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(count=st.integers(1, 40_000), size=st.integers(0, 60), lines=st.integers(1, 50))
def test_huge_forwarded_headers_through_the_app_are_bounded(client, count, size, lines):
    """Behind a trusted proxy, megabytes of forwarded hops answer 200 with a bounded record."""
    hop = "8.8.8.8" + "x" * size
    header = ",".join([", ".join([hop] * max(1, count // lines))] * lines) + ", 1.1.1.1"
    response = client.get("/api/v1/client-address", environ_base={
        "REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": header})
    assert response.status_code == 200
    record = response.get_json()
    assert record["client_ip"] == "1.1.1.1" and record["ip_match"]["eligible"]
    assert len(record["forwarded_for"]) <= MAX_RECORDED_HOPS
    assert all(len(h) <= MAX_HOP_LENGTH for h in record["forwarded_for"])


@pytest.fixture(scope="module")
def gunicorn_server(tmp_path_factory):
    from tests.support import db_backends, servers

    directory = tmp_path_factory.mktemp("huge-headers")
    url = f"sqlite:///{directory}/tsd.sqlite3"
    db_backends.migrate(url)
    with servers.gunicorn(directory / "gunicorn", database_url=url, workers=1, settings={
            "TRUSTED_PROXIES": "127.0.0.0/8", "PROXY_FIX_X_FOR": 1}) as server:
        yield server


def raw_get(server, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
    """One HTTP/1.1 request with headers exactly as given (repeated lines kept)."""
    request = ["GET /api/v1/client-address HTTP/1.1", "Host: localhost",
               *(f"{name}: {value}" for name, value in headers), "Connection: close", "", ""]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall("\r\n".join(request).encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def test_gunicorn_joins_repeated_forwarded_lines_and_the_last_hop_counts(gunicorn_server):
    status, body = raw_get(gunicorn_server, [("X-Forwarded-For", "9.9.9.9, 1.1.1.1"),
                                             ("X-Forwarded-For", "8.8.8.8")])
    assert status == 200 and b'"client_ip":"8.8.8.8"' in body
    assert b'"forwarded_for":["9.9.9.9","1.1.1.1","8.8.8.8"]' in body


@pytest.mark.parametrize("headers", [
    [("X-Forwarded-For", "8.8.8.8, " * 2000 + "1.1.1.1")],
    [("X-Forwarded-For", "8.8.8.8")] * 200,
    [("X-Padding", "a" * 100_000)],
], ids=["one huge line", "200 lines", "100 kB header"])
def test_gunicorn_refuses_oversized_headers_before_the_app(gunicorn_server, headers):
    status, _ = raw_get(gunicorn_server, headers)
    assert status in (400, 413, 431)
    assert raw_get(gunicorn_server, [("X-Forwarded-For", "8.8.8.8")])[0] == 200
