"""ip_match: auto-discovery of unlinked devices announcing from the user's household."""

from __future__ import annotations

from tsd_server.discovery.strategy import DiscoveryStrategy


class IpMatch(DiscoveryStrategy):
    name = "ip_match"
    title = "Printers near you"
    summary = ("Printers on the same internet connection as this browser show up here; "
               "you confirm with a code the printer displays.")


STRATEGY = IpMatch()
