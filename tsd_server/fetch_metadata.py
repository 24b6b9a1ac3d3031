"""Where a browser says a request came from (Fetch Metadata, ``Sec-Fetch-Site``).

A QR link binds the approval page on a plain GET. So any other site could send a logged-in
person there: with a link, a redirect, or a "double-click here" button whose second click
lands on Approve once the page has changed under it (double-clickjacking; no frame needed,
so ``frame-ancestors`` does not stop it). The stranger's printer would then be approved into
their account.

Browsers send ``Sec-Fetch-Site``, and pages cannot forge it:

- ``none``: the person typed the address, scanned it with a camera or opened a bookmark;
- ``same-origin``: one of this site's own pages, the login redirect included;
- ``same-site`` or ``cross-site``: anything else. A redirect chain counts as the least
  trusted of its hops.

Only the first two are trusted: the header is the only way a request can show that the
person or this site started it. For the others, for a value not in this list, and for a
request without the header (``not sent``), the caller asks the person first, on a page of
its own. That page cannot be skipped by clicking fast, and it also serves browsers that
report an app's link as cross-site (Firefox does, for a link a camera app hands it).

A missing header proves nothing: browsers send Fetch Metadata only to potentially
trustworthy origins (https, localhost), so Chromium and Firefox send none at all to a
plain-http server such as ``http://192.168.1.20:5000``, whoever started the navigation;
nor do older browsers (Safari before 16.4). Trusting its absence let another site open a
stranger's QR link for anyone using such a server, unasked. So there, every QR link is
asked about once; the question page's own link, which the browser does not vouch for
either, carries a one-time value that only this session was shown (``pairing.web``).
"""

from __future__ import annotations

from collections.abc import Mapping

TRUSTED_SOURCES = frozenset({"none", "same-origin"})
OTHER_SITES = frozenset({"same-site", "cross-site"})
# What ``started_elsewhere`` answers for a request that does not say where it came from.
NOT_SENT = "not sent"


def started_elsewhere(headers: Mapping[str, str]) -> str | None:
    """None only if the browser says the person (``none``) or this site (``same-origin``)
    started the request. Otherwise who may have: ``same-site``, ``cross-site``, ``unknown``
    (any other value) or ``not sent`` (``NOT_SENT``: no header, so it cannot say)."""
    value = headers.get("Sec-Fetch-Site")
    if value is None:
        return NOT_SENT
    value = value.strip().lower()
    if value in TRUSTED_SOURCES:
        return None
    return value if value in OTHER_SITES else "unknown"
