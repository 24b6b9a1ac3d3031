"""GET /api/v1/discovery/status: which ways of linking are on, for anyone to see.

Agents and pages use it to offer only what works. It never fails: when the flag store is
unreadable every strategy is reported off (``disabled_by: flag_store_unreadable``). The
operator's own reason text is not shown here (it may name people or addresses).
"""

from __future__ import annotations

from flask import Blueprint, jsonify

from tsd_server.discovery import registry

bp = Blueprint("api_discovery_status", __name__, url_prefix="/api/v1/discovery")


@bp.get("/status")
def status():
    return jsonify({"strategies": {
        strategy.name: {**current.to_json(), "title": strategy.title}
        for strategy, current in registry.with_states()
    }})
