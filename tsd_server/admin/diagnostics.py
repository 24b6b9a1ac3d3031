"""Admin proxy diagnostics: what the server sees for this very request, and why.

The page answers the self-hoster's question "does ip_match work behind my proxy?" from the
admin's own browser. It uses the code real requests use (``client_address.for_request()``)
and the checks of ``flask proxy-check`` (``proxy_check.findings``), and adds the ip_match
checks that do not depend on who asks (kill switch, household block, device cap). Looking
here never counts as an ip_match lookup: nothing is written, no breaker is fed.
"""

from __future__ import annotations

from flask import Blueprint, current_app, render_template, request

from tsd_server import client_address, proxy_check
from tsd_server.admin.access import refuse_non_admins
from tsd_server.client_address import ClientAddress
from tsd_server.discovery.ip_match.verdict import ip_match_verdict
from tsd_server.trusted_proxies import UNIX_SOCKET

bp = Blueprint("admin_diagnostics", __name__, url_prefix="/admin")
bp.before_request(refuse_non_admins)

# Request headers that say something about the client's address or the original URL, shown
# as received (attacker-controlled: cut to this length, and escaped by the template).
SHOWN_HEADERS = ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host",
                 "X-Forwarded-Port", "X-Forwarded-Prefix", "Forwarded", "X-Real-IP")
MAX_HEADER_SHOWN = 300


def received_headers() -> list[tuple[str, str | None]]:
    return [(name, _cut(request.headers.get(name))) for name in SHOWN_HEADERS]


def _cut(value: str | None) -> str | None:
    if value is None or len(value) <= MAX_HEADER_SHOWN:
        return value
    return value[:MAX_HEADER_SHOWN] + "…"


def what_if() -> tuple[ClientAddress | None, str | None]:
    """``?peer=IP&forwarded_for=...``: what the server would decide for such a request,
    with the same code as real requests (as ``flask proxy-check --peer``). The peer
    ``unix:`` is a request through gunicorn's unix socket, the shipped production shape."""
    peer = (request.args.get("peer") or "").strip()[:64]
    forwarded = (request.args.get("forwarded_for") or "").strip()[:MAX_HEADER_SHOWN]
    if not peer:
        return None, None
    if peer.lower() == UNIX_SOCKET:
        peer = UNIX_SOCKET  # as the setting and flask proxy-check take it, in any case
    elif client_address.parse_ip(peer) is None:
        return None, ("The peer must be an IP address (no port), or "
                      f"{UNIX_SOCKET} for gunicorn's unix socket.")
    environ = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded else {}
    return client_address.resolve(peer, environ, current_app.extensions["tsd.proxy_settings"]), None


@bp.get("/diagnostics")
def proxy_diagnostics():
    settings = current_app.extensions["tsd.proxy_settings"]
    address = client_address.for_request()
    example, example_error = what_if()
    return render_template(
        "admin/diagnostics.html", address=address, verdict=ip_match_verdict(address),
        example=example, example_error=example_error,
        example_verdict=ip_match_verdict(example) if example else None,
        headers=received_headers(),
        settings=[(f"TSD_{key}", current_app.config.get(key), meaning)
                  for key, meaning in proxy_check.SETTING_MEANINGS],
        findings=proxy_check.findings(settings), mistakes=proxy_check.COMMON_MISTAKES,
        verify=proxy_check.VERIFY)
