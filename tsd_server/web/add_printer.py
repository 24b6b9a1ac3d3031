"""The "Add printer" page: the ways of linking a printer that are on right now.

Each strategy contributes its title, one sentence and the page where it starts
(``add_printer_endpoint``; None or an endpoint this app does not serve means no link).
Strategies that are off are not offered; they are listed apart with the public reason, so
nobody wonders where a way went.
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
    name: str
    title: str
    summary: str
    url: str | None
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
    ways = [Way(strategy.name, strategy.title, strategy.summary,
                _url(strategy.add_printer_endpoint) if state.enabled else None,
                state.public_reason)
            for strategy, state in registry.with_states()]
    return render_template("add_printer.html",
                           enabled=[way for way in ways if way.off_reason is None],
                           disabled=[way for way in ways if way.off_reason is not None])
