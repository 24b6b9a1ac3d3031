"""The "Add printer" page: the ways of linking a printer that are on right now.

Each strategy contributes its ways (``add_printer_ways()``: a title, one sentence and the
page where it starts; None or an endpoint this app does not serve means no link). Pairing
codes give two ways, one per direction. Strategies that are off are not offered; they are
listed apart with the public reason, so nobody wonders where a way went.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, render_template, url_for
from flask_login import login_required
from werkzeug.routing import BuildError

from tsd_server.discovery import registry

bp = Blueprint("add_printer", __name__)


@dataclass(frozen=True)
class Way:
    name: str  # the strategy
    key: str  # the way (a strategy may offer two)
    title: str
    summary: str
    url: str | None


@dataclass(frozen=True)
class Off:
    name: str
    title: str
    off_reason: str | None


def _url(endpoint: str | None) -> str | None:
    if not endpoint:
        return None
    try:
        return url_for(endpoint)
    except BuildError:
        return None


@bp.get("/printers/add")
@login_required
def index():
    enabled, disabled = [], []
    for strategy, state in registry.with_states():
        if not state.enabled:
            disabled.append(Off(strategy.name, strategy.title, state.public_reason))
            continue
        enabled.extend(Way(strategy.name, way.key, way.title, way.summary, _url(way.endpoint))
                       for way in strategy.add_printer_ways())
    return render_template("add_printer.html", enabled=enabled, disabled=disabled)
