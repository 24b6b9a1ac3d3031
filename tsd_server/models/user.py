"""Accounts."""

from __future__ import annotations

from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import Boolean, Integer, String
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash

from tsd_server.clock import utcnow
from tsd_server.extensions import db
from tsd_server.models.types import UTCDateTime


class User(UserMixin, db.Model):
    __tablename__ = "users"
    # SQLite: never give a deleted account's id to a new one (its cookies name the id).
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    display_name: Mapped[str] = mapped_column(String(80))
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Part of every session cookie's user id; logging out raises it, so cookies issued
    # before (a copy included) name a session that no longer exists.
    session_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Set by an operator (``flask lock-account``): nobody logs in to the account until
    # ``unlock-account``; locking ended its sessions. Its printers keep their tokens.
    locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def is_active(self) -> bool:
        """Flask-Login's word for an account that may log in: ``login_user`` refuses others."""
        return self.locked_at is None

    def get_id(self) -> str:
        """What Flask-Login keeps in the session: the id and the session epoch."""
        return f"{self.id}:{self.session_epoch}"

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    def __repr__(self) -> str:
        return f"<User {self.id} {self.email}>"
