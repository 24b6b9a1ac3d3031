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

Only the first two are trusted; for the others, and for a value not in this list, the
caller asks the person first, on a page of its own, whose link back is then same-origin.
That page cannot be skipped by clicking fast, and it also serves browsers that report an
app's link as cross-site (Firefox does, for a link a camera app hands it). A browser that
sends no header at all (Safari before 16.4) is let through, so old browsers keep working.
For them, the approval form's request id and tag stay the guard (``link_pages``).
"""

from __future__ import annotations

from collections.abc import Mapping

TRUSTED_SOURCES = frozenset({"none", "same-origin"})
OTHER_SITES = frozenset({"same-site", "cross-site"})


def started_elsewhere(headers: Mapping[str, str]) -> str | None:
    """``same-site``, ``cross-site`` or ``unknown`` (any other value) if the request may have
    been started by another site; None if by this site, the person themselves, or a
    browser that does not say."""
    value = headers.get("Sec-Fetch-Site")
    if value is None:
        return None
    value = value.strip().lower()
    if value in TRUSTED_SOURCES:
        return None
    return value if value in OTHER_SITES else "unknown"
