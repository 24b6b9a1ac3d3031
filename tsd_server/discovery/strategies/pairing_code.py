"""pairing_code: one-time codes typed by a person, in both directions (RFC 8628 style).

The behaviour lives in ``tsd_server.discovery.pairing``; this is its entry in the registry.
"""

from __future__ import annotations

from flask import Blueprint

from tsd_server.discovery.strategy import AddPrinterWay, DiscoveryStrategy


class PairingCode(DiscoveryStrategy):
    name = "pairing_code"
    title = "Pairing code"
    summary = ("Type a code shown here into the printer, or type the code the printer "
               "shows into this site.")
    doing = "Linking with a pairing code"
    add_printer_endpoint = "pairing_web.add_code"

    def add_printer_ways(self) -> list[AddPrinterWay]:
        """Both directions are offered apart: a person knows which one the printer wants."""
        return [
            AddPrinterWay("pairing_code_show", "Show a code for the printer",
                          "Get a one-time code here and type it into the printer.",
                          self.add_printer_endpoint,
                          doing="Getting a code to type into the printer",
                          pages=("pairing_web.create_code",)),
            AddPrinterWay("pairing_code_enter", "Enter the printer's code",
                          "Type the code the printer shows, check its details and approve.",
                          "pairing_web.link", doing="Typing in the code a printer shows"),
        ]

    def blueprints(self) -> list[Blueprint]:
        from tsd_server.discovery.pairing import api, web

        return [api.pairing_api_bp, web.pairing_web_bp]


STRATEGY = PairingCode()
