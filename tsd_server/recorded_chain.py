"""What a client-address record keeps of X-Forwarded-For, for audit rows and diagnostics.

Everything left of the hops the trusted proxies wrote is the client's own text. Kept whole,
a client behind the documented nginx could send twenty junk hops and make every audit row
it causes a kilobyte longer. So the record keeps the vouched hops and a few of the client's
claims, each cut to the longest text form of an IP address, and says where it cut. Only the
record is bounded: ``client_address.resolve`` decides on every hop the request carried.
"""

from __future__ import annotations

# The client's claims kept left of the vouched hops (a client-side proxy or two, a forgery).
MAX_CLAIMED_HOPS = 3
# len("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"): no longer hop is an address.
MAX_HOP_LENGTH = 45
# Ends a hop that was cut; alone as the first entry, says hops were left out.
CUT = "\u2026"


def recorded_hops(hops: list[str], vouched: int) -> tuple[str, ...]:
    """The last ``vouched`` hops (written by trusted proxies) and ``MAX_CLAIMED_HOPS`` more,
    each at most ``MAX_HOP_LENGTH`` characters."""
    kept = hops[-(vouched + MAX_CLAIMED_HOPS):]
    recorded = tuple(_cut(hop) for hop in kept)
    if len(kept) < len(hops):
        return (CUT, *recorded)
    return recorded


def _cut(hop: str) -> str:
    if len(hop) <= MAX_HOP_LENGTH:
        return hop
    return hop[:MAX_HOP_LENGTH - 1] + CUT
