"""Does a trusted proxy's X-Real-IP or ``Forwarded`` say another client than X-Forwarded-For?

Neither header is ever believed. But a proxy that writes one of them and passes the
client's own X-Forwarded-For on unchanged (nginx with only ``proxy_set_header X-Real-IP
$remote_addr``, HAProxy's ``option forwarded`` without ``option forwardfor``) gives itself
away: the address it wrote is not among the hops the trusted proxies vouch for (the
client's and theirs). So does a proxy that appends X-Forwarded-For as it should but
passes on an X-Real-IP or ``Forwarded`` the client sent. ``tsd_server.client_address``
then believes no client address at all (``contradictory_forwarded_headers``): one of the
two is what the client chose, and which cannot be told.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from tsd_server.ip_addresses import IPAddress, parse_ip


class Contradiction(NamedTuple):
    """The header that names another client than X-Forwarded-For, and the address it names."""

    header: str
    address: IPAddress

    def __str__(self) -> str:
        return f"{self.header} names {self.address}"


def contradiction(environ: Mapping[str, Any], vouched_hops: list[str]) -> Contradiction | None:
    """What a trusted proxy's X-Real-IP or ``Forwarded`` says against X-Forwarded-For
    (``X-Real-IP names 8.8.4.4``), or None.

    Only the last value of each is compared, the one the nearest proxy would have written;
    a value that is not an address (``unknown``, an obfuscated name, a client's junk passed
    on) claims nothing. A client that sends a contradicting header itself through a proxy
    that passes it on only makes itself ineligible.
    """
    claims = [(header, claimed) for header, claimed in (
        ("X-Real-IP", parse_ip(_last_value(environ.get("HTTP_X_REAL_IP")))),
        ("Forwarded", parse_ip(_forwarded_for(environ.get("HTTP_FORWARDED"))))
    ) if claimed is not None]
    if not claims:  # the usual request: neither header, nothing to compare
        return None
    vouched = {parse_ip(hop) for hop in vouched_hops}
    for header, claimed in claims:
        if claimed not in vouched:
            return Contradiction(header, claimed)
    return None


def _last_value(header: str | None) -> str | None:
    """The last of a header's comma-separated values (repeated lines arrive joined)."""
    return header.rsplit(",", 1)[-1].strip() if header else None


def _forwarded_for(header: str | None) -> str | None:
    """The address in the ``for=`` of a ``Forwarded`` header's last element (RFC 7239), port
    and brackets taken off; None without one."""
    element = _last_value(header)
    for pair in (element or "").split(";"):
        name, _, value = pair.partition("=")
        if name.strip().lower() == "for":
            node = value.strip().strip('"')
            if node.startswith("["):
                return node[1:].split("]", 1)[0]
            return node.split(":", 1)[0] if node.count(":") == 1 else node
    return None
