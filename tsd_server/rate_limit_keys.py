"""Rate-limit keys: whom one limit counts. Shared by every route with its own key function."""

from __future__ import annotations

from flask_login import current_user

from tsd_server.client_address import client_ip_for_limits


def address_key() -> str:
    """The client address as a limit key: IPv4 as is, IPv6 as its /64 (client_ip_for_limits)."""
    return "addr:" + client_ip_for_limits()


def account_key() -> str:
    """The logged-in account, whatever address it comes from; without a session, the
    address."""
    if current_user.is_authenticated:
        return f"user:{current_user.id}"
    return address_key()
