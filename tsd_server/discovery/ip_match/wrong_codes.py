"""At most nine wrong confirmation codes per printer in any 24 hours, whoever types them.

An offer's own tries (``IP_MATCH_CODE_ATTEMPTS``) bound nothing on their own: an offer can
end before they are used up (it expires, or "Unlink all printers" or a password change
withdraws it) and the next one brings fresh tries. So every wrong code also counts against
the printer's device_id, however its offer ends. The count runs while wrong codes come
less than ``WINDOW`` apart; once it holds ``WRONG_CODES_PER_WINDOW``, the printer takes no
offers and no codes until ``WINDOW`` after the last. Hence no ``WINDOW`` ever holds more:
ten wrong codes within one would be less than ``WINDOW`` apart, in one count, and the tenth
would have been refused.

Where the count lives: in its own table (``WrongCodeCount``), keyed by device_uid. Nothing
that happens to announcements touches it -- registration, expiry, purge, or a link
completing -- so neither keeping the printer from announcing (a tripped household breaker
refuses its announces) nor registering and linking a fake printer under its device_id once
its announcement expired gives it a fresh count. A row is deleted only once it counts
nothing any more (``not_counting``: a day after its last wrong code).

Race: every guess first takes the device's row (``hold``: one INSERT ... ON CONFLICT DO
UPDATE, so the row exists afterwards, that writes nothing new and fails at the bound) and
keeps it until its transaction ends, so a parallel guess waits and then sees the new count
(PostgreSQL re-checks the condition on the newest row after waiting; SQLite has one writer
at a time).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, case, not_, or_, select, update

from tsd_server.api.errors import ApiError
from tsd_server.extensions import db
from tsd_server.models.ip_match import WrongCodeCount
from tsd_server.upsert import upsert

WRONG_CODES_PER_WINDOW = 9
WINDOW = timedelta(hours=24)
TOO_MANY = "too_many_wrong_codes"

_UNSYNCHRONISED = {"synchronize_session": False}
_LAST = WrongCodeCount.last_wrong_code_at


def locked_until(device_uid: str, now: datetime) -> datetime | None:
    """Until when the printer takes no offers and no codes, or None."""
    row = db.session.execute(select(WrongCodeCount.wrong_codes, _LAST)
                             .where(WrongCodeCount.device_uid == device_uid)).first()
    if row is None:
        return None
    count, last = row
    if last is None or last < now - WINDOW or count < WRONG_CODES_PER_WINDOW:
        return None
    return last + WINDOW


def not_counting(now: datetime) -> ColumnElement[bool]:
    """Rows that count nothing any more (no wrong code less than ``WINDOW`` ago), as SQL."""
    return or_(_LAST.is_(None), _LAST < now - WINDOW)


def refusal(until: datetime | None, now: datetime) -> ApiError:
    """The 429 for a printer at its bound (``until``: from ``locked_until``)."""
    error = ApiError(429, TOO_MANY, "Wrong confirmation codes were typed for this printer "
                     "too often: it takes no link offers or codes for now. Link it with a "
                     "pairing code instead, or try again later.")
    wait = (until - now) if until is not None else WINDOW
    error.headers["Retry-After"] = str(max(1, int(wait.total_seconds()) + 1))
    return error


def hold(device_uid: str, now: datetime) -> bool:
    """Take the device's count row for one guess, until the caller's transaction ends
    (creating it if need be); False when the printer is at its bound. Then nothing is
    written, but PostgreSQL still holds the row (ON CONFLICT locks it): the caller must
    roll back at once, as the refusal in offers.py does.

    One statement, so a purge deleting the row meanwhile cannot make it fail: the row is
    inserted, or the existing one updated (to itself) only where the bound is not reached.
    """
    return upsert(WrongCodeCount,
                  {"device_uid": device_uid, "wrong_codes": 0, "last_wrong_code_at": None},
                  ["device_uid"], changes={"wrong_codes": WrongCodeCount.wrong_codes},
                  only_if=or_(not_counting(now),
                              WrongCodeCount.wrong_codes < WRONG_CODES_PER_WINDOW))


def count_wrong(device_uid: str, now: datetime) -> int:
    """Count one wrong code against a device taken with ``hold``; returns its count."""
    running = not_(not_counting(now))
    # Both SET expressions read the row as it was before this UPDATE.
    return db.session.execute(
        update(WrongCodeCount).where(WrongCodeCount.device_uid == device_uid)
        .values(wrong_codes=case((running, WrongCodeCount.wrong_codes + 1), else_=1),
                last_wrong_code_at=now)
        .returning(WrongCodeCount.wrong_codes),
        execution_options=_UNSYNCHRONISED).scalar_one()
