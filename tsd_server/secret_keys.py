"""The keys that sign session cookies and CSRF tokens: ``SECRET_KEY`` and its fallbacks.

Whoever knows one can sign a session cookie for any account, an admin's included. So:

- outside development the key must be given, and be at least ``MIN_SECRET_KEY``
  characters (the example files' placeholders are shorter: a copied example does not start);
- so must every old key in ``SECRET_KEY_FALLBACKS``: Flask 3.1 accepts cookies signed by
  any of them while a new key is rolled out (docs/production.md);
- in development a key is generated once and kept in ``instance/secret_key``, written
  atomically, so workers starting together all read the same one.

No message repeats a key.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from flask import Flask

from tsd_server.config import ConfigurationError

# Outside development the key is given, and a short one is refused (the generated one has 64).
MIN_SECRET_KEY = 32
GENERATE_KEY = "Generate one with: python -c 'import secrets; print(secrets.token_hex(32))'"


def configure(app: Flask, *, development: bool) -> None:
    """Set ``SECRET_KEY`` (generated in development when not given) and
    ``SECRET_KEY_FALLBACKS`` as text, or stop start-up saying what to change."""
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _development_key(app, development)
    # TSD_SECRET_KEY=12345 parses as JSON to an int; a key is always text.
    app.config["SECRET_KEY"] = str(app.config["SECRET_KEY"])
    if not development and len(app.config["SECRET_KEY"]) < MIN_SECRET_KEY:
        raise ConfigurationError(
            f"TSD_SECRET_KEY must be at least {MIN_SECRET_KEY} characters: whoever guesses "
            "it can sign a session cookie for any account, an admin's included (the example "
            f"files' placeholders are refused too). {GENERATE_KEY}")
    app.config["SECRET_KEY_FALLBACKS"] = _fallbacks(app.config["SECRET_KEY_FALLBACKS"],
                                                    development)


def _fallbacks(fallbacks: object, development: bool) -> list[str]:
    """Old keys as a list of text; outside development each as long as SECRET_KEY must be."""
    if fallbacks is None or fallbacks == "":
        return []
    if not isinstance(fallbacks, list | tuple) or not all(
            isinstance(key, str) for key in fallbacks):
        raise ConfigurationError(
            "TSD_SECRET_KEY_FALLBACKS must be a JSON list of old keys, each in quotes: "
            "'[\"<old key>\"]' (Flask would take each character of a bare text as a key).")
    short = [str(n) for n, key in enumerate(fallbacks, 1) if len(key) < MIN_SECRET_KEY]
    if short and not development:
        raise ConfigurationError(
            f"TSD_SECRET_KEY_FALLBACKS: every old key must be at least {MIN_SECRET_KEY} "
            f"characters, like TSD_SECRET_KEY (number {', '.join(short)} is shorter): "
            "whoever guesses one can sign a session cookie for any account. Remove it; the "
            "sessions it signed end.")
    return list(fallbacks)


def _development_key(app: Flask, development: bool) -> str:
    """Generate once and keep in instance/ so sessions survive restarts (development only)."""
    if not development:
        raise ConfigurationError(
            "TSD_SECRET_KEY is required (set TSD_ENV=development to use a generated key kept "
            f"in instance/). {GENERATE_KEY}"
        )
    path = Path(app.instance_path) / "secret_key"
    if not path.exists():
        _write_new_key(path)
    key = path.read_text().strip()
    if len(key) < MIN_SECRET_KEY:
        raise ConfigurationError(f"{path} holds no usable key; delete it to generate a new one.")
    return key


def _write_new_key(path: Path) -> None:
    """Write a fresh key atomically: several workers starting at once all end up reading
    the one key that won, never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process won the race; its key is the one
    finally:
        temporary.unlink()
