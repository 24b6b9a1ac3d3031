"""TrustedProxyFix: Werkzeug's ProxyFix for trusted peers only, consistent with the record.

These run the middleware around a small WSGI app that captures the environ it is handed,
so they see exactly what Flask would see; the end-to-end effects (https detection, Secure
cookies) are tested through the whole app in test_accounts.py.
"""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.test import EnvironBuilder

from tsd_server.client_address import (
    CONTRADICTORY_FORWARDED_HEADERS,
    ENVIRON_KEY,
    UNTRUSTED_FORWARDED_HEADER,
    ProxySettings,
    parse_ip,
)
from tsd_server.proxy_fix import TrustedProxyFix
from tsd_server.trusted_proxies import parse_networks

PROXY = "10.20.30.40"
OUTER = "10.20.30.41"
FORGED = {
    "X-Forwarded-For": "1.1.1.1",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Port": "8443",
    "X-Forwarded-Prefix": "/evil",
}


def all_headers_config(x_for: int = 1) -> dict[str, int]:
    return {"PROXY_FIX_X_FOR": x_for, "PROXY_FIX_X_PROTO": 1, "PROXY_FIX_X_HOST": 1,
            "PROXY_FIX_X_PORT": 1, "PROXY_FIX_X_PREFIX": 1}


def run(middleware_factory, peer: str | None, headers: dict[str, str]) -> dict:
    """Send one request through the middleware; return the environ the app received."""
    seen: dict = {}

    def app(environ, start_response):
        seen.update(environ)
        start_response("200 OK", [])
        return [b""]

    environ = EnvironBuilder(path="/x", headers=headers,
                             environ_base={"REMOTE_ADDR": peer}).get_environ()
    middleware_factory(app)(environ, lambda *args: None)
    return seen


def trusted_fix(x_for: int = 1, trusted: str = f"{PROXY}/32"):
    config = all_headers_config(x_for)
    proxy_settings = ProxySettings(x_for=x_for, trusted_proxies=parse_networks(trusted))
    return lambda app: TrustedProxyFix(app, config, proxy_settings)


def test_untrusted_peer_changes_nothing():
    seen = run(trusted_fix(), "8.8.8.8", FORGED)
    assert seen["REMOTE_ADDR"] == "8.8.8.8"
    assert seen["wsgi.url_scheme"] == "http"
    assert seen["HTTP_HOST"] == "localhost"
    assert seen["SERVER_PORT"] == "80"
    assert seen["SCRIPT_NAME"] == ""
    assert seen["tsd.peer_addr"] == "8.8.8.8"
    assert seen[ENVIRON_KEY].ineligibility_reason == UNTRUSTED_FORWARDED_HEADER


def test_trusted_peer_headers_are_applied():
    seen = run(trusted_fix(), PROXY, {**FORGED, "X-Forwarded-For": "1.1.1.1, 9.9.9.9"})
    assert seen["REMOTE_ADDR"] == "9.9.9.9"
    assert seen["wsgi.url_scheme"] == "https"
    assert seen["HTTP_HOST"] == "evil.example:8443"
    assert seen["SCRIPT_NAME"] == "/evil"
    assert seen["tsd.peer_addr"] == PROXY
    assert seen[ENVIRON_KEY].client_ip == "9.9.9.9"


def test_defaults_trust_no_header_even_from_a_listed_proxy():
    config = {key: 0 for key in all_headers_config()}
    proxy_settings = ProxySettings(trusted_proxies=parse_networks(f"{PROXY}/32"))
    seen = run(lambda app: TrustedProxyFix(app, config, proxy_settings), PROXY, FORGED)
    assert seen["REMOTE_ADDR"] == PROXY
    assert seen["wsgi.url_scheme"] == "http"
    assert seen["HTTP_HOST"] == "localhost"


def test_bypassing_the_outer_proxy_does_not_choose_the_address():
    """With two proxies, Werkzeug alone believes the second-last hop whoever wrote it."""
    headers = {"X-Forwarded-For": "1.1.1.1, 9.9.9.9"}  # 9.9.9.9 went straight to PROXY
    plain = run(lambda app: ProxyFix(app, x_for=2), PROXY, headers)
    assert plain["REMOTE_ADDR"] == "1.1.1.1"  # what this middleware exists to prevent
    seen = run(trusted_fix(x_for=2, trusted=f"{PROXY}/32, {OUTER}/32"), PROXY, headers)
    assert seen["REMOTE_ADDR"] == "9.9.9.9"
    assert seen[ENVIRON_KEY].ineligibility_reason == UNTRUSTED_FORWARDED_HEADER


def test_invalid_hop_leaves_the_peer_address():
    seen = run(trusted_fix(), PROXY, {"X-Forwarded-For": "unknown"})
    assert seen["REMOTE_ADDR"] == PROXY
    assert seen[ENVIRON_KEY].client_ip is None


def test_a_hop_the_proxys_x_real_ip_contradicts_leaves_the_peer_address():
    """The proxy passed the client's own X-Forwarded-For on: logs must not name the forged
    hop, which the record refused."""
    seen = run(trusted_fix(), PROXY, {"X-Forwarded-For": "9.9.9.9", "X-Real-IP": "8.8.4.4"})
    assert seen["REMOTE_ADDR"] == PROXY
    assert seen[ENVIRON_KEY].client_ip is None
    assert seen[ENVIRON_KEY].ineligibility_reason == CONTRADICTORY_FORWARDED_HEADERS


POOL = ["8.8.8.8", "9.9.9.9", "1.1.1.1", "2001:4860:4860::8888", "::ffff:8.8.8.8",
        "192.168.1.1", "127.0.0.1", PROXY, OUTER, "10.20.30.99", "unknown", "9.9.9.9:80",
        "", "[2606:4700:4700::1111]"]
TRUSTED_CHOICES = [f"{PROXY}/32", f"{OUTER}/32", "10.20.30.0/24", "127.0.0.0/8", "8.8.8.8/32"]


@settings(max_examples=400, deadline=None)
@given(
    peer=st.sampled_from([p for p in POOL if p]),
    hops=st.none() | st.lists(st.sampled_from(POOL), max_size=5),
    x_for=st.integers(min_value=0, max_value=3),
    trusted=st.lists(st.sampled_from(TRUSTED_CHOICES), unique=True, max_size=3),
    other_header=st.sampled_from([None, "X-Real-IP", "Forwarded"]),
)
def test_remote_addr_always_agrees_with_the_record(peer, hops, x_for, trusted, other_header):
    proxy_settings = ProxySettings(x_for=x_for, trusted_proxies=parse_networks(trusted))
    headers = {} if hops is None else {"X-Forwarded-For": ", ".join(hops)}
    if other_header:
        headers[other_header] = "for=1.1.1.1" if other_header == "Forwarded" else "1.1.1.1"
    seen = run(lambda app: TrustedProxyFix(app, all_headers_config(x_for), proxy_settings),
               peer, headers)
    record = seen[ENVIRON_KEY]
    peer_trusted = proxy_settings.is_trusted_proxy(parse_ip(peer))

    # Flask's request.remote_addr is the record's client address, never another one.
    assert seen["REMOTE_ADDR"] == ((record.client_ip or peer) if peer_trusted else peer)
    assert record.peer_ip == str(parse_ip(peer)) if parse_ip(peer) else peer

    if not peer_trusted or x_for == 0:
        # Nothing a client sends can change its address.
        assert record.client_ip == (str(parse_ip(peer)) if parse_ip(peer) else None)
        if any(seen.get(f"HTTP_{name.upper().replace('-', '_')}") for name in headers):
            assert not record.eligible
    if record.eligible:
        client = ipaddress.ip_address(record.client_ip)
        assert client in ipaddress.ip_network(record.household)
        assert not proxy_settings.is_trusted_proxy(client)
        if peer_trusted and x_for > 0:
            chain = [h.strip() for h in headers["X-Forwarded-For"].split(",")]
            # The client is the hop the innermost x_for proxies vouch for, each of them trusted,
            # and it is what Werkzeug's ProxyFix would pick for a fully trusted chain.
            assert parse_ip(chain[-x_for]) == client
            assert all(proxy_settings.is_trusted_proxy(parse_ip(h)) for h in chain[-x_for + 1:]
                       ) if x_for > 1 else True
            plain = run(lambda app: ProxyFix(app, x_for=x_for), peer, headers)
            assert parse_ip(plain["REMOTE_ADDR"]) == client
