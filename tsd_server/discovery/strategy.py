"""The interface every discovery strategy implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from flask import Blueprint


@dataclass(frozen=True)
class AddPrinterWay:
    """One entry of the "Add printer" page: a title, one sentence, the page where it starts.

    ``doing`` names the way as the person does it ("Linking printers near you"), so that a
    refusal while it is switched off says what they tried, not a strategy's name; ``pages``
    are further endpoints reached only this way (a form's POST), which tell two ways of one
    strategy apart (``tsd_server.discovery.ways``)."""

    key: str
    title: str
    summary: str
    endpoint: str | None
    doing: str = ""
    pages: tuple[str, ...] = ()


class DiscoveryStrategy:
    """One way of linking a device to an account.

    A strategy declares its name, a title and one sentence for the "Add printer" page, and
    the blueprints that serve it. Whether it is on is never decided here: the kill switch
    answers that, and the registry guards every route of ``blueprints`` with it.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    summary: ClassVar[str]
    # The way as a person does it, for "... is switched off right now" (see AddPrinterWay).
    doing: ClassVar[str] = ""
    # The page where a user starts linking this way (shown on "Add printer" when enabled).
    add_printer_endpoint: ClassVar[str | None] = None

    def add_printer_ways(self) -> list[AddPrinterWay]:
        """The entries this strategy puts on "Add printer": one, unless it works two ways."""
        return [AddPrinterWay(self.name, self.title, self.summary, self.add_printer_endpoint,
                              self.doing)]

    def blueprints(self) -> list[Blueprint]:
        """Routes that belong to this strategy alone (503 while it is switched off)."""
        return []
