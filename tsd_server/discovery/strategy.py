"""The interface every discovery strategy implements."""

from __future__ import annotations

from typing import ClassVar

from flask import Blueprint


class DiscoveryStrategy:
    """One way of linking a device to an account.

    A strategy declares its name, a title and one sentence for the "Add printer" page, and
    the blueprints that serve it. Whether it is on is never decided here: the kill switch
    answers that, and the registry guards every route of ``blueprints`` with it.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    summary: ClassVar[str]
    # The page where a user starts linking this way (shown on "Add printer" when enabled).
    add_printer_endpoint: ClassVar[str | None] = None

    def blueprints(self) -> list[Blueprint]:
        """Routes that belong to this strategy alone (503 while it is switched off)."""
        return []
