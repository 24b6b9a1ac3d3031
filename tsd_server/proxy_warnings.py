"""One log line per peer whose requests ip_match refuses because of the proxy setup.

A proxy missing from ``TSD_TRUSTED_PROXIES``, one that passes clients' own X-Forwarded-For
on, or a client going round the proxy makes ``tsd_server.client_address`` refuse the
requests (``PROXY_SETUP_REASONS``); nothing else tells the operator. The line says which
address and what to change. It is written once per peer (IPv6: per /64) and reason, in
memory bounded to ``_WARNED_PEERS_MAX`` peers, and never keyed by a hop a client can
write: a client sending a new forged hop with each request gets no line per request.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import OrderedDict

from tsd_server.client_address import (
    CONTRADICTORY_FORWARDED_HEADERS,
    UNTRUSTED_FORWARDED_HEADER,
    UNTRUSTED_PEER,
    ClientAddress,
    ProxySettings,
    parse_ip,
)

log = logging.getLogger(__name__)

_warned_peers: OrderedDict[tuple[str, str], None] = OrderedDict()
_WARNED_PEERS_MAX = 4096


def warn_once_per_peer(record: ClientAddress, settings: ProxySettings) -> None:
    """Log why ip_match refuses ``record``'s peer, the first time for this peer and reason."""
    reason = record.ineligibility_reason
    peer = record.peer_ip or "unknown"
    key = (reason, _network_of(peer))
    if reason not in PEER_WARNINGS or key in _warned_peers:
        return
    _warned_peers[key] = None
    if len(_warned_peers) > _WARNED_PEERS_MAX:
        _warned_peers.popitem(last=False)
    if reason == UNTRUSTED_FORWARDED_HEADER and settings.trusts_peer(peer):
        # The walk up X-Forwarded-For stopped at a hop that is not a trusted proxy: that hop,
        # not the (trusted) peer, is what the settings do not cover.
        reason = UNTRUSTED_HOP
    log.warning(PEER_WARNINGS[reason], {
        "peer": peer, "client": record.client_ip, "x_for": settings.x_for,
        "forwarded_for": ", ".join(record.forwarded_for),
        "contradiction": record.contradiction})


def _network_of(peer: str) -> str:
    """IPv6 peers by their /64: one host usually holds a whole /64, and going round the
    proxy from a new address each time must not write a line each time."""
    address = parse_ip(peer)
    if address is None or address.version == 4:
        return peer
    return str(ipaddress.ip_network(f"{address}/64", strict=False))


UNTRUSTED_HOP = "untrusted hop"
PEER_WARNINGS = {
    UNTRUSTED_FORWARDED_HEADER:
        "Forwarded headers from untrusted peer %(peer)s were ignored; ip_match refuses its "
        "requests. If %(peer)s is your reverse proxy, add it to TSD_TRUSTED_PROXIES and set "
        "TSD_PROXY_FIX_X_FOR to the number of proxies in front of the server.",
    UNTRUSTED_HOP:
        "X-Forwarded-For passed on by trusted proxy %(peer)s names %(client)s where a proxy "
        "was expected (TSD_PROXY_FIX_X_FOR=%(x_for)d); ip_match refuses its requests. If "
        "%(client)s is a proxy of yours, add it to TSD_TRUSTED_PROXIES; otherwise a client "
        "wrote that hop, or TSD_PROXY_FIX_X_FOR counts more proxies than there are.",
    UNTRUSTED_PEER:
        "A request came straight from %(peer)s, which is not in TSD_TRUSTED_PROXIES, while "
        "TSD_PROXY_FIX_X_FOR=%(x_for)d says a proxy is in front; ip_match refuses its "
        "requests. If %(peer)s is your proxy (a new address?), add it to "
        "TSD_TRUSTED_PROXIES; otherwise the client went round the proxy.",
    CONTRADICTORY_FORWARDED_HEADERS:
        "Trusted proxy %(peer)s passed X-Forwarded-For %(forwarded_for)s, but its "
        "%(contradiction)s: either it passes clients' own X-Forwarded-For on instead of "
        "writing the address it saw (clients choose their address), or it passes on an "
        "X-Real-IP or Forwarded a client sent. ip_match refuses its requests. Make it set "
        "X-Forwarded-For (nginx: proxy_set_header X-Forwarded-For "
        "$proxy_add_x_forwarded_for; HAProxy: option forwardfor) and drop X-Real-IP and "
        "Forwarded from clients (deploy/tsd-server-proxy.conf).",
}
