"""Rate limits of the account pages (Flask-Limiter), each read from a setting.

Passwords are what these pages guard, so each limit counts every attempt before the
password is checked, right or wrong (counting only failures, after the answer, would let
concurrent attempts through uncounted):

* ``LOGIN_LIMIT_PER_IP``: log-ins per client address (IPv6 by its /64);
* ``LOGIN_LIMIT_PER_EMAIL``: log-ins per email typed, whatever the address, so a botnet
  guessing one account's password gets no more tries than one guesser. The price: whoever
  knows an address can spend its budget and keep its owner from logging in until the window
  moves on (sessions already logged in are not touched). docs/security.md says so;
* ``SIGN_UP_LIMIT_PER_IP``: sign-ups per client address;
* ``PASSWORD_CHANGE_LIMIT_PER_ACCOUNT``: guesses at the current password from a logged-in
  (perhaps stolen) session, per account; and as many per address as log-ins
  (``LOGIN_LIMIT_PER_IP``, a budget of its own), so that accounts signed up from one
  address do not multiply the password hashes it can make the server compute;
* ``PASSWORD_HASH_LIMIT_PER_NETWORK``: all three together (every POST that may compute a
  password hash, a password change counting twice), per IPv6 /48 (IPv4: per address). The
  budgets above count an IPv6 client by its /64, and one customer of a provider holds a
  /48: 65,536 of them, each a budget.

The per-email key is an HMAC of the normalised email keyed from SECRET_KEY: the limit
storage (Redis) holds no email addresses, and an unknown email is counted exactly like a
known one, so a refusal tells nobody who has an account.

A refusal is audited (``rate_limited``, once a minute per key), so a guessing campaign
leaves a trace after its first attempts.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from flask import current_app, request

from tsd_server.auth.accounts import normalise_email
from tsd_server.config import configured_limit
from tsd_server.extensions import limiter
from tsd_server.rate_limit_audit import audit_breach
from tsd_server.rate_limit_keys import account_key, address_key, network_key

LOGIN_MESSAGE = "Too many log-in attempts; wait before trying again."
SIGN_UP_MESSAGE = "Too many sign-ups from this address; wait before trying again."
CHANGE_MESSAGE = "Too many password changes; wait before trying again."
NETWORK_MESSAGE = "Too many attempts from your network; wait before trying again."


def email_key() -> str:
    """The email typed into the log-in form, as a key that does not hold the email."""
    secret = str(current_app.config["SECRET_KEY"]).encode("utf-8")
    key = hmac.new(secret, b"tsd login limit key v1", hashlib.sha256).digest()
    email = normalise_email(request.form.get("email", ""))
    return "email:" + hmac.new(key, email.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def _limit(name: str, key_func: Callable[[], str], message: str):
    return limiter.limit(configured_limit(name), key_func=key_func, methods=["POST"],
                         error_message=message, on_breach=audit_breach)


login_per_address = _limit("LOGIN_LIMIT_PER_IP", address_key, LOGIN_MESSAGE)
login_per_email = _limit("LOGIN_LIMIT_PER_EMAIL", email_key, LOGIN_MESSAGE)
sign_up_per_address = _limit("SIGN_UP_LIMIT_PER_IP", address_key, SIGN_UP_MESSAGE)
password_change_per_account = _limit("PASSWORD_CHANGE_LIMIT_PER_ACCOUNT", account_key,
                                     CHANGE_MESSAGE)
password_change_per_address = _limit("LOGIN_LIMIT_PER_IP", address_key, CHANGE_MESSAGE)


def _hashes_per_network(cost: int):
    return limiter.shared_limit(
        configured_limit("PASSWORD_HASH_LIMIT_PER_NETWORK"), scope="password-hash",
        key_func=network_key, methods=["POST"], error_message=NETWORK_MESSAGE,
        on_breach=audit_breach, cost=cost)


password_hashes_per_network = _hashes_per_network(1)
# A change that passes hashes twice (the current password, then the new one), and the
# limit counts before it knows which: every change attempt counts twice.
password_change_hashes_per_network = _hashes_per_network(2)
