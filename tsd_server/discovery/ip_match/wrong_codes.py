"""At most nine wrong confirmation codes per printer in any 24 hours, whoever types them.

An offer's own tries (``IP_MATCH_CODE_ATTEMPTS``) bound nothing on their own: an offer can
end before they are used up (it expires, or "Unlink all printers" or a password change
withdraws it) and the next one brings fresh tries. So every wrong code also counts against
the printer's announcement, however its offer ends. The count runs while wrong codes come
less than ``WINDOW`` apart; once it holds ``WRONG_CODES_PER_WINDOW``, the printer takes no
offers and no codes until ``WINDOW`` after the last. Hence no ``WINDOW`` ever holds more:
ten wrong codes within one would be less than ``WINDOW`` apart, in one count, and the tenth
would have been refused.

Race: every guess first takes the printer's row with a conditional UPDATE that fails at the
bound (``hold``) and keeps it until its transaction ends, so a parallel guess waits and
then sees the new count (PostgreSQL re-checks the condition on the row it waited for;
SQLite has one writer at a time). The count lives with the announcement, and an expired
announcement is kept while its count runs, so a printer that stops announcing (or is kept
from it: a tripped household breaker refuses its announces) comes back with its count.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, case, or_, update

from tsd_server.api.errors import ApiError
from tsd_server.extensions import db
from tsd_server.models.ip_match import Announcement

WRONG_CODES_PER_WINDOW = 9
WINDOW = timedelta(hours=24)
TOO_MANY = "too_many_wrong_codes"

_UNSYNCHRONISED = {"synchronize_session": False}


def locked_until(row: Announcement | None, now: datetime) -> datetime | None:
    """Until when the printer takes no offers and no codes, or None."""
    if row is None:
        return None
    last = row.last_wrong_code_at
    if last is None or last < now - WINDOW or row.wrong_codes < WRONG_CODES_PER_WINDOW:
        return None
    return last + WINDOW


def counting(row: Announcement, now: datetime) -> bool:
    """Does the printer's count still run (a wrong code less than ``WINDOW`` ago)?"""
    return row.last_wrong_code_at is not None and row.last_wrong_code_at >= now - WINDOW


def not_counting(now: datetime) -> ColumnElement[bool]:
    """``not counting`` as SQL, for deleting expired announcements."""
    last = Announcement.last_wrong_code_at
    return or_(last.is_(None), last < now - WINDOW)


def refusal(until: datetime | None, now: datetime) -> ApiError:
    """The 429 for a printer at its bound (``until``: from ``locked_until``)."""
    error = ApiError(429, TOO_MANY, "Wrong confirmation codes were typed for this printer "
                     "too often: it takes no link offers or codes for now. Link it with a "
                     "pairing code instead, or try again later.")
    wait = (until - now) if until is not None else WINDOW
    error.headers["Retry-After"] = str(max(1, int(wait.total_seconds()) + 1))
    return error


def hold(announcement_id: int, now: datetime) -> bool:
    """Take the printer's row for one guess, until the caller's transaction ends; False
    (nothing taken) when the printer is at its bound or gone."""
    last = Announcement.last_wrong_code_at
    taken = db.session.execute(
        update(Announcement)
        .where(Announcement.id == announcement_id,
               or_(last.is_(None), last < now - WINDOW,
                   Announcement.wrong_codes < WRONG_CODES_PER_WINDOW))
        .values(wrong_codes=Announcement.wrong_codes),
        execution_options=_UNSYNCHRONISED).rowcount
    return bool(taken)


def count_wrong(announcement_id: int, now: datetime) -> int:
    """Count one wrong code against a printer taken with ``hold``; returns its count."""
    last = Announcement.last_wrong_code_at
    running = and_(last.is_not(None), last >= now - WINDOW)
    # Both SET expressions read the row as it was before this UPDATE.
    return db.session.execute(
        update(Announcement).where(Announcement.id == announcement_id)
        .values(wrong_codes=case((running, Announcement.wrong_codes + 1), else_=1),
                last_wrong_code_at=now)
        .returning(Announcement.wrong_codes),
        execution_options=_UNSYNCHRONISED).scalar_one()
