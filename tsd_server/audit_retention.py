"""Pruning the audit log: old rows of everyday and anonymous traffic go, the security
record stays.

Why: nothing else ever deletes an audit row, and anonymous requests add them (a failed
log-in, a printer asking for codes: one row each, within the rate limits), so without a
prune the table grows without bound and keeps IP addresses, which are personal data,
forever. An operator prunes up to a date (``flask audit prune --before``); the rows that
incident response reads, and the low-volume record of what was done about security, are
kept whatever their age (``KEPT_EVENTS``).

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

# The event of a prune's own row.
PRUNED = "audit_pruned"
# Kept whatever their age. Every name is one the server writes (tests check it).
KEPT_EVENTS = (
    "link",  # every link ever made: `flask incident affected` finds a window's links here
    # A person's approval or denial of a printer (RFC 8628): the approver's address and the
    # "another household" note an incident is read for; limited per address and account.
    "device_flow_decision",
    "revocation",  # each token revoked and each link withdrawn, by whom and why
    "incident_revoke",  # each run of `incident revoke` / `revoke-account`
    "flag_toggle",  # each kill-switch change: when a strategy was off, who switched it
    "breaker_trip",  # each automatic switch-off, and why
    "account_locked",  # an operator's lock of an account, with the reason
    "account_unlocked",  # ... and its end
    "password_changed",  # `set-password` after a leak, and owners' own changes
    PRUNED,  # the prunes themselves: what went, and when
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
    return AuditEvent.at < before, AuditEvent.event.not_in(KEPT_EVENTS)


def would_prune(before: datetime) -> dict[str, int]:
    """Rows a prune up to ``before`` would delete, per event; deletes nothing."""
    check_old_enough(before)
    rows = db.session.execute(select(AuditEvent.event, func.count())
                              .where(*_pruneable(before)).group_by(AuditEvent.event))
    counts = dict(sorted((event, count) for event, count in rows))
    db.session.rollback()  # ends the read, so no snapshot is held open
    return counts


def prune(before: datetime, *, actor: str, batch_size: int | None = None) -> PruneResult:
    """Delete the rows before ``before`` that ``KEPT_EVENTS`` does not keep, ``batch_size``
    (``BATCH_SIZE``) at a time, each batch committed; then audit the prune. ValueError,
    before anything is deleted, for a date less than ``MIN_AGE`` ago.

    Batches go in id order from where the last one stopped, so none scans again over the
    rows its predecessors deleted. The counts come from the deleted rows themselves
    (RETURNING), so a prune running alongside is not counted twice.
    """
    check_old_enough(before)
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
    audit.record(PRUNED, actor=actor,
                 detail=f"rows before {before.date().isoformat()} (UTC): deleted "
                        f"{result.total}" + (f" ({per_event})" if per_event else ""))
    db.session.commit()
    return result
