"""ip_match: auto-discovery of unlinked devices announcing from the user's household.

The behaviour lives in ``tsd_server.discovery.ip_match``; this is its entry in the registry.
"""

from __future__ import annotations

from flask import Blueprint

from tsd_server.discovery.strategy import DiscoveryStrategy


class IpMatch(DiscoveryStrategy):
    name = "ip_match"
    title = "Printers near you"
    summary = ("Printers on the same internet connection as this browser show up here; "
               "you confirm with a code the printer displays.")
    doing = "Linking printers near you"
    add_printer_endpoint = "ip_match_web.nearby"

    def blueprints(self) -> list[Blueprint]:
        from tsd_server.discovery.ip_match import api, web

        return [api.bp, web.bp]


STRATEGY = IpMatch()
