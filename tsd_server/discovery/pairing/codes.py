"""Codes people type and tokens machines carry: generation, normalisation, hashing.

Typed codes follow RFC 8628 §6.1: 8 characters from 20 consonants (no vowels, so no words;
no digits, so no 0/O or 1/I confusion), shown as ``XXXX-XXXX`` and compared without regard
to case, dashes or spaces. That is 20^8 = 2.56e10 codes, about 34.6 bits: far too few to
survive an offline search, so they are stored as an HMAC keyed with a value derived from
``SECRET_KEY`` (a leaked database alone does not reveal live codes), and online guessing is
bounded by rate limits (docs/security.md).

Device codes and QR tokens are 256-bit values from ``secrets`` and stored as SHA-256, like
access tokens. A device's QR token and user code are derived from its device code with
HMAC, so the server can render the QR image again for the device that holds the device code,
and show the user code on the QR approval page, while storing only hashes of all three.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

from flask import current_app

from tsd_server.auth.tokens import hashes_match, token_hash

ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
CODE_LENGTH = 8
CODE_SPACE = len(ALPHABET) ** CODE_LENGTH  # 25,600,000,000

DEVICE_CODE_PREFIX = "tsd_dc_"
TOKEN_BYTES = 32  # 256 bits for device codes and QR tokens
# token_urlsafe(32) is 43 characters of base64url.
QR_TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_-]{43}$")
DEVICE_CODE_PATTERN = re.compile(r"^" + DEVICE_CODE_PREFIX + r"[A-Za-z0-9_-]{43}$")

# Hyphen-minus, the Unicode dashes phones substitute while typing, and any whitespace.
_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015\u2212]+")
_CODE_CHARS = frozenset(ALPHABET)


def new_code() -> str:
    """A fresh code in canonical form (8 letters, no dash)."""
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def display(code: str) -> str:
    """``WDJBMJHT`` → ``WDJB-MJHT``."""
    half = CODE_LENGTH // 2
    return f"{code[:half]}-{code[half:]}"


def normalise(text: str | None) -> str | None:
    """Canonical form of what a person typed, or None when it cannot be a code at all."""
    if not text or len(text) > 64:
        return None
    code = _SEPARATORS.sub("", text).upper()
    if len(code) != CODE_LENGTH or not set(code) <= _CODE_CHARS:
        return None
    return code


def code_hash(code: str) -> str:
    """HMAC-SHA256 of a canonical code, keyed by a value derived from SECRET_KEY."""
    return hmac.new(_code_key(), code.encode("ascii"), hashlib.sha256).hexdigest()


def _code_key() -> bytes:
    secret = str(current_app.config["SECRET_KEY"]).encode("utf-8")
    return hmac.new(secret, b"tsd pairing code hash v1", hashlib.sha256).digest()


def new_device_code() -> str:
    return DEVICE_CODE_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def looks_like_device_code(value: str) -> bool:
    return bool(DEVICE_CODE_PATTERN.fullmatch(value))


def qr_token_for(device_code: str) -> str:
    """The QR link token of a device code: 256 bits, one-way from the device code."""
    digest = hmac.new(device_code.encode("ascii"), b"tsd qr link token v1", hashlib.sha256)
    return _base64url(digest.digest())


def user_code_for(qr_token: str) -> str:
    """The user code of a QR token (uniform over the alphabet by rejection sampling)."""
    chars: list[str] = []
    counter = 0
    limit = 256 - 256 % len(ALPHABET)  # 240: bytes at or above it would bias the choice
    while len(chars) < CODE_LENGTH:
        block = hmac.new(qr_token.encode("ascii"), b"tsd user code v1 %d" % counter,
                         hashlib.sha256).digest()
        chars.extend(ALPHABET[b % len(ALPHABET)] for b in block if b < limit)
        counter += 1
    return "".join(chars[:CODE_LENGTH])


def secret_hash(value: str) -> str:
    """SHA-256 for 256-bit values (device codes, QR tokens): nothing there to brute-force."""
    return token_hash(value)


def secret_matches(stored_hash: str | None, value: str) -> bool:
    return hashes_match(stored_hash, value)


def _base64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
