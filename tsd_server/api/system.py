"""Health and diagnostics."""

from __future__ import annotations

from flask import Blueprint, jsonify
from sqlalchemy import text

from tsd_server import client_address
from tsd_server.discovery.ip_match.verdict import ip_match_verdict
from tsd_server.extensions import db

bp = Blueprint("system", __name__)


@bp.get("/healthz")
def healthz():
    """Answers ok only when the database answers. The outage answer is an error in the
    shared shape (``error``, ``message``) and keeps ``status`` and ``database``, which
    monitoring may read."""
    try:
        db.session.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001 - any database failure means unhealthy
        db.session.rollback()
        return jsonify({"status": "error", "database": "unreachable",
                        "error": "database_unavailable",
                        "message": "The server's database cannot be reached right now."}), 503
    return jsonify({"status": "ok"})


@bp.get("/api/v1/ping")
def ping():
    """The cheapest JSON answer the app gives: no database, no session, no login.

    It is the ceiling the benchmark measures every hot path against (docs/performance.md),
    and a liveness probe for the process alone (/healthz also asks the database).
    """
    return jsonify({"status": "ok"})


@bp.get("/api/v1/client-address")
def show_client_address():
    """What the server believes about this request's origin, and whether ip_match may use it.

    ``ip_match`` is the verdict the admin's proxy diagnostics give (kill switch, address,
    household block, device cap, in the order requests meet them): the address alone would
    say "eligible" while ip_match is off or the household is blocked. Like that page it
    writes nothing: asking here never counts towards the anomaly breaker. Anyone may ask,
    so the kill switch is read from the cache, as the guarded routes read it.
    """
    address = client_address.for_request()
    verdict = ip_match_verdict(address, fresh=False)
    return jsonify({**address.to_json(),
                    "ip_match": {"eligible": verdict.works, "reason": verdict.reason}})
