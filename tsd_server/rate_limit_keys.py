"""Rate-limit keys: whom one limit counts. Shared by every route with its own key function."""

from __future__ import annotations

import ipaddress

from flask_login import current_user

from tsd_server.client_address import for_request, parse_ip

# An IPv6 provider or tunnel broker hands one customer a /48 (or a /56): 65,536 (or 256)
# /64s, each with budgets of its own under address_key.
NETWORK_PREFIX_V6 = 48
LIMIT_PREFIX_V6 = 64


def client_ip_for_limits() -> str:
    """Rate-limit key: the resolved client address, IPv6 as its /64 (one host usually holds
    a whole /64), falling back to the direct peer. Always /64, whatever
    ``TSD_IPV6_HOUSEHOLD_PREFIX`` says: a longer household prefix would hand one host 2^64
    budgets for guessing codes and passwords, and a shorter one a whole provider's
    customers a single budget."""
    record = for_request()
    address = parse_ip(record.client_ip or record.peer_ip)
    if address is None:
        return "unknown"
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/{LIMIT_PREFIX_V6}", strict=False))
    return str(address)


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
