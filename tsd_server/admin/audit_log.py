"""Reading the audit log for the admin page: filters, newest first, one page at a time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from tsd_server.auth.accounts import normalise_email
from tsd_server.extensions import db
from tsd_server.models import AuditEvent, User

PER_PAGE = 50
# Page numbers past this are refused: deep OFFSETs cost the database a full scan.
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
    total: int


def search(filters: AuditFilters, page: int = 1, per_page: int = PER_PAGE) -> AuditPage:
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
    total = db.session.scalar(select(func.count()).select_from(query.subquery())) or 0
    pages = max(1, -(-total // per_page))
    page = min(max(page, 1), pages, MAX_PAGE)
    rows = db.session.execute(
        query.order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
        .offset((page - 1) * per_page).limit(per_page)).all()
    return AuditPage(rows=[(event, email) for event, email in rows], page=page, pages=pages,
                     total=total)
