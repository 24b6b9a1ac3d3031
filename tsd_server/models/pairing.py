"""One-time codes: codes the web issues, and device authorizations (RFC 8628).

No code or token is stored in the clear: only hashes (see ``discovery/pairing/codes.py``).
Rows are deleted a while after they expire; the audit log keeps the history.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from tsd_server.extensions import db
from tsd_server.models.types import UTCDateTime

PENDING = "pending"
APPROVED = "approved"
DENIED = "denied"


class PairingCode(db.Model):
    """A code shown on the web to a logged-in user; a device redeems it once."""

    __tablename__ = "pairing_codes"
    __table_args__ = (
        Index("ix_pairing_codes_expires_at", "expires_at"),
        Index("ix_pairing_codes_user_id", "user_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # HMAC of the canonical code; unique over every row kept, so unique among live codes.
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_from_ip: Mapped[str | None] = mapped_column(String(45))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Set once, by a conditional UPDATE: by the one redemption (then device_id is set too),
    # or by a withdrawal (pending_links), which spends the code unused.
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id", ondelete="SET NULL"))


class DeviceAuthorization(db.Model):
    """A device asked to be linked (RFC 8628 §3.1); a user approves or denies it."""

    __tablename__ = "device_authorizations"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'approved', 'denied')", name="status"),
        Index("ix_device_authorizations_expires_at", "expires_at"),
        # An account's deletion sets these to NULL (and a log-out withdraws by them).
        Index("ix_device_authorizations_bound_to_id", "bound_to_id"),
        Index("ix_device_authorizations_decided_by_id", "decided_by_id"),
        # AUTOINCREMENT: SQLite would give a purged newest request's id to the next one.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    device_code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # NULL when pairing_code was off at the request (no user code was issued).
    user_code_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    # NULL when qr_code was off at the request (no QR link was issued).
    qr_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    # The QR link is single-use: set by the first open that binds it to a user's session.
    qr_opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The account that reached the request first, by typing its user code or opening its QR
    # link (approvals.open_by_user_code, open_qr_link); only that account may reach it
    # again or decide it. Set once, with bound_at, by a conditional UPDATE. Rows from before
    # migration 0011 have neither and go to whoever reaches or decides them first. SET NULL
    # keeps the row (as for decided_by_id) when the account is deleted, and bound_at stays:
    # "bound_at set, bound_to_id NULL" is held by a deleted account, which nobody can take
    # over, so a deletion never frees a request for a stranger who saw the printer's screen;
    # the printer starts again. (CASCADE would delete the row, and with it the history of the
    # requests that account decided.)
    bound_to_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"))
    bound_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    device_uid: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(80))
    model: Mapped[str | None] = mapped_column(String(80))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    requested_from_ip: Mapped[str | None] = mapped_column(String(45))
    # The household it asked from, for the approval page's warning (approvals.network_seen,
    # client_address.warning_household); NULL when it has none, or the request predates
    # migration 0012.
    requested_household: Mapped[str | None] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Seconds the device must wait between polls; grows by 5 on each slow_down.
    poll_interval: Mapped[int] = mapped_column(Integer)
    last_polled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    decided_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # pairing_code (typed the user code) or qr_code (opened the QR link).
    decided_via: Mapped[str | None] = mapped_column(String(32))
    decided_from_ip: Mapped[str | None] = mapped_column(String(45))
    decided_peer_ip: Mapped[str | None] = mapped_column(String(45))
    # Set once when the access token is handed to the device; the device code is spent then.
    token_issued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id", ondelete="SET NULL"))
