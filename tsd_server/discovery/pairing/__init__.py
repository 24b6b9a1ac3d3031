"""One-time codes both ways (RFC 8628 style) and QR links: pairing_code and qr_code.

* ``codes``: the alphabet, generation, normalisation and hashing of codes and tokens.
* ``web_codes``: a code the web shows and the device redeems.
* ``device_flow``: the device authorization grant (RFC 8628), the device's side: authorize,
  poll, collect the token.
* ``approvals``: its person's side: reach a request by code or QR link (binding it to the
  account) and decide it.
* ``links`` and ``qr``: absolute verification links and their QR images (segno).
* ``limits`` and ``failure_breaker``: rate limits and the global switch-off on guessing.
* ``api``, ``web``, ``link_pages``: the routes, split by the strategy that owns them.

Routes that belong to one strategy are in that strategy's ``blueprints()`` (the registry
guards them); the few shared by both are listed in ``shared_blueprints()`` and check the
kill switch themselves.
"""

from __future__ import annotations

from flask import Blueprint


def shared_blueprints() -> list[Blueprint]:
    """Routes of the device flow that serve pairing_code and qr_code alike."""
    from tsd_server.discovery.pairing import api, link_pages

    return [api.device_flow_bp, link_pages.bp]
