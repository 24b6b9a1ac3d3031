"""The "Add printer" page: the ways of linking a printer that are on right now.

Each strategy contributes its ways (``add_printer_ways()``: a title, one sentence and the
page where it starts; None or an endpoint this app does not serve means no link). Pairing
codes give two ways, one per direction. Strategies that are off are not offered; they are
listed apart with the public reason, so nobody wonders where a way went
(``tsd_server.discovery.ways``).
"""

from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import login_required

from tsd_server.discovery import ways

bp = Blueprint("add_printer", __name__)


@bp.get("/printers/add")
@login_required
def index():
    enabled, disabled = ways.add_printer_choices()
    return render_template("add_printer.html", enabled=enabled, disabled=disabled)
