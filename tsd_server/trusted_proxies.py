"""``TSD_TRUSTED_PROXIES``: the networks whose forwarded headers the server believes.

Every address inside a trusted network can choose the client address it stands for (rate
limits, ip_match households, the audit log) and the scheme and host links are built from.
So a list that trusts more than the operator wrote, or more than any set of proxies needs,
stops start-up instead of being widened or accepted:

* an address with a prefix (``172.17.0.1/16``, as ``ip addr`` prints it) is refused, not
  read as its network: the operator meant one of two things, and the wider one trusts
  every container on the bridge;
* a network wider than ``WIDEST_PREFIX`` allows is refused; ``flask proxy-check`` calls the
  same networks an error (``is_too_wide``).

The entry ``unix:`` (nginx's ``set_real_ip_from`` spells it the same) trusts connections
through a unix socket, which have no address: the socket file's owner and mode then decide
who can stand for any client, so only the proxy's user may open it (deploy/tsd-server.socket).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from tsd_server.config import comma_list

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The shortest prefix a trusted network may have, per IP version: a /8 is already a whole
# provider's (or a whole private range's) worth of addresses; anything wider is no list of
# proxies.
WIDEST_PREFIX = {4: 8, 6: 32}

UNIX_SOCKET = "unix:"


def parse_trusted(value: Any) -> tuple[tuple[IPNetwork, ...], bool]:
    """The setting's networks, and whether it trusts unix-socket peers (``unix:``)."""
    entries = comma_list(value)
    networks = [entry for entry in entries if entry.lower() != UNIX_SOCKET]
    return parse_networks(networks), len(networks) < len(entries)


def parse_networks(value: Any) -> tuple[IPNetwork, ...]:
    """Parse a CIDR list setting; a bad entry stops start-up rather than being skipped.
    IPv4-mapped IPv6 entries (``::ffff:10.0.0.0/104``) become the IPv4 networks they mean:
    peers are compared as IPv4 (``client_address.parse_ip``), so as written they could
    never match."""
    return tuple(_unmapped(_network(item)) for item in comma_list(value))


def _network(item: str) -> IPNetwork:
    """One entry: a network, or a bare address (its /32 or /128). An address with a prefix
    is a ValueError that names both things it could have meant."""
    if item.lower().startswith("unix"):
        raise ValueError(f"{item}: write {UNIX_SOCKET} (nothing after the colon) to trust "
                         "every connection through gunicorn's unix socket; the socket file's "
                         "permissions decide who may connect.")
    try:
        return ipaddress.ip_network(item)
    except ValueError:
        interface = _interface_or_none(item)
        if interface is None:
            raise
    network = _unmapped(interface.network)
    address = _unmapped(ipaddress.ip_network(interface.ip))
    raise ValueError(
        f"{item} is an address with a prefix, not a network. Write {network} to trust the "
        f"whole network (every address in it can then choose its client address), or "
        f"{address} to trust that one proxy.")


def _interface_or_none(item: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
    try:
        return ipaddress.ip_interface(item)
    except ValueError:
        return None


def _unmapped(network: IPNetwork) -> IPNetwork:
    mapped = network.network_address.ipv4_mapped if network.version == 6 else None
    if mapped is None or network.prefixlen < 96:
        return network
    return ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")


def is_too_wide(network: IPNetwork) -> bool:
    """Wider than any list of proxies needs: start-up refuses it, proxy-check calls it an
    error."""
    return network.prefixlen < WIDEST_PREFIX[network.version]


def check_width(networks: tuple[IPNetwork, ...]) -> None:
    """Refuse the networks ``is_too_wide`` names, all of them in one ValueError."""
    wide = [str(network) for network in networks if is_too_wide(network)]
    if wide:
        raise ValueError(
            f"{', '.join(wide)}: far too wide. Anyone inside could connect directly and "
            "choose their address with a forged X-Forwarded-For (rate limits, ip_match "
            "households, the audit log). List only your proxies' addresses; networks wider "
            f"than /{WIDEST_PREFIX[4]} (IPv4) or /{WIDEST_PREFIX[6]} (IPv6) are refused.")
