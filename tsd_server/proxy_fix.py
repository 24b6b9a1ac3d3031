"""Werkzeug's ProxyFix, applied only to requests whose direct peer is a trusted proxy.

ProxyFix on its own believes the last ``x_for`` values of X-Forwarded-For from *any* peer;
a client that reaches the server directly could then choose its own address. Here the
rewrite happens only when the TCP peer is inside ``TSD_TRUSTED_PROXIES``; every other
request keeps its real peer address, scheme and host. The peer address is saved in
``environ["tsd.peer_addr"]`` first so audit and diagnostics always see who connected, and
the client-address record is computed from the untouched environ.

ProxyFix counts hops but does not check them; ``tsd_server.client_address`` also requires
every hop between the client and the direct peer to be a trusted proxy. So that logs and
``request.remote_addr`` never name an address the record refused, ``REMOTE_ADDR`` is set to
the record's client address after ProxyFix ran (or back to the peer when there is none).

Security consequence of the settings: ``TSD_PROXY_FIX_X_FOR`` must equal the number of
proxies that append to X-Forwarded-For. Too low and every client looks like the innermost
proxy; too high and clients can choose their address by sending the header themselves.
``tsd_server.client_address`` checks the result and makes ip_match fail closed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.middleware.proxy_fix import ProxyFix

from tsd_server.client_address import (
    ENVIRON_KEY,
    ProxySettings,
    parse_ip,
    resolve,
)
from tsd_server.config import bounded_int_setting

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


class TrustedProxyFix:
    def __init__(self, app: WSGIApp, config: dict[str, Any], settings: ProxySettings) -> None:
        self.direct = app
        self.settings = settings
        # Checked like X_FOR: a negative count makes ProxyFix trust the header from the left,
        # the part the client wrote (or fail on every request), and 0.5 would be truncated.
        hops = {name: bounded_int_setting(config, f"PROXY_FIX_{name.upper()}", 0, 10)
                for name in ("x_for", "x_proto", "x_host", "x_port", "x_prefix")}
        self.proxied = ProxyFix(self._client_from_record, **hops)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        peer = environ.get("REMOTE_ADDR")
        environ["tsd.peer_addr"] = peer
        environ[ENVIRON_KEY] = resolve(peer, environ, self.settings)
        if self.settings.is_trusted_proxy(parse_ip(peer)):
            return self.proxied(environ, start_response)
        return self.direct(environ, start_response)

    def _client_from_record(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        record = environ[ENVIRON_KEY]
        environ["REMOTE_ADDR"] = record.client_ip or environ["tsd.peer_addr"]
        return self.direct(environ, start_response)
