"""Linked devices. A row exists only once a link completed; its token is stored hashed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tsd_server.extensions import db
from tsd_server.models.types import UTCDateTime
from tsd_server.models.user import User


class Device(db.Model):
    __tablename__ = "devices"
    __table_args__ = (
        Index("ix_devices_linked_via_linked_at", "linked_via", "linked_at"),
        Index("ix_devices_owner_id", "owner_id"),
        # One row per printer and account: a new link of the same printer replaces the
        # old one in place (link_service), so its old token cannot outlive it.
        Index("uq_devices_owner_id_device_uid", "owner_id", "device_uid", unique=True),
        # SQLite: never give a deleted printer's id to a new one (migration 0014).
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # The agent's own identifier: client-chosen, so unique per owner only.
    device_uid: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(80))
    model: Mapped[str | None] = mapped_column(String(80))
    linked_via: Mapped[str] = mapped_column(String(32))
    linked_at: Mapped[datetime] = mapped_column(UTCDateTime)
    linked_from_ip: Mapped[str | None] = mapped_column(String(45))
    # SHA-256 hex of the access token; NULL once revoked.
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    token_hint: Mapped[str | None] = mapped_column(String(16))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set when an incident revoke took the token: the owner must link the printer again.
    needs_relink: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    owner: Mapped[User] = relationship()

    @property
    def is_active(self) -> bool:
        return self.token_hash is not None

    def to_json(self) -> dict:
        return public_json(self)


def public_json(device: Device | Any) -> dict:
    """What a device and its owner are shown about it (also for rows read without the ORM)."""
    return {
        "id": device.device_uid,
        "name": device.name,
        "model": device.model,
        "linked_via": device.linked_via,
        "linked_at": device.linked_at.isoformat(),
    }
