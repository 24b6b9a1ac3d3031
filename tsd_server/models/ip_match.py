"""ip_match state: announcing devices, link offers, and the household breaker's bookkeeping.

All of it lives in the database so every process (gunicorn workers, the CLI) sees the same
state. Every table is bounded: announcements are purged once their TTL has passed, an
announcement has at most one offer, wrong-code counts are purged a day after their last
wrong code, account sightings older than the breaker window and finished household blocks
are deleted as new ones are written.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tsd_server.extensions import db
from tsd_server.models.types import UTCDateTime
from tsd_server.models.user import User


class Announcement(db.Model):
    """An unlinked device that announced itself recently, bound to its device_secret."""

    __tablename__ = "ip_match_announcements"
    __table_args__ = (
        # nearby and the household cap: live devices of one household.
        Index("ix_ip_match_announcements_household_last_seen", "household", "last_seen_at"),
        # the purge of expired rows.
        Index("ix_ip_match_announcements_last_seen_at", "last_seen_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    device_uid: Mapped[str] = mapped_column(String(64), unique=True)
    # SHA-256 hex of the device_secret bound by the first announce.
    secret_hash: Mapped[str] = mapped_column(String(64))
    household: Mapped[str] = mapped_column(String(49))
    client_ip: Mapped[str] = mapped_column(String(45))
    name: Mapped[str] = mapped_column(String(80))
    model: Mapped[str | None] = mapped_column(String(80))
    agent_version: Mapped[str | None] = mapped_column(String(40))
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Written at most every IP_MATCH_LAST_SEEN_WRITE_INTERVAL seconds.
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The device's wrong-code count is not here but in WrongCodeCount, keyed by device_uid:
    # this row goes when the device expires or is linked, and the count must not.

    offer: Mapped[Offer | None] = relationship(
        back_populates="announcement", cascade="all, delete-orphan", passive_deletes=True,
        uselist=False)


class Offer(db.Model):
    """A user's request to link one announcing device; one per announcement at a time."""

    __tablename__ = "ip_match_offers"
    # AUTOINCREMENT: SQLite would give a deleted newest offer's id to the next one.
    __table_args__ = (Index("ix_ip_match_offers_user_id", "user_id"),
                      {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(primary_key=True)
    # The id shown to the user (secrets.token_urlsafe): unguessable, and checked against
    # the owner on every use anyway.
    public_id: Mapped[str] = mapped_column(String(43), unique=True)
    # Unique: the database itself guarantees one offer per device under concurrency.
    announcement_id: Mapped[int] = mapped_column(
        ForeignKey("ip_match_announcements.id", ondelete="CASCADE"), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # The household of the user's link request; device and user must stay in it.
    household: Mapped[str] = mapped_column(String(49))
    # awaiting_confirmation | pending_device | confirmed
    status: Mapped[str] = mapped_column(String(24))
    # The 6-digit code, masked with a key derived from SECRET_KEY (see offers.py).
    code_masked: Mapped[int | None] = mapped_column(Integer)
    attempts_left: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    code_shown_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    confirmed_from_ip: Mapped[str | None] = mapped_column(String(45))

    announcement: Mapped[Announcement] = relationship(back_populates="offer")
    user: Mapped[User] = relationship()


class WrongCodeCount(db.Model):
    """Wrong confirmation codes typed for a device_id (wrong_codes.py bounds them).

    Keyed by device_uid, not by announcement: registering, expiring, purging or linking an
    announcement leaves it alone (anyone may announce under a device_id that is not live,
    so a count on the announcement could be wiped by linking a fake printer). A row goes
    only once it counts nothing any more: a day after its last wrong code.
    """

    __tablename__ = "ip_match_wrong_codes"
    # the purge of rows that count nothing any more.
    __table_args__ = (Index("ix_ip_match_wrong_codes_last_wrong_code_at", "last_wrong_code_at"),)

    device_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Wrong codes, each less than a day after the one before, and when the last was (NULL:
    # none yet, the row was only taken for a guess).
    wrong_codes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_wrong_code_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class HouseholdAccount(db.Model):
    """An account that used ip_match from a household recently (the breaker counts these)."""

    __tablename__ = "ip_match_household_accounts"
    __table_args__ = (
        Index("ix_ip_match_household_accounts_household_seen", "household", "last_seen_at"),
        Index("ix_ip_match_household_accounts_last_seen_at", "last_seen_at"),
    )

    household: Mapped[str] = mapped_column(String(49), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)


class HouseholdBlock(db.Model):
    """A household the anomaly breaker tripped for: blocked until ``blocked_until``."""

    __tablename__ = "ip_match_household_blocks"
    __table_args__ = (Index("ix_ip_match_household_blocks_tripped_at", "tripped_at"),)

    household: Mapped[str] = mapped_column(String(49), primary_key=True)
    tripped_at: Mapped[datetime] = mapped_column(UTCDateTime)
    blocked_until: Mapped[datetime] = mapped_column(UTCDateTime)
    accounts: Mapped[int] = mapped_column(Integer)
