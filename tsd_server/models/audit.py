"""The audit log: one row per security-relevant event, written in the same transaction."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tsd_server.extensions import db
from tsd_server.models.types import UTCDateTime


class AuditEvent(db.Model):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_at", "at"),
        Index("ix_audit_events_strategy_at", "strategy", "at"),
        Index("ix_audit_events_event_at", "event", "at"),
        # The audit page's account filter, and an account's deletion (SET NULL below).
        Index("ix_audit_events_user_id", "user_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    # link, link_failed, confirmation, revocation, flag_toggle, breaker_trip, ...
    event: Mapped[str] = mapped_column(String(32))
    # "user:<id>", "device:<id>", "admin:<id>", "auto", "cli"
    actor: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id", ondelete="SET NULL"))
    device_uid: Mapped[str | None] = mapped_column(String(64))
    strategy: Mapped[str | None] = mapped_column(String(32))
    client_ip: Mapped[str | None] = mapped_column(String(45))
    peer_ip: Mapped[str | None] = mapped_column(String(45))
    forwarded_for: Mapped[list | None] = mapped_column(JSON)
    household: Mapped[str | None] = mapped_column(String(49))
    # ok, refused, error, ...
    outcome: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)
