"""Werkzeug's ProxyFix, applied only to requests whose direct peer is a trusted proxy.

ProxyFix on its own believes the last ``x_for`` values of X-Forwarded-For from *any* peer;
a client that reaches the server directly could then choose its own address. Here the
rewrite happens only when the TCP peer is inside ``TSD_TRUSTED_PROXIES``; every other
request keeps its real peer address, scheme and host. The peer address is saved in
``environ["tsd.peer_addr"]`` first so audit and diagnostics always see who connected.

Security consequence of the settings: ``TSD_PROXY_FIX_X_FOR`` must equal the number of
proxies that append to X-Forwarded-For. Too low and every client looks like the innermost
proxy; too high and clients can choose their address by sending the header themselves.
``tsd_server.client_address`` checks the result and makes ip_match fail closed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.middleware.proxy_fix import ProxyFix

from tsd_server.client_address import ProxySettings, parse_ip

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


class TrustedProxyFix:
    def __init__(self, app: WSGIApp, config: dict[str, Any], settings: ProxySettings) -> None:
        self.direct = app
        self.settings = settings
        self.proxied = ProxyFix(
            app,
            x_for=int(config["PROXY_FIX_X_FOR"]),
            x_proto=int(config["PROXY_FIX_X_PROTO"]),
            x_host=int(config["PROXY_FIX_X_HOST"]),
            x_port=int(config["PROXY_FIX_X_PORT"]),
            x_prefix=int(config["PROXY_FIX_X_PREFIX"]),
        )

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        peer = environ.get("REMOTE_ADDR")
        environ["tsd.peer_addr"] = peer
        if self.settings.is_trusted_proxy(parse_ip(peer)):
            return self.proxied(environ, start_response)
        return self.direct(environ, start_response)
