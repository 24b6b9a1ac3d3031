"""Who is this request from? The client-address record, computed once per request.

This module is the only place that decides which address a request comes from and whether
that address may stand for a household in ip_match. It reads the direct peer (the TCP
address, or ``unix:`` through a unix socket, saved by ``tsd_server.proxy_fix`` before ProxyFix
rewrites anything) and the forwarded headers, and applies the deployment settings:

* Forwarded headers are believed only when the direct peer is inside ``TRUSTED_PROXIES``
  and ``PROXY_FIX_X_FOR`` says how many proxies appended to X-Forwarded-For. The chain is
  read from the right, one hop per proxy, and every hop between the client and the direct
  peer must itself be a trusted proxy (a client that bypasses the outer proxy cannot choose
  its address). Anything else that carries forwarded headers is marked
  ``untrusted_forwarded_header``: the header may be forged, so the address behind it is
  unknown. With a proxy configured, a request straight from a peer that is not a trusted
  proxy is ``untrusted_peer``: it went round the proxy, or the proxy now connects from an
  address nobody listed -- and if that proxy also stopped passing addresses, every user
  would be that one address.
* A trusted proxy that sent fewer hops than configured is ``missing_forwarded_header`` -- the
  incident this server exists to prevent: a proxy that stops passing the client's address
  makes every user look like one household.
* A trusted proxy whose own X-Real-IP or ``Forwarded`` names an address that the trusted
  part of X-Forwarded-For does not is ``contradictory_forwarded_headers``
  (``tsd_server.forwarded_contradiction``): such a proxy passes clients' own
  X-Forwarded-For on unchanged, or passes on an X-Real-IP or ``Forwarded`` a client sent;
  either way the client chose one of the two addresses. As with
  ``invalid_forwarded_header``, no client address is believed then: rate limits, logs and
  audit rows fall back to the direct peer (the approval page's warning weighs both:
  ``either_household``).
* A resolved address that is itself a trusted proxy is ``proxy_address``; a non-global
  address is ``non_public_address`` unless LAN mode accepts it.

Contradictory or malformed input is refused with a reason, never guessed around. An
ineligible record has no household, so nothing downstream can match on it by accident.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import current_app, g, request

from tsd_server.config import ConfigurationError, bounded_int_setting
from tsd_server.forwarded_contradiction import contradiction
from tsd_server.ip_addresses import IPAddress, parse_ip
from tsd_server.recorded_chain import MAX_CLAIMED_HOPS, recorded_hops
from tsd_server.trusted_proxies import UNIX_SOCKET, IPNetwork, check_width, parse_trusted

# Reason codes (DESIGN.md), in the order they are checked.
UNTRUSTED_FORWARDED_HEADER = "untrusted_forwarded_header"
UNTRUSTED_PEER = "untrusted_peer"
MISSING_FORWARDED_HEADER = "missing_forwarded_header"
INVALID_FORWARDED_HEADER = "invalid_forwarded_header"
CONTRADICTORY_FORWARDED_HEADERS = "contradictory_forwarded_headers"
PROXY_ADDRESS = "proxy_address"
NON_PUBLIC_ADDRESS = "non_public_address"

# The reasons that say the proxy setup, not the client, is wrong (tsd_server/proxy_warnings.py
# logs them once per peer).
PROXY_SETUP_REASONS = frozenset({UNTRUSTED_FORWARDED_HEADER, UNTRUSTED_PEER,
                                 CONTRADICTORY_FORWARDED_HEADERS})

REASON_MESSAGES = {
    UNTRUSTED_FORWARDED_HEADER: "The request carries forwarded headers, but it did not come "
    "from a trusted proxy, so the client's real address is unknown.",
    UNTRUSTED_PEER: "A proxy is configured in front of this server, but the request came "
    "straight from an address that is not a trusted proxy, so it may stand for many clients.",
    MISSING_FORWARDED_HEADER: "The request came from a trusted proxy that did not pass the "
    "client's address (X-Forwarded-For has fewer hops than configured).",
    INVALID_FORWARDED_HEADER: "The trusted proxy passed a client address that is not an IP "
    "address.",
    CONTRADICTORY_FORWARDED_HEADERS: "The trusted proxy names a different client address in "
    "X-Real-IP or Forwarded than in X-Forwarded-For, so neither can be trusted.",
    PROXY_ADDRESS: "The resolved client address is one of the trusted proxies.",
    NON_PUBLIC_ADDRESS: "The client address is not a public internet address (and LAN mode "
    "is off).",
}

# Headers that claim to name the client. Only X-Forwarded-For is ever believed; the others
# count as forwarded headers so an untrusted peer sending them is flagged, and from a
# trusted proxy they are checked against it (``forwarded_contradiction``).
FORWARDED_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")

# Addresses LAN mode accepts as households: RFC 1918, loopback, IPv6 unique-local.
LAN_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "fc00::/7", "::1/128")
)
GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")
# Not households although older Python versions call them global: the IPv6 documentation
# prefix of RFC 9637, and the 6to4 relay anycast range (one address, many unrelated users).
NEVER_PUBLIC = tuple(ipaddress.ip_network(n) for n in ("3fff::/20", "192.88.99.0/24"))

# Where TrustedProxyFix leaves the record for the request it computed it for.
ENVIRON_KEY = "tsd.client_address"

# The most proxies ``PROXY_FIX_X_FOR`` may count.
MAX_PROXIES = 10
# The shortest IPv6 prefix of one household, for start-up and proxy-check alike: a provider
# gives one home a /48 at most (RFC 6177; usually a /56 or a /64). Shorter, and one
# "household" spans many customers, each seeing and linking the others' printers.
SHORTEST_HOME_PREFIX_V6 = 48

# The most entries a record's forwarded_for holds (tsd_server/recorded_chain.py): every
# proxy's hop, the client's claims kept, and CUT.
MAX_RECORDED_HOPS = MAX_PROXIES + MAX_CLAIMED_HOPS + 1


@dataclass(frozen=True)
class ProxySettings:
    """The deployment settings that decide which address a request is from."""

    x_for: int = 0
    trusted_proxies: tuple[IPNetwork, ...] = ()
    trusts_unix_socket: bool = False
    ipv6_household_prefix: int = 64
    allow_private: bool = False
    private_prefix_v4: int = 24
    private_prefix_v6: int = 64

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ProxySettings:
        """Read and check the settings; a bad value stops start-up with ``ConfigurationError``."""
        try:
            trusted, unix_socket = parse_trusted(config["TRUSTED_PROXIES"])
            check_width(trusted)
        except (TypeError, ValueError) as error:  # TypeError: TSD_TRUSTED_PROXIES=true or 5
            raise ConfigurationError(f"TSD_TRUSTED_PROXIES: {error}") from None
        x_for = bounded_int_setting(config, "PROXY_FIX_X_FOR", 0, MAX_PROXIES)
        if unix_socket and x_for == 0:
            raise ConfigurationError(
                "TSD_TRUSTED_PROXIES lists unix: but TSD_PROXY_FIX_X_FOR is 0: the proxy's "
                "X-Forwarded-For would be ignored, no request through the socket would have "
                "a client address, and every client would share one rate-limit budget. Set "
                "TSD_PROXY_FIX_X_FOR=1 behind nginx.")
        return cls(
            x_for=x_for,
            trusted_proxies=trusted,
            trusts_unix_socket=unix_socket,
            ipv6_household_prefix=bounded_int_setting(
                config, "IPV6_HOUSEHOLD_PREFIX", SHORTEST_HOME_PREFIX_V6, 128,
                why="a home gets a /48 at most, so a shorter prefix would make many customers "
                "of one provider one household, each seeing and linking the others' printers"),
            allow_private=bool(config["IP_MATCH_ALLOW_PRIVATE"]),
            private_prefix_v4=bounded_int_setting(config, "IP_MATCH_PRIVATE_PREFIX_V4", 8, 32),
            private_prefix_v6=bounded_int_setting(config, "IP_MATCH_PRIVATE_PREFIX_V6", 32, 128),
        )

    def is_trusted_proxy(self, address: IPAddress | None) -> bool:
        return address is not None and any(address in net for net in self.trusted_proxies)

    def trusts_peer(self, peer: str | None) -> bool:
        """Whether the direct peer (an address, or ``UNIX_SOCKET``) is a trusted proxy."""
        if peer is not None and peer.lower() == UNIX_SOCKET:
            return self.trusts_unix_socket
        return self.is_trusted_proxy(parse_ip(peer))

    @property
    def any_trusted(self) -> bool:
        return bool(self.trusted_proxies) or self.trusts_unix_socket


@dataclass(frozen=True)
class ClientAddress:
    """What the server knows about where one request came from."""

    client_ip: str | None
    peer_ip: str | None
    # X-Forwarded-For as recorded for audit and diagnostics (recorded_chain.py): bounded.
    forwarded_for: tuple[str, ...] = field(default_factory=tuple)
    household: str | None = None
    ineligibility_reason: str | None = None
    # With contradictory_forwarded_headers: what the proxy's other header says ("X-Real-IP
    # names 8.8.4.4"), for the log (tsd_server/proxy_warnings.py) and the audit row's detail
    # (tsd_server/audit.py), and the address it names (``warning_household``). Not shown
    # to clients.
    contradiction: str | None = None
    claimed_ip: str | None = None

    @property
    def eligible(self) -> bool:
        return self.ineligibility_reason is None and self.household is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "client_ip": self.client_ip,
            "peer_ip": self.peer_ip,
            "forwarded_for": list(self.forwarded_for),
            "household": self.household,
            "ip_match": {
                "eligible": self.eligible,
                "reason": self.ineligibility_reason,
            },
        }


def split_hops(header: str | None) -> list[str]:
    """X-Forwarded-For as a list, left (client) to right (nearest proxy).

    Empty hops are kept (``"a, , b"`` has three), as Werkzeug's ProxyFix counts them: an
    empty hop where an address is expected is invalid, never skipped.
    """
    if not header or not header.strip():
        return []
    return [hop.strip() for hop in header.split(",")]


def resolve(peer: str | None, environ: Mapping[str, Any], settings: ProxySettings) -> ClientAddress:
    """Compute the record from the direct peer, the request headers and the settings."""
    peer_address = parse_ip(peer)
    hops = split_hops(environ.get("HTTP_X_FORWARDED_FOR"))
    carries_forwarded = any(environ.get(name) for name in FORWARDED_HEADERS)
    peer_is_proxy = settings.x_for > 0 and settings.trusts_peer(peer)

    said_otherwise = None
    if peer_is_proxy:
        client, reason = _walk_chain(peer_address, hops, settings)
        if reason is None:
            said_otherwise = contradiction(environ, hops[-settings.x_for:])
            if said_otherwise is not None:  # either may be the client's own: believe none
                client, reason = None, CONTRADICTORY_FORWARDED_HEADERS
    elif carries_forwarded:
        client, reason = peer_address, UNTRUSTED_FORWARDED_HEADER
    else:
        client, reason = peer_address, UNTRUSTED_PEER if settings.x_for > 0 else None
    if reason is None and settings.is_trusted_proxy(client):
        reason = PROXY_ADDRESS

    household = None
    if reason is None:
        household = household_key(client, settings)
        if household is None:
            reason = NON_PUBLIC_ADDRESS
    return ClientAddress(
        client_ip=str(client) if client is not None else None,
        peer_ip=str(peer_address) if peer_address is not None else (peer or None),
        forwarded_for=recorded_hops(hops, settings.x_for if peer_is_proxy else 0),
        household=household,
        ineligibility_reason=reason,
        contradiction=str(said_otherwise) if said_otherwise else None,
        claimed_ip=str(said_otherwise.address) if said_otherwise else None,
    )


def _walk_chain(
    peer: IPAddress | None, hops: list[str], settings: ProxySettings
) -> tuple[IPAddress | None, str | None]:
    """Read X-Forwarded-For from the right, one hop per configured proxy.

    Each hop was written by the proxy to its right, so it is only as trustworthy as that
    proxy: a hop that is not itself a trusted proxy ends the walk, and the address it names
    is the nearest one we can vouch for (and the request is ``untrusted_forwarded_header``).
    """
    if len(hops) < settings.x_for:
        return peer, MISSING_FORWARDED_HEADER
    client = peer
    for depth in range(1, settings.x_for + 1):
        hop = parse_ip(hops[-depth])
        if hop is None:
            return None, INVALID_FORWARDED_HEADER
        if depth < settings.x_for and not settings.is_trusted_proxy(hop):
            return hop, UNTRUSTED_FORWARDED_HEADER
        client = hop
    return client, None


def household_key(address: IPAddress | None, settings: ProxySettings) -> str | None:
    """The network that stands for one home, or None when the address cannot be one."""
    if address is None:
        return None
    if is_public(address):
        prefix = 32 if address.version == 4 else settings.ipv6_household_prefix
    elif settings.allow_private and any(address in net for net in LAN_NETWORKS):
        prefix = settings.private_prefix_v4 if address.version == 4 else settings.private_prefix_v6
    else:
        return None
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def warning_household(record: ClientAddress) -> str | None:
    """The household to compare for a warning, never to match on (the approval page's
    "another network", ``approvals.network_seen``).

    The household when the address is trusted. Otherwise that of the nearest address no
    trusted party calls a proxy (``_seen_address``): the direct peer, or the hop a trusted
    proxy wrote for whoever connected to it. A forwarded header that is not believed, or
    one hop fewer than ``PROXY_FIX_X_FOR`` says (a printer that went round the outer
    proxy), changes nothing then: a printer cannot escape the warning by them. A proxy the
    server was not told about stands for all its clients: it hides the warning, or, with
    several outgoing addresses, may raise a false one. None when no such address is known
    (a trusted proxy that passed none: it would be the proxy's). With
    ``contradictory_forwarded_headers``, ``either_household``.
    """
    if record.household is not None:
        return record.household
    settings = current_app.extensions["tsd.proxy_settings"]
    if record.ineligibility_reason == CONTRADICTORY_FORWARDED_HEADERS:
        return either_household(record, settings)
    seen = _seen_address(record, settings)
    return household_key(seen, settings) if seen is not None else None


# Two households joined: the request came from one of them (``either_household``).
EITHER = " or "
# What DeviceAuthorization.requested_household holds (String(64)).
HOUSEHOLD_TEXT_MAX = 64


def either_household(record: ClientAddress, settings: ProxySettings) -> str | None:
    """A proxy whose headers contradict each other names two addresses, the hop it vouches
    for and its other header's, and the client chose one of them: which, the server cannot
    tell (a proxy passing clients' X-Forwarded-For on, or passing on an X-Real-IP a client
    sent). So both households, ``"A or B"``, when they differ: never the same network as
    anyone's (``approvals.network_seen``), so the client cannot hide the warning with the
    one it chose. One when they agree. None when either is no household (a private
    address without LAN mode): that one may be the real one, and the household left the
    client's choice. Too long to be stored (IPv6 households longer than /64), each IPv6
    one is given at /64: only its family counts then."""
    candidates = (_seen_address(record, settings), parse_ip(record.claimed_ip))
    keys = [household_key(address, settings) for address in candidates]
    if None in keys:
        return None
    households = sorted(set(keys))
    text = EITHER.join(households)
    if len(text) > HOUSEHOLD_TEXT_MAX:
        text = EITHER.join(_at_most_64(key) for key in households)
    return text or None


def _at_most_64(household: str) -> str:
    network = ipaddress.ip_network(household)
    if network.version == 6 and network.prefixlen > 64:
        return str(network.supernet(new_prefix=64))
    return household


def _seen_address(record: ClientAddress, settings: ProxySettings) -> IPAddress | None:
    """The direct peer unless it is a trusted proxy; then, if trusted proxies are said to
    pass addresses (``PROXY_FIX_X_FOR``), the hops from the right while they are trusted
    proxies: each hop was written by the proxy to its right, so the first that is not one
    was seen connecting by a trusted proxy. None when the recorded hops run out (the
    record keeps MAX_CLAIMED_HOPS past the vouched ones) or one is not an address."""
    if not settings.trusts_peer(record.peer_ip):
        return parse_ip(record.peer_ip)
    if settings.x_for == 0:
        return None
    for text in reversed(record.forwarded_for):
        hop = parse_ip(text)
        if hop is None or not settings.is_trusted_proxy(hop):
            return hop
    return None


def is_public(address: IPAddress) -> bool:
    """Globally routable unicast: excludes private, CGNAT, documentation, multicast, reserved."""
    if not address.is_global or address.is_multicast or address.is_reserved:
        return False
    if any(address in net for net in NEVER_PUBLIC if net.version == address.version):
        return False
    return address.version == 4 or address in GLOBAL_UNICAST_V6


def for_request() -> ClientAddress:
    """The record for the current request, computed once and kept on ``g``."""
    record = g.get("_client_address")
    if record is None:
        # Computed by TrustedProxyFix before ProxyFix rewrote anything; resolved here when
        # the middleware did not run (a test request context).
        record = request.environ.get(ENVIRON_KEY)
        if record is None:
            from tsd_server.proxy_fix import direct_peer

            settings = current_app.extensions["tsd.proxy_settings"]
            peer = request.environ.get("tsd.peer_addr", direct_peer(request.environ))
            record = resolve(peer, request.environ, settings)
        if record.ineligibility_reason in PROXY_SETUP_REASONS:
            from tsd_server.proxy_warnings import warn_once_per_peer

            warn_once_per_peer(record, current_app.extensions["tsd.proxy_settings"])
        g._client_address = record
    return record
