"""The one source of "now", so expiry can be tested with a controllable clock."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import current_app


def utcnow() -> datetime:
    """Timezone-aware UTC now; tests replace ``app.config["CLOCK"]`` with their own callable."""
    clock = current_app.config.get("CLOCK") if current_app else None
    return clock() if clock else datetime.now(UTC)
