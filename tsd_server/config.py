"""Configuration layers: defaults here, then instance/config.py, then TSD_* environment
variables, then the dict a caller (a test) passes to create_app().

Every key below can be set as ``TSD_<KEY>`` in the environment; values are parsed as JSON
where they parse (``TSD_PROXY_FIX_X_FOR=1`` is the integer 1, ``true`` is a bool).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from flask import Flask

DEFAULTS: dict[str, Any] = {
    # "production" requires TSD_SECRET_KEY; "development" keeps a generated key in instance/.
    "ENV": "production",
    "SECRET_KEY": None,
    # None means SQLite at instance/tsd.sqlite3.
    "DATABASE_URL": None,
    "MAX_CONTENT_LENGTH": 64 * 1024,
    "LOG_LEVEL": "INFO",
    # Whether anyone may sign up on /register (the CLI can always create accounts).
    "REGISTRATION_OPEN": True,
    # Werkzeug ProxyFix: how many proxies set each header. 0 = no proxy in front.
    "PROXY_FIX_X_FOR": 0,
    "PROXY_FIX_X_PROTO": 0,
    "PROXY_FIX_X_HOST": 0,
    "PROXY_FIX_X_PORT": 0,
    "PROXY_FIX_X_PREFIX": 0,
    # Forwarded headers are honoured only from direct peers inside these networks.
    "TRUSTED_PROXIES": "",
    "IPV6_HOUSEHOLD_PREFIX": 64,
    # LAN mode: private and loopback addresses count as households (one-box self-hosting).
    "IP_MATCH_ALLOW_PRIVATE": False,
    "IP_MATCH_PRIVATE_PREFIX_V4": 24,
    "IP_MATCH_PRIVATE_PREFIX_V6": 64,
    # Absolute base for links shown to devices (QR codes); empty = derive when trustworthy.
    "BASE_URL": "",
    # Kill switch at deployment level: "all" or a comma list; runtime cannot override it.
    "DISCOVERY_DISABLED": "",
    # How long a process trusts the runtime kill-switch flags it read (seconds). Every
    # process honours a toggle within this; keep it at or under 1.
    "KILL_SWITCH_CACHE_SECONDS": 0.5,
    "RATELIMIT_STORAGE_URI": "memory://",
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    # Secure cookies are also set per request whenever it arrives over https.
    "SESSION_COOKIE_SECURE": False,
    "WTF_CSRF_TIME_LIMIT": None,
    "WTF_CSRF_SSL_STRICT": True,
}


class ConfigurationError(RuntimeError):
    """The deployment settings are unusable; the message says what to change."""


def load_config(app: Flask, overrides: dict[str, Any] | None) -> None:
    """Apply the layers in order and derive the settings Flask extensions read."""
    app.config.from_mapping(DEFAULTS)
    app.config.from_pyfile("config.py", silent=True)
    app.config.from_prefixed_env("TSD")
    if overrides:
        app.config.from_mapping(overrides)

    if not app.config.get("DATABASE_URL"):
        app.config["DATABASE_URL"] = "sqlite:///" + os.path.join(app.instance_path, "tsd.sqlite3")
    app.config["SQLALCHEMY_DATABASE_URI"] = app.config["DATABASE_URL"]
    app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {"pool_pre_ping": True})
    app.config["RATELIMIT_HEADERS_ENABLED"] = True
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _development_secret_key(app)


def _development_secret_key(app: Flask) -> str:
    """Generate once and keep in instance/ so sessions survive restarts (development only)."""
    if app.config["ENV"] != "development" and not app.testing:
        raise ConfigurationError(
            "TSD_SECRET_KEY is required (set TSD_ENV=development to use a generated key kept "
            "in instance/). Generate one with: python -c 'import secrets; "
            "print(secrets.token_hex(32))'"
        )
    path = Path(app.instance_path) / "secret_key"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


def comma_list(value: Any) -> list[str]:
    """Settings that hold lists may come as a list or as "a, b, c" from the environment."""
    if not value:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(part).strip() for part in value]
