"""Rate-limit keys: whom one limit counts. Shared by every route with its own key function."""

from __future__ import annotations

import ipaddress

from flask_login import current_user

from tsd_server.client_address import client_ip_for_limits

# An IPv6 provider or tunnel broker hands one customer a /48 (or a /56): 65,536 (or 256)
# /64s, each with budgets of its own under address_key.
NETWORK_PREFIX_V6 = 48


def address_key() -> str:
    """The client address as a limit key: IPv4 as is, IPv6 as its /64 (client_ip_for_limits)."""
    return "addr:" + client_ip_for_limits()


def network_key() -> str:
    """The client's network as a limit key: IPv6 as its /48, IPv4 as the address (a
    budget beside address_key's, for what one customer's many /64s can make us do)."""
    key = client_ip_for_limits()
    if "/" in key:
        key = str(ipaddress.ip_network(key).supernet(new_prefix=NETWORK_PREFIX_V6))
    return "net:" + key


def account_key() -> str:
    """The logged-in account, whatever address it comes from; without a session, the
    address."""
    if current_user.is_authenticated:
        return f"user:{current_user.id}"
    return address_key()
