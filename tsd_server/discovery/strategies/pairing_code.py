"""pairing_code: one-time codes typed by a person, in both directions (RFC 8628 style)."""

from __future__ import annotations

from tsd_server.discovery.strategy import DiscoveryStrategy


class PairingCode(DiscoveryStrategy):
    name = "pairing_code"
    title = "Pairing code"
    summary = ("Type a code shown here into the printer, or type the code the printer "
               "shows into this site.")


STRATEGY = PairingCode()
