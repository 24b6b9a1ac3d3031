"""The page a person gets when the way of linking they took is switched off (503).

It names that way as they know it and links to the ways still on
(``tsd_server.discovery.ways``); the operator's own reason stays on the admin page.
"""

from __future__ import annotations

from collections.abc import Iterable

from flask import render_template, request

from tsd_server.discovery import kill_switch, ways


def way_off_page(refused: str | Iterable[str], state: kill_switch.StrategyState, *,
                 endpoint: str | None = None) -> tuple[str, int, dict[str, str]]:
    """The refusal for strategy ``refused`` as reached at ``endpoint`` (default: this
    request's). Off because the switches cannot be read, it says when to try again."""
    refusal = ways.refusal(refused, state,
                           endpoint=endpoint if endpoint is not None else request.endpoint)
    headers = ({"Retry-After": str(kill_switch.UNREADABLE_RETRY_AFTER)}
               if state.disabled_by == kill_switch.FLAG_STORE_UNREADABLE else {})
    return render_template("way_off.html", refusal=refusal, status=503), 503, headers
