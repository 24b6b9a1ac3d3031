"""The ways of linking a printer as a person sees them, and what to say when one is off.

A person never sees strategy names: they pressed "Printers near you", "Enter the printer's
code" or scanned a QR code. So the "Add a printer" page lists the ways that are on (each
strategy's ``add_printer_ways()``; pairing codes give two, one per direction) and names the
strategies that are off with their public reason; and a page refused because its way is
switched off names that way in the person's words and links to the ways still on, so
nobody is left at a dead end. The kill switch decides what is on; this only reads it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from flask import url_for
from werkzeug.routing import BuildError

from tsd_server.discovery import kill_switch, registry
from tsd_server.discovery.strategy import AddPrinterWay

# Said of a strategy this server does not know (a name in a switch-off that is no strategy).
UNKNOWN_WAY = "This way of linking a printer"


@dataclass(frozen=True)
class Way:
    """A way that is on, as the "Add a printer" page offers it."""

    name: str  # the strategy
    key: str  # the way (a strategy may offer two)
    title: str
    summary: str
    url: str | None  # None: no page of this app starts it


@dataclass(frozen=True)
class Off:
    """A strategy that is off, listed apart so that nobody wonders where a way went."""

    name: str
    title: str
    off_reason: str | None


@dataclass(frozen=True)
class Refusal:
    """What a page refused because its way is switched off says."""

    doing: str  # the way the person took, in their words: "Linking printers near you"
    reason: str | None  # the public reason (never the operator's own words)
    ways_on: list[Way]  # the other ways that work right now, each with its page


def _url(endpoint: str | None) -> str | None:
    if not endpoint:
        return None
    try:
        return url_for(endpoint)
    except BuildError:
        return None


def add_printer_choices() -> tuple[list[Way], list[Off]]:
    """The ways that are on, in registration order, and the strategies that are off."""
    enabled: list[Way] = []
    disabled: list[Off] = []
    for strategy, state in registry.with_states():
        if not state.enabled:
            disabled.append(Off(strategy.name, strategy.title, state.public_reason))
            continue
        enabled.extend(Way(strategy.name, way.key, way.title, way.summary, _url(way.endpoint))
                       for way in strategy.add_printer_ways())
    return enabled, disabled


def refusal(refused: str | Iterable[str], state: kill_switch.StrategyState, *,
            endpoint: str | None) -> Refusal:
    """What to tell a person whose way (strategy ``refused``, reached at ``endpoint``) is
    switched off: that way in their words, the public reason, and the ways still on that
    have a page. The refused strategies are left out of those even where a cached read
    still says on, since a fresher read said off."""
    names = {refused} if isinstance(refused, str) else set(refused)
    ways_on = [way for way in add_printer_choices()[0]
               if way.url is not None and way.name not in names]
    doing = _doing(refused, endpoint) if isinstance(refused, str) else UNKNOWN_WAY
    return Refusal(doing, state.public_reason, ways_on)


def _doing(name: str, endpoint: str | None) -> str:
    """The way a request to ``endpoint`` took: the strategy's only way, or the one whose
    pages hold the endpoint; the strategy as a whole when that says nothing."""
    if name not in registry.names():
        return UNKNOWN_WAY
    strategy = registry.get(name)
    ways = strategy.add_printer_ways()
    if len(ways) == 1:
        return _words(ways[0])
    for way in ways:
        if endpoint is not None and endpoint in (way.endpoint, *way.pages):
            return _words(way)
    return strategy.doing or f"Linking with “{strategy.title}”"


def _words(way: AddPrinterWay) -> str:
    return way.doing or f"Linking with “{way.title}”"
