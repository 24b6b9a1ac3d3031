"""Reading the audit log for the admin page: filters, newest first, one page at a time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, func, select

from tsd_server.auth.accounts import normalise_email
from tsd_server.extensions import db
from tsd_server.models import AuditEvent, User

PER_PAGE = 50
# Page numbers past this are refused: deep OFFSETs cost the database a full scan. The count
# stops one row past the last page too: counting every row of a log that only grows is a
# scan that grows with it, for a figure past what the pages reach (docs/performance.md).
MAX_PAGE = 10_000

# Every event this server writes, for the filter's hint (the filter takes any text);
# tests/test_audit_log.py checks the list against the code that writes them.
KNOWN_EVENTS = (
    # links, and what undoes them
    "link", "link_failed", "revocation", "incident_revoke",
    # pairing codes, the device flow and QR links
    "pairing_code_issued", "code_invalid", "device_flow_requested", "device_flow_opened",
    "device_flow_decision", "device_code_invalid", "qr_link_invalid", "qr_link_cross_site",
    # ip_match
    "ip_match_announce", "ip_match_nearby", "ip_match_offer", "ip_match_code_shown",
    "confirmation", "ip_match_offer_ended", "ip_match_household_limit", "breaker_trip",
    # accounts
    "login", "login_failed", "password_changed", "password_change_failed",
    "account_locked", "account_unlocked", "account_deleted",
    # the server
    "flag_toggle", "rate_limited", "audit_pruned",
)


@dataclass(frozen=True)
class AuditFilters:
    """Every field optional; text fields match exactly (email case-insensitively)."""

    event: str | None = None
    strategy: str | None = None
    outcome: str | None = None
    actor: str | None = None
    email: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


@dataclass(frozen=True)
class AuditPage:
    rows: list[tuple[AuditEvent, str | None]]  # (event, the email of its user_id, if any)
    page: int
    pages: int
    total: int  # at most MAX_PAGE pages' worth; ``more`` says when more rows matched
    more: bool = False


def filtered(filters: AuditFilters) -> Select:
    """The events ``filters`` match, each with its user's email, in no order."""
    query = select(AuditEvent, User.email).outerjoin(User, User.id == AuditEvent.user_id)
    for column, value in ((AuditEvent.event, filters.event),
                          (AuditEvent.strategy, filters.strategy),
                          (AuditEvent.outcome, filters.outcome),
                          (AuditEvent.actor, filters.actor)):
        if value:
            query = query.where(column == value)
    if filters.email:
        query = query.where(User.email == normalise_email(filters.email))
    if filters.since is not None:
        query = query.where(AuditEvent.at >= filters.since)
    if filters.until is not None:
        query = query.where(AuditEvent.at < filters.until)
    return query


def search(filters: AuditFilters, page: int = 1, per_page: int = PER_PAGE) -> AuditPage:
    query = filtered(filters)
    reachable = MAX_PAGE * per_page
    counted = db.session.scalar(select(func.count()).select_from(
        query.with_only_columns(AuditEvent.id).limit(reachable + 1).subquery())) or 0
    total = min(counted, reachable)
    pages = max(1, -(-total // per_page))
    page = min(max(page, 1), pages)
    rows = db.session.execute(
        query.order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
        .offset((page - 1) * per_page).limit(per_page)).all()
    return AuditPage(rows=[(event, email) for event, email in rows], page=page, pages=pages,
                     total=total, more=counted > reachable)
