"""The hot paths, the ceiling, and the requests that exercise them.

Every request carries ``X-Forwarded-For`` (the bench server trusts 127.0.0.1 as its proxy,
see bench/world.py), so the ceiling goes through the same middleware as the hot paths.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

import requests

from bench.loadgen import Request, json_body
from bench.world import (
    USER_ADDRESS,
    USER_AGENT,
    USER_EMAIL,
    USER_PASSWORD,
    World,
    device_address,
)

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
INVALID_CODES = 20_000
# Distinct client addresses of the token polls and of the code guesses. Kept small: the
# in-memory rate-limit storage (memory://, the SQLite runs) slows down with every distinct
# key it has ever seen (docs/performance.md, "Rate-limit storage").
CLIENTS = 100
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


@dataclass(frozen=True)
class HotPath:
    name: str
    title: str
    target: float | None  # least acceptable share of the ceiling (on PostgreSQL)
    # status[:error code] keys of the answers the path is meant to give
    expected: tuple[str, ...]


CEILING = HotPath("ping", "GET /api/v1/ping (ceiling)", None, ("200",))
HOT_PATHS = (
    HotPath("device_me", "GET /api/v1/device/me (Bearer)", 0.70, ("200",)),
    HotPath("announce", "POST /api/v1/discovery/announce (repeat)", 0.45, ("200",)),
    HotPath("token_poll", "POST /api/v1/device/token (pending)", 0.60,
            ("400:authorization_pending", "400:slow_down")),
    HotPath("nearby", "GET /api/v1/discovery/nearby (logged in)", 0.45, ("200",)),
    HotPath("invalid_code", "POST /api/v1/pairing/redeem (invalid code)", 0.50,
            ("400:invalid_code",)),
)
ALL_PATHS = (CEILING, *HOT_PATHS)
BY_NAME = {path.name: path for path in ALL_PATHS}


def _headers(address: str, *extra: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    return (("X-Forwarded-For", address), ("User-Agent", USER_AGENT), *extra)


JSON = ("Content-Type", "application/json")


def log_in(base_url: str) -> str:
    """Log the bench user in over HTTP; returns the ``Cookie`` header value."""
    session = requests.Session()
    session.trust_env = False
    session.headers.update({"User-Agent": USER_AGENT, "X-Forwarded-For": USER_ADDRESS})
    page = session.get(base_url + "/login", timeout=10)
    token = CSRF_META.search(page.text)
    if token is None:
        raise RuntimeError("no CSRF token on /login")
    answer = session.post(base_url + "/login", timeout=10, allow_redirects=False, data={
        "email": USER_EMAIL, "password": USER_PASSWORD, "csrf_token": token.group(1)})
    if answer.status_code != 302 or "session" not in session.cookies:
        raise RuntimeError(f"bench login failed: {answer.status_code}")
    # A browser keeps the cookie nearby updates (it notes what was audited, so a refresh
    # that shows the same list writes nothing); replaying the login cookie would not.
    session.get(base_url + "/api/v1/discovery/nearby", timeout=10)
    return f"session={session.cookies['session']}"


def requests_for(name: str, world: World, cookie: str | None = None) -> list[Request]:
    """The requests file content of one path, in the order they are replayed."""
    working = world.working
    if name == "ping":
        return [Request("GET", "/api/v1/ping", "", _headers("11.200.0.1"))]
    if name == "device_me":
        return [Request("GET", "/api/v1/device/me", "", _headers(
            device_address(10_000 + i), ("Authorization", f"Bearer {token}")))
            for i, token in enumerate(working.tokens)]
    if name == "announce":
        # The seeded name, model and version: a quiet repeat of a live announcement.
        return [Request("POST", "/api/v1/discovery/announce", json_body({
            "device_id": uid, "device_secret": secret, "name": f"Announcer {i}",
            "model": "Bench MK1", "agent_version": "1.0"}), _headers(ip, JSON))
            for i, (uid, secret, ip) in enumerate(working.announcers)]
    if name == "token_poll":
        return [Request("POST", "/api/v1/device/token", json_body({
            "grant_type": GRANT_TYPE, "device_code": code}),
            _headers(device_address(20_000 + i % CLIENTS), JSON))
            for i, code in enumerate(working.device_codes)]
    if name == "nearby":
        if cookie is None:
            raise ValueError("nearby needs the logged-in user's cookie")
        return [Request("GET", "/api/v1/discovery/nearby", "",
                        _headers(USER_ADDRESS, ("Cookie", cookie)))]
    if name == "invalid_code":
        return [Request("POST", "/api/v1/pairing/redeem", json_body({
            "code": "".join(secrets.choice(CODE_ALPHABET) for _ in range(8)),
            "device_id": f"guess-{i:06d}", "name": "Guess"}),
            _headers(device_address(50_000 + i % CLIENTS), JSON))
            for i in range(INVALID_CODES)]
    raise KeyError(name)


def explain_request(name: str, world: World) -> Request:
    """A typical request of the path, for EXPLAIN: the pending poll uses a device code
    the load never polls (every other one was polled seconds ago and would slow_down)."""
    if name == "token_poll":
        return Request("POST", "/api/v1/device/token", json_body({
            "grant_type": GRANT_TYPE, "device_code": world.working.spare_device_code}),
            _headers(device_address(19_999), JSON))
    items = requests_for(name, world, cookie="unused")
    return items[1 % len(items)]


def mixed(world: World, cookie: str) -> list[Request]:
    """Every path interleaved (the memory run): one of each, over and over."""
    lists = [requests_for(path.name, world, cookie) for path in ALL_PATHS]
    longest = max(len(items) for items in lists)
    return [items[i % len(items)] for i in range(longest) for items in lists]
