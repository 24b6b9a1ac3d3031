"""Reading an IP address from the text a peer or a header gave.

A module of its own so that ``tsd_server.forwarded_contradiction``, which
``tsd_server.client_address`` imports, reads addresses exactly as the record does.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(text: str | None) -> IPAddress | None:
    """An IP address, or None. IPv4-mapped IPv6 becomes IPv4; ports and zone ids are refused."""
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            return None
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
    return address
