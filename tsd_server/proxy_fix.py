"""Werkzeug's ProxyFix, applied only to requests whose direct peer is a trusted proxy.

ProxyFix on its own believes the last ``x_for`` values of X-Forwarded-For from *any* peer;
a client that reaches the server directly could then choose its own address. Here the
rewrite happens only when the TCP peer is inside ``TSD_TRUSTED_PROXIES``; every other
request keeps its real peer address, scheme and host. The peer address is saved in
``environ["tsd.peer_addr"]`` first so audit and diagnostics always see who connected, and
the client-address record is computed from the untouched environ.

A connection through gunicorn's unix socket has no peer address (an empty ``REMOTE_ADDR``);
its peer is ``unix:``, trusted only when ``TSD_TRUSTED_PROXIES`` lists ``unix:``. Who can
connect then is up to the socket file's owner and mode, so they must admit the proxy alone.

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

import socket
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from werkzeug.middleware.proxy_fix import ProxyFix

from tsd_server.client_address import ENVIRON_KEY, ProxySettings, resolve
from tsd_server.config import bounded_int_setting
from tsd_server.trusted_proxies import UNIX_SOCKET

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
        peer = direct_peer(environ)
        environ["tsd.peer_addr"] = peer
        environ[ENVIRON_KEY] = resolve(peer, environ, self.settings)
        if self.settings.trusts_peer(peer):
            return self.proxied(environ, start_response)
        return self.direct(environ, start_response)

    def _client_from_record(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        record = environ[ENVIRON_KEY]
        environ["REMOTE_ADDR"] = record.client_ip or environ["tsd.peer_addr"]
        return self.direct(environ, start_response)


def direct_peer(environ: Mapping[str, Any]) -> str | None:
    """The peer's address, or ``UNIX_SOCKET`` for a connection through a unix socket: only
    the server's socket object tells those apart (gunicorn gives them ``REMOTE_ADDR`` "").
    A ``REMOTE_ADDR`` that says ``unix:`` itself (a server that copies it from a front end)
    names no peer: it is not the socket that ``unix:`` in the setting trusts."""
    connection = environ.get("gunicorn.socket")
    if getattr(connection, "family", None) == socket.AF_UNIX:
        return UNIX_SOCKET
    address = environ.get("REMOTE_ADDR")
    if isinstance(address, str) and address.strip().lower() == UNIX_SOCKET:
        return None
    return address
