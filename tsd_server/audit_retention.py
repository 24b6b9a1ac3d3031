"""Pruning the audit log: old rows of everyday and anonymous traffic go, the security
record stays.

Why: nothing else ever deletes an audit row, and anonymous requests add them (a failed
log-in, a printer asking for codes: one row each, within the rate limits), so without a
prune the table grows without bound and keeps IP addresses, which are personal data,
forever. An operator prunes up to a date (``flask audit prune --before``) the everyday
record (``PRUNED_EVENTS``); everything else, what incident response reads and what was
done about security, is kept whatever its age.

Rows go in batches, each its own transaction, so PostgreSQL never holds one long lock on
the table while the server writes to it. A prune is itself on record (``PRUNED``).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import delete, func, select

from tsd_server import audit
from tsd_server.clock import utcnow
from tsd_server.extensions import db
from tsd_server.models import AuditEvent

# The event of a prune's own rows: one as it starts, one with what it deleted.
PRUNED = "audit_pruned"
# The everyday record: what anonymous requests, printers and routine use write, in volume.
# Only these are pruned. Every other event is kept whatever its age, a new one included
# until it is added here: the links incident response reads (``link``), failed attempts
# and confirmations, approvals, who was shown which printers (``ip_match_nearby``: the
# exposure an incident like this project's origin needs), revocations, kill-switch
# changes, breaker trips, account locks, password changes and the prunes themselves.
PRUNED_EVENTS = (
    "login", "login_failed", "password_change_failed",  # every log-in, and wrong passwords
    "rate_limited",  # once a minute per limit and client
    "code_invalid", "device_code_invalid",  # wrong codes: anonymous, within the limits
    "pairing_code_issued",  # a code shown to its owner; its use is a link
    "device_flow_requested", "device_flow_opened",  # a printer asking; a QR link opened
    "qr_link_cross_site", "qr_link_invalid",  # QR links opened from elsewhere, or unknown
    # ip_match's printers announcing, the household cap, codes shown, offers and their end
    "ip_match_announce", "ip_match_household_limit", "ip_match_code_shown",
    "ip_match_offer", "ip_match_offer_ended",
)
# Evidence of an incident found late must still be there; the only code that reads recent
# rows for a decision (the pairing failure breaker) reads the last minute.
MIN_AGE = timedelta(days=30)
# Rows deleted per transaction: each batch holds its locks for a moment only.
BATCH_SIZE = 10_000

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass(frozen=True)
class PruneResult:
    before: datetime
    deleted: dict[str, int]  # rows deleted per event
    batches: int  # transactions that deleted rows

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


def parse_date(text: str) -> datetime:
    """``YYYY-MM-DD`` as that day's midnight, UTC; ValueError for anything else."""
    value = (text or "").strip()
    try:
        if not _DATE.fullmatch(value):
            raise ValueError
        day = date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{text!r} is not a date such as 2026-01-31 (YYYY-MM-DD)") from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def check_old_enough(before: datetime) -> None:
    """ValueError unless ``before`` is at least ``MIN_AGE`` ago."""
    if before > utcnow() - MIN_AGE:
        raise ValueError(
            f"{before.date().isoformat()} is less than {MIN_AGE.days} days ago: rows that "
            "recent stay, so that an incident found late can still be looked into")


def _pruneable(before: datetime) -> tuple:
    return AuditEvent.at < before, AuditEvent.event.in_(PRUNED_EVENTS)


def would_prune(before: datetime) -> dict[str, int]:
    """Rows a prune up to ``before`` would delete, per event; deletes nothing."""
    check_old_enough(before)
    rows = db.session.execute(select(AuditEvent.event, func.count())
                              .where(*_pruneable(before)).group_by(AuditEvent.event))
    counts = dict(sorted((event, count) for event, count in rows))
    db.session.rollback()  # ends the read, so no snapshot is held open
    return counts


def prune(before: datetime, *, actor: str, batch_size: int | None = None) -> PruneResult:
    """Delete the rows of ``PRUNED_EVENTS`` before ``before``, ``batch_size``
    (``BATCH_SIZE``) at a time, each batch committed; then audit the prune. ValueError,
    before anything is deleted, for a date less than ``MIN_AGE`` ago.

    Batches go in id order from where the last one stopped, so none scans again over the
    rows its predecessors deleted. The counts come from the deleted rows themselves
    (RETURNING), so a prune running alongside is not counted twice.
    """
    check_old_enough(before)
    day = before.date().isoformat()
    # On record before anything goes: a prune that fails half-way leaves this row, and
    # running it again finishes the job.
    audit.record(PRUNED, actor=actor, outcome="started", detail=f"rows before {day} (UTC)")
    db.session.commit()
    size = batch_size or BATCH_SIZE
    deleted: Counter[str] = Counter()
    batches, last_id = 0, 0
    while True:
        batch = (select(AuditEvent.id).where(*_pruneable(before), AuditEvent.id > last_id)
                 .order_by(AuditEvent.id).limit(size))
        rows = db.session.execute(
            delete(AuditEvent).where(AuditEvent.id.in_(batch))
            .returning(AuditEvent.id, AuditEvent.event),
            execution_options={"synchronize_session": False}).all()
        db.session.commit()
        if rows:
            batches += 1
            last_id = max(row_id for row_id, _ in rows)
            deleted.update(event for _, event in rows)
        if len(rows) < size:
            break
    result = PruneResult(before=before, deleted=dict(sorted(deleted.items())), batches=batches)
    per_event = ", ".join(f"{event} {count}" for event, count in result.deleted.items())
    audit.record(PRUNED, actor=actor, outcome="ok",
                 detail=f"rows before {day} (UTC): deleted "
                        f"{result.total}" + (f" ({per_event})" if per_event else ""))
    db.session.commit()
    return result
