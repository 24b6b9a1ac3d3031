"""The requests session every agent call goes through, and the adapter that hangs it up.

The session sends only the agent's own credentials (never ~/.netrc's), keeps no cookies,
follows no redirect and asks for uncompressed answers. The adapter lets another thread cut
off a call in flight, and tells whether any byte of the request went out.
"""

from __future__ import annotations

import http.cookiejar
import socket
import threading
from collections.abc import Iterator
from typing import Any

import requests
import requests.auth
import urllib3
from requests.adapters import HTTPAdapter

from tsd_agent import __version__

USER_AGENT = f"tsd-agent/{__version__}"


def agent_session(adapter: HangUpAdapter, token: str | None) -> requests.Session:
    """A session that sends only the agent's own credentials: ``token``, if any.

    Left to itself requests reads ~/.netrc (whose ``default`` entry matches every host)
    and sends its password as Basic auth, to any --server and over plain http too, in
    place of the Bearer token. It does so only for a session without ``auth`` (prepare_request),
    so the session always has one, even without a token; and since it reads ~/.netrc
    again when it prepares a redirect's request, _NoRedirects prepares none. The rest of
    trust_env stays: proxies (HTTP(S)_PROXY, NO_PROXY) and CA bundles from the environment.
    """
    session = _NoRedirects()
    session.auth = _Bearer(token)
    session.headers["User-Agent"] = USER_AGENT
    # Answers are tiny; compressed ones are never unpacked (no decompression bombs).
    session.headers["Accept-Encoding"] = "identity"
    # Cookies never authenticate a device; do not keep any.
    session.cookies.set_policy(_NoCookies())
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class _NoRedirects(requests.Session):
    """A session that never prepares a request to follow a redirect.

    Even with ``allow_redirects=False`` requests prepares one (for ``Response.next``):
    it reads the redirect's whole body first, however large (past MAX_ANSWER_BYTES), and
    looks the new host up in ~/.netrc. The agent follows no redirect, so it needs none.
    """

    def resolve_redirects(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        return iter(())


class _Bearer(requests.auth.AuthBase):
    """The token as a Bearer Authorization header, or no Authorization at all.

    Being the session's ``auth`` is what keeps requests from using ~/.netrc instead.
    """

    def __init__(self, token: str | None) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self.token:
            request.headers["Authorization"] = f"Bearer {self.token}"
        return request


class HangUpAdapter(HTTPAdapter):
    """requests' adapter, plus ``hang_up()``: cut off a call in flight from another thread.

    Closing a session closes only idle connections; a read under way goes on until the
    server stops or the read timeout trips, which a trickling server never lets happen. So
    the adapter keeps a duplicate of the socket of every connection it opens, taken as soon
    as the TCP connection stands (its pools' connection class reports it), and hang_up()
    shuts them down: a blocked read, a proxy's CONNECT or a TLS handshake then ends at
    once. A duplicate, because wrapping the socket in TLS empties the original object; the
    duplicates are closed with the adapter. A connection that opens after hang_up() is shut
    down as soon as it exists. Not covered: a host name lookup, and the TCP connect itself
    (at most CONNECT_TIMEOUT).

    It also records whether a byte of the request was written (``wrote_request``): not the
    type of error afterwards, which does not tell (urllib3 reports a server that closed
    after reading the request through a proxy as a ProxyError, a TLS record spoilt after it
    as an SSLError). Writes while the connection is being made (a proxy's CONNECT) are not
    the request.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._hung_up = False
        self.wrote_request = False
        super().__init__()  # calls init_poolmanager

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self._keep_sockets(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        new = proxy not in self.proxy_manager
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if new:
            self._keep_sockets(manager)
        return manager

    def _keep_sockets(self, manager: urllib3.PoolManager) -> None:
        opened, adapter = self._opened, self

        def keeping(pool: type) -> type:
            class Connection(pool.ConnectionCls):
                _connecting = False

                def _new_conn(self) -> socket.socket:
                    sock = super()._new_conn()
                    opened(sock)
                    return sock

                def connect(self) -> None:
                    self._connecting = True
                    try:
                        super().connect()
                    finally:
                        self._connecting = False

                def send(self, data: Any) -> None:
                    if self.sock is None:  # http.client connects on the first write
                        self.connect()
                    if not self._connecting:
                        adapter.wrote_request = True
                    super().send(data)

            return type(pool.__name__, (pool,), {"ConnectionCls": Connection})

        # A new dict: the one a PoolManager starts with is urllib3's own, shared.
        manager.pool_classes_by_scheme = {scheme: keeping(pool) for scheme, pool
                                          in manager.pool_classes_by_scheme.items()}

    def _opened(self, sock: socket.socket) -> None:
        duplicate = sock.dup()
        with self._lock:
            self._sockets.append(duplicate)
            if not self._hung_up:
                return
        _shut_down(duplicate)

    def hang_up(self) -> None:
        with self._lock:
            self._hung_up = True
            for sock in self._sockets:
                _shut_down(sock)

    def close(self) -> None:
        try:
            super().close()
        finally:
            with self._lock:
                for sock in self._sockets:
                    sock.close()
                self._sockets.clear()


def _shut_down(sock: socket.socket) -> None:
    """End any read on the connection in another thread: shutdown() wakes it, close() would
    not. ``sock`` is a plain socket (a duplicate), so no TLS state is touched."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed: nothing is reading


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    def set_ok(self, cookie, request) -> bool:  # noqa: ANN001 - http.cookiejar signature
        return False
