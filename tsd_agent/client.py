"""HTTP calls to a tsd-server, one method per call in the server's /api/v1 contract.

Every failure becomes a ``ServerError`` (the server answered with an error) or an
``Unreachable`` (it did not answer); ``tsd_agent.messages`` turns both into one line for a
person. The access token only ever travels in the Authorization header.
"""

from __future__ import annotations

import email.utils
import http.cookiejar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests

from tsd_agent import __version__

CONNECT_TIMEOUT = 5
READ_TIMEOUT = 30
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
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0, int((when - (now or datetime.now(UTC))).total_seconds()))


class Client:
    """A tsd-server at ``base_url`` (scheme, host, port and any path prefix)."""

    def __init__(self, base_url: str, *, session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
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
        url = self.base_url + path
        try:
            response = self.session.request(method, url, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                                            allow_redirects=False, **kwargs)
        except requests.ConnectionError as error:
            refused = "refused" in str(error).lower()
            raise Unreachable(self.base_url, "refused" if refused else "other",
                              _short(error)) from None
        except requests.Timeout:
            raise Unreachable(self.base_url, "timeout") from None
        except requests.RequestException as error:
            raise Unreachable(self.base_url, "other", _short(error)) from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ServerError(response.status_code, "not_json",
                              f"HTTP {response.status_code} without a JSON body")
        if response.status_code >= 400:
            raise ServerError(
                status=response.status_code,
                code=str(data.get("error") or "http_error"),
                message=str(data.get("message") or ""),
                body=data,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        return data


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    def set_ok(self, cookie, request) -> bool:  # noqa: ANN001 - http.cookiejar signature
        return False


def _short(error: Exception) -> str:
    text = str(error)
    return text if len(text) <= 200 else text[:197] + "..."
