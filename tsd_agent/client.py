"""HTTP calls to a tsd-server, one method per call in the server's /api/v1 contract.

Every failure becomes a ``ServerError`` (the server answered with an error) or an
``Unreachable`` (it did not answer); ``tsd_agent.messages`` turns both into one line for a
person. The access token only ever travels in the Authorization header, and nothing else
does: requests' ~/.netrc lookup is switched off (see ``_session``).

The server may be hostile or broken, so an answer is read with limits: at most
MAX_ANSWER_BYTES (never decompressed), within ANSWER_TIMEOUT in all (or the caller's
``within``, if shorter), and only a 2xx status counts as success. A call given up is hung
up: nothing keeps reading after it.
"""

from __future__ import annotations

import email.utils
import http.cookiejar
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests
import requests.auth
import urllib3
from requests.adapters import HTTPAdapter

from tsd_agent import __version__

CONNECT_TIMEOUT = 5
READ_TIMEOUT = 30  # for each read: a server sending a byte at a time never trips it
ANSWER_TIMEOUT = 30  # for the whole answer, however it trickles in
HANG_UP_WAIT = 2  # for a call cut off to end; it ends at once unless stuck in DNS or connect
MAX_ANSWER_BYTES = 64 * 1024  # the server's own MAX_CONTENT_LENGTH; real answers are tiny
MAX_RETRY_AFTER = 24 * 3600
USER_AGENT = f"tsd-agent/{__version__}"
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"  # RFC 8628 section 3.4


@dataclass
class ServerError(Exception):
    """An error answer: its HTTP status, the contract's error code and the JSON body."""

    status: int
    code: str
    message: str
    body: dict[str, Any] = field(default_factory=dict)
    retry_after: int | None = None

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


@dataclass
class Unreachable(Exception):
    """No usable HTTP answer: connection refused, timeout, DNS, TLS."""

    server: str
    kind: str  # refused | timeout | other
    detail: str = ""
    # False when no byte of the request was written (the name lookup, the connect, a proxy's
    # CONNECT or the TLS handshake failed): the server cannot have acted on it. True when
    # it may have.
    sent: bool = True

    def __str__(self) -> str:
        return f"{self.server}: {self.kind} {self.detail}".strip()


class OutOfTime(Unreachable):
    """The caller's time (``within``) ran out before the answer was complete.

    An Unreachable "timeout" too, so a caller that has no deadline of its own to report
    says that the server did not answer in time. Its ``sent`` tells, as for any
    Unreachable, whether time ran out before a byte of the request was written (a stalled
    name lookup, connect, proxy CONNECT or TLS handshake) or after.
    """


def parse_retry_after(value: str | None, now: datetime | None = None) -> int | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None.

    At most MAX_RETRY_AFTER: a longer wait means nothing to a person, and a number of
    thousands of digits must not reach int() or time.sleep().
    """
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return MAX_RETRY_AFTER if len(value) > 9 else min(int(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = int((when - (now or datetime.now(UTC))).total_seconds())
    return min(max(0, seconds), MAX_RETRY_AFTER)


class Client:
    """A tsd-server at ``base_url`` (scheme, host, port and any path prefix).

    Methods that a command with a deadline calls take ``within``: the seconds it has left.
    """

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def announce(self, device_id: str, device_secret: str, name: str,
                 model: str | None, *, within: float | None = None) -> dict[str, Any]:
        return self._post("/api/v1/discovery/announce", {
            "device_id": device_id, "device_secret": device_secret, "name": name,
            "model": model, "agent_version": __version__}, within=within)

    def redeem(self, code: str, device_id: str, name: str, model: str | None, *,
               within: float | None = None) -> dict[str, Any]:
        return self._post("/api/v1/pairing/redeem",
                          {"code": code, "device_id": device_id, "name": name, "model": model},
                          within=within)

    def authorize(self, device_id: str, name: str, model: str | None, *,
                  within: float | None = None) -> dict[str, Any]:
        return self._post("/api/v1/device/authorize",
                          {"device_id": device_id, "name": name, "model": model},
                          within=within)

    def token(self, device_code: str, *, within: float | None = None) -> dict[str, Any]:
        return self._post("/api/v1/device/token",
                          {"grant_type": DEVICE_CODE_GRANT, "device_code": device_code},
                          within=within)

    def me(self, access_token: str) -> dict[str, Any]:
        return self._request("GET", "/api/v1/device/me", token=access_token)

    def _post(self, path: str, body: dict[str, Any], *,
              within: float | None = None) -> dict[str, Any]:
        body = {key: value for key, value in body.items() if value is not None}
        return self._request("POST", path, within=within, json=body)

    def _request(self, method: str, path: str, *, within: float | None = None,
                 token: str | None = None, **kwargs: Any) -> dict[str, Any]:
        """The call, given up after ANSWER_TIMEOUT in all, or OutOfTime after ``within``
        seconds if that is sooner.

        It runs in a helper thread because the read timeout only bounds each read: a server
        that trickles its status line, headers or body a byte at a time would otherwise keep
        the agent waiting forever. A call given up is hung up (its socket shut down, see
        _Adapter), so the helper's read ends at once and the helper with it. Each call has
        its own session, closed when the call ends: no connection outlives a call.

        The helper is a daemon thread only for what no socket shutdown can stop: a host
        name lookup, or a connect under way (at most CONNECT_TIMEOUT), must not keep the
        process from exiting.
        """
        if within is not None and within < ANSWER_TIMEOUT:
            limit, given_up = within, OutOfTime(self.base_url, "timeout")
        else:
            limit, given_up = ANSWER_TIMEOUT, Unreachable(self.base_url, "timeout")
        if limit <= 0:
            given_up.sent = False
            raise given_up
        adapter = _Adapter()
        outcome: list[dict[str, Any] | Exception] = []

        def call() -> None:
            try:
                with _session(adapter, token) as session:
                    outcome.append(self._exchange(session, method, path, **kwargs))
            except Unreachable as error:
                error.sent = adapter.wrote_request
                outcome.append(error)
            except Exception as error:  # noqa: BLE001 - raised again in the caller's thread
                outcome.append(error)

        helper = threading.Thread(target=call, name="tsd-agent-request", daemon=True)
        helper.start()
        helper.join(limit)
        if helper.is_alive():
            adapter.hang_up()
            helper.join(HANG_UP_WAIT)
            # An answer complete just as time ran out still counts (a token comes only once);
            # a failure by now may be the hang-up's own doing.
            if not outcome or isinstance(outcome[0], Exception):
                # Read after hang_up(): from then on no byte can go out (every connection,
                # even one still being made, is shut down), so False means never sent.
                given_up.sent = adapter.wrote_request
                raise given_up
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    def _exchange(self, session: requests.Session, method: str, path: str,
                  **kwargs: Any) -> dict[str, Any]:
        url = self.base_url + path
        try:
            response = session.request(method, url, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                                       allow_redirects=False, stream=True, **kwargs)
        except requests.ConnectionError as error:
            refused = "refused" in str(error).lower()
            raise Unreachable(self.base_url, "refused" if refused else "other",
                              _short(error)) from None
        except requests.Timeout:
            raise Unreachable(self.base_url, "timeout") from None
        except requests.RequestException as error:
            raise Unreachable(self.base_url, "other", _short(error)) from None
        with response:
            status = response.status_code
            if not (200 <= status < 300 or status >= 400):
                # A redirect is no answer, even with a token in it: it is not followed.
                raise ServerError(status, "unexpected_status", f"HTTP {status}")
            raw = self._body(response)
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            data = None
        if not isinstance(data, dict):
            raise ServerError(status, "not_json", f"HTTP {status} without a JSON body")
        if status >= 400:
            raise ServerError(
                status=status,
                code=str(data.get("error") or "http_error"),
                message=str(data.get("message") or ""),
                body=data,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        return data

    def _body(self, response: requests.Response) -> bytes:
        """The body as sent, refused unread beyond MAX_ANSWER_BYTES."""
        too_large = ServerError(response.status_code, "answer_too_large",
                                f"HTTP {response.status_code} answer larger than "
                                f"{MAX_ANSWER_BYTES} bytes")
        length = response.headers.get("Content-Length", "")
        if length.isascii() and length.isdigit() and (len(length) > 9
                                                      or int(length) > MAX_ANSWER_BYTES):
            raise too_large
        parts, size = [], 0
        try:
            for part in response.raw.stream(8192, decode_content=False):
                size += len(part)
                if size > MAX_ANSWER_BYTES:
                    raise too_large
                parts.append(part)
        except urllib3.exceptions.ReadTimeoutError:
            raise Unreachable(self.base_url, "timeout") from None
        except urllib3.exceptions.HTTPError as error:
            raise Unreachable(self.base_url, "other", _short(error)) from None
        return b"".join(parts)


def _session(adapter: _Adapter, token: str | None) -> requests.Session:
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


class _Adapter(HTTPAdapter):
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


def _short(error: Exception) -> str:
    text = str(error)
    return text if len(text) <= 200 else text[:197] + "..."
