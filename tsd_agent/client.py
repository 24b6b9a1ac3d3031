"""HTTP calls to a tsd-server, one method per call in the server's /api/v1 contract.

Every failure becomes a ``ServerError`` (the server answered with an error) or an
``Unreachable`` (it did not answer); ``tsd_agent.messages`` turns both into one line for a
person. The access token only ever travels in the Authorization header.

The server may be hostile or broken, so an answer is read with limits: at most
MAX_ANSWER_BYTES (never decompressed), within ANSWER_TIMEOUT in all, and only a 2xx status
counts as success.
"""

from __future__ import annotations

import email.utils
import http.cookiejar
import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests
import urllib3

from tsd_agent import __version__

CONNECT_TIMEOUT = 5
READ_TIMEOUT = 30  # for each read: a server sending a byte at a time never trips it
ANSWER_TIMEOUT = 30  # for the whole answer, however it trickles in
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

    def __str__(self) -> str:
        return f"{self.server}: {self.kind} {self.detail}".strip()


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
    """A tsd-server at ``base_url`` (scheme, host, port and any path prefix)."""

    def __init__(self, base_url: str, *, session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        # Answers are tiny; compressed ones are never unpacked (no decompression bombs).
        self.session.headers["Accept-Encoding"] = "identity"
        # Cookies never authenticate a device; do not keep any.
        self.session.cookies.set_policy(_NoCookies())

    def announce(self, device_id: str, device_secret: str, name: str,
                 model: str | None) -> dict[str, Any]:
        return self._post("/api/v1/discovery/announce", {
            "device_id": device_id, "device_secret": device_secret, "name": name,
            "model": model, "agent_version": __version__})

    def redeem(self, code: str, device_id: str, name: str, model: str | None) -> dict[str, Any]:
        return self._post("/api/v1/pairing/redeem",
                          {"code": code, "device_id": device_id, "name": name, "model": model})

    def authorize(self, device_id: str, name: str, model: str | None) -> dict[str, Any]:
        return self._post("/api/v1/device/authorize",
                          {"device_id": device_id, "name": name, "model": model})

    def token(self, device_code: str) -> dict[str, Any]:
        return self._post("/api/v1/device/token",
                          {"grant_type": DEVICE_CODE_GRANT, "device_code": device_code})

    def me(self, access_token: str) -> dict[str, Any]:
        return self._request("GET", "/api/v1/device/me",
                             headers={"Authorization": f"Bearer {access_token}"})

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {key: value for key, value in body.items() if value is not None}
        return self._request("POST", path, json=body)

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """The call, given up after ANSWER_TIMEOUT in all.

        It runs in a helper thread because the read timeout only bounds each read: a server
        that trickles its status line, headers or body a byte at a time would otherwise keep
        the agent waiting forever. An abandoned helper ends when the server stops or the
        process exits; it holds at most MAX_ANSWER_BYTES.
        """
        outcome: list[dict[str, Any] | Exception] = []

        def call() -> None:
            try:
                outcome.append(self._exchange(method, path, **kwargs))
            except Exception as error:  # noqa: BLE001 - raised again in the caller's thread
                outcome.append(error)

        helper = threading.Thread(target=call, name="tsd-agent-request", daemon=True)
        helper.start()
        helper.join(ANSWER_TIMEOUT)
        if not outcome:
            raise Unreachable(self.base_url, "timeout")
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    def _exchange(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        url = self.base_url + path
        try:
            response = self.session.request(method, url, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
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


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    def set_ok(self, cookie, request) -> bool:  # noqa: ANN001 - http.cookiejar signature
        return False


def _short(error: Exception) -> str:
    text = str(error)
    return text if len(text) <= 200 else text[:197] + "..."
