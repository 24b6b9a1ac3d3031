"""Runtime kill-switch flags: one row per strategy (or "all") that has ever been toggled."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tsd_server.extensions import db
from tsd_server.models.types import UTCDateTime


class StrategyFlag(db.Model):
    __tablename__ = "strategy_flags"

    # A strategy name, or "all".
    strategy: Mapped[str] = mapped_column(String(32), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(Text)
    changed_by: Mapped[str] = mapped_column(String(64))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
