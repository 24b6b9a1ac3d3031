"""Absolute links handed to devices: verification_uri and verification_uri_complete.

A device shows these to a person, who opens them on a phone, so they must name this server
as the public sees it. ``TSD_BASE_URL`` says so explicitly. Without it the request's own
scheme and host are used only when they can be believed:

* a direct request (its peer is not a trusted proxy and it carries no forwarded headers):
  the Host is what the device itself used to reach us; or
* a request from a trusted proxy with ``TSD_PROXY_FIX_X_HOST`` set, which sent
  X-Forwarded-Host (ProxyFix has applied it).

Anything else (a proxy we do not trust, or a trusted one whose Host we were not told to
believe) would produce a link to whatever name the proxy used for us internally, so the
caller is refused with ``base_url_unknown`` and told which setting fixes it.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit

from flask import current_app, request

from tsd_server.api.errors import ApiError
from tsd_server.client_address import FORWARDED_HEADERS
from tsd_server.proxy_fix import direct_peer

log = logging.getLogger(__name__)

LINK_PATH = "/link"
QR_LINK_PATH = "/link/qr/"
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$")


class BaseUrlUnknown(ApiError):
    def __init__(self) -> None:
        super().__init__(
            503, "base_url_unknown",
            "This server cannot tell its public address, so it cannot give the device a link. "
            "Set TSD_BASE_URL (e.g. https://print.example.org), or, behind a trusted proxy, "
            "TSD_PROXY_FIX_X_HOST (and TSD_PROXY_FIX_X_PROTO).")


def base_url() -> str | None:
    """The public base URL without a trailing slash, or None when it cannot be trusted."""
    configured = str(current_app.config.get("BASE_URL") or "").strip()
    if configured:
        parts = urlsplit(configured)
        if parts.scheme in ("http", "https") and parts.netloc and not parts.query:
            return configured.rstrip("/")
        log.error("TSD_BASE_URL=%r is not an http(s) URL; links to devices are refused",
                  configured)
        return None
    settings = current_app.extensions["tsd.proxy_settings"]
    environ = request.environ
    if settings.trusts_peer(environ.get("tsd.peer_addr", direct_peer(environ))):
        # ProxyFix has replaced Host with X-Forwarded-Host only if both are so.
        if int(current_app.config["PROXY_FIX_X_HOST"]) < 1 \
                or not environ.get("HTTP_X_FORWARDED_HOST"):
            return None
    elif any(environ.get(name) for name in (*FORWARDED_HEADERS, "HTTP_X_FORWARDED_HOST",
                                             "HTTP_X_FORWARDED_PROTO")):
        return None
    if not _HOST.fullmatch(request.host):
        return None
    return request.url_root.rstrip("/")


def require_base_url() -> str:
    base = base_url()
    if base is None:
        raise BaseUrlUnknown()
    return base


def verification_uri(base: str) -> str:
    return base + LINK_PATH


def verification_uri_complete(base: str, qr_token: str) -> str:
    return base + QR_LINK_PATH + qr_token
