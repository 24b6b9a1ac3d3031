"""Device access tokens: 256 bits from ``secrets``, a recognisable prefix, stored as SHA-256.

SHA-256 (not a slow password hash) is right here: the token is random and long, so there is
nothing to brute-force, and a fast hash keeps every device call cheap. Only the hash and a
short hint (for the owner to tell tokens apart) are ever stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_PREFIX = "tsd_at_"  # noqa: S105 - a public prefix, not a secret
TOKEN_BYTES = 32  # 256 bits


def new_access_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_hint(token: str) -> str:
    """The prefix and four characters: enough to recognise, useless to an attacker."""
    return token[: len(TOKEN_PREFIX) + 4]


def hashes_match(stored_hash: str | None, token: str) -> bool:
    """Constant-time comparison of a stored hash with a presented token."""
    if stored_hash is None:
        return False
    return hmac.compare_digest(stored_hash, token_hash(token))


def looks_like_access_token(value: str) -> bool:
    return value.startswith(TOKEN_PREFIX) and 16 < len(value) < 128
