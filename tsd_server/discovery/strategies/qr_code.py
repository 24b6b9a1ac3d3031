"""qr_code: the device shows a QR code of a one-time link; a logged-in phone approves."""

from __future__ import annotations

from tsd_server.discovery.strategy import DiscoveryStrategy


class QrCode(DiscoveryStrategy):
    name = "qr_code"
    title = "Scan the printer's QR code"
    summary = ("Scan the QR code on the printer's screen with a phone where you are "
               "logged in, then approve.")


STRATEGY = QrCode()
