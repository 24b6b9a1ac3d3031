"""qr_code: the device shows a QR code of a one-time link; a logged-in phone approves.

The behaviour lives in ``tsd_server.discovery.pairing``; this is its entry in the registry.
"""

from __future__ import annotations

from flask import Blueprint

from tsd_server.discovery.strategy import DiscoveryStrategy


class QrCode(DiscoveryStrategy):
    name = "qr_code"
    title = "Scan the printer's QR code"
    summary = ("Scan the QR code on the printer's screen with a phone where you are "
               "logged in, then approve.")
    doing = "Linking with the printer's QR code"
    add_printer_endpoint = "qr_web.add_qr"

    def blueprints(self) -> list[Blueprint]:
        from tsd_server.discovery.pairing import api, web

        return [api.qr_api_bp, web.qr_web_bp]


STRATEGY = QrCode()
