"""HTTP calls to a tsd-server, one method per call in the server's /api/v1 contract.

Every failure becomes a ``ServerError`` (the server answered with an error) or an
``Unreachable`` (it did not answer); ``tsd_agent.messages`` turns both into one line for a
person. The access token only ever travels in the Authorization header, and nothing else
does: requests' ~/.netrc lookup is switched off (see ``tsd_agent.http_session``).

The server may be hostile or broken, so an answer is read with limits: at most
MAX_ANSWER_BYTES (never decompressed), within ANSWER_TIMEOUT in all (or the caller's
``within``, if shorter), and only a 2xx status counts as success. A call given up is hung
up: nothing keeps reading after it.
"""

from __future__ import annotations

import email.utils
import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests
import urllib3

from tsd_agent import __version__
from tsd_agent.http_session import HangUpAdapter, agent_session

CONNECT_TIMEOUT = 5
READ_TIMEOUT = 30  # for each read: a server sending a byte at a time never trips it
ANSWER_TIMEOUT = 30  # for the whole answer, however it trickles in
HANG_UP_WAIT = 2  # for a call cut off to end; it ends at once unless stuck in DNS or connect
MAX_ANSWER_BYTES = 64 * 1024  # the server's own MAX_CONTENT_LENGTH; real answers are tiny
MAX_RETRY_AFTER = 24 * 3600
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"  # RFC 8628 section 3.4
# The calls that can link the printer, and so carry its one-time token in their answer.
ANNOUNCE_PATH = "/api/v1/discovery/announce"
REDEEM_PATH = "/api/v1/pairing/redeem"
POLL_PATH = "/api/v1/device/token"


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


class Interrupted(KeyboardInterrupt):
    """Ctrl-C while a call was under way: the call is hung up, and ``sent`` tells whether
    any byte of it was written (the server may then have acted on it, as for a lost
    answer). ``path`` names the call, so the command can say what that may have done."""

    def __init__(self, path: str, sent: bool) -> None:
        super().__init__(path)
        self.path, self.sent = path, sent


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
    except (TypeError, ValueError, OverflowError, IndexError):
        # A 20-digit year or zone overflows inside email.utils: no usable date.
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
        return self._post(ANNOUNCE_PATH, {
            "device_id": device_id, "device_secret": device_secret, "name": name,
            "model": model, "agent_version": __version__}, within=within)

    def redeem(self, code: str, device_id: str, name: str, model: str | None, *,
               within: float | None = None) -> dict[str, Any]:
        return self._post(REDEEM_PATH,
                          {"code": code, "device_id": device_id, "name": name, "model": model},
                          within=within)

    def authorize(self, device_id: str, name: str, model: str | None, *,
                  within: float | None = None) -> dict[str, Any]:
        return self._post("/api/v1/device/authorize",
                          {"device_id": device_id, "name": name, "model": model},
                          within=within)

    def token(self, device_code: str, *, within: float | None = None) -> dict[str, Any]:
        return self._post(POLL_PATH,
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
        HangUpAdapter), so the helper's read ends at once and the helper with it. Each call has
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
        adapter = HangUpAdapter()
        outcome: list[dict[str, Any] | Exception] = []

        def call() -> None:
            try:
                with agent_session(adapter, token) as session:
                    outcome.append(self._exchange(session, method, path, **kwargs))
            except Unreachable as error:
                error.sent = adapter.wrote_request
                outcome.append(error)
            except Exception as error:  # noqa: BLE001 - raised again in the caller's thread
                outcome.append(error)

        helper = threading.Thread(target=call, name="tsd-agent-request", daemon=True)
        helper.start()
        try:
            helper.join(limit)
        except KeyboardInterrupt:
            adapter.hang_up()
            raise Interrupted(path, adapter.wrote_request) from None
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


def _short(error: Exception) -> str:
    text = str(error)
    return text if len(text) <= 200 else text[:197] + "..."
