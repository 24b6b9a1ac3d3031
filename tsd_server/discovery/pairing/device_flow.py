"""The device authorization grant (RFC 8628), the device's side: it asks, then it polls.

1. ``start``: the device gets a device_code (256 bits; only its hash is kept), a user_code
   (when pairing_code is on) and a QR link token (when qr_code is on), both derived from the
   device_code (see ``codes``), with ``expires_in`` and ``interval``.
2. A logged-in person reaches the request by its user code or QR link and decides: that is
   the person's side, in ``approvals`` (which also binds the request to the first account).
3. ``poll``: the device polls with its device_code and gets the RFC 8628 §3.5 errors until
   the decision, then the access token exactly once. Issuing claims the row with a
   conditional UPDATE committed together with the link, so two simultaneous polls cannot
   both get a token. After that the device_code is spent: a further poll is ``invalid_grant``
   (RFC 6749 §5.2: the grant "is invalid, expired, revoked ..."), not ``expired_token``, which
   RFC 8628 reserves for a session that timed out undecided or uncollected.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NoReturn

from flask import current_app
from sqlalchemy import Row, bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError

from tsd_server import audit, audit_throttle, client_address, devices, single_statement
from tsd_server.api.errors import ApiError
from tsd_server.client_address import ClientAddress
from tsd_server.clock import utcnow
from tsd_server.discovery import kill_switch
from tsd_server.discovery.link_service import LinkResult, link_device
from tsd_server.discovery.pairing import codes
from tsd_server.extensions import db
from tsd_server.models import Device, DeviceAuthorization, User
from tsd_server.models.pairing import APPROVED, DENIED, PENDING
from tsd_server.rate_limit_keys import address_key

PAIRING_CODE = "pairing_code"
QR_CODE = "qr_code"
SLOW_DOWN_STEP = 5  # seconds added per slow_down (RFC 8628 §3.5)
# Polls this much early still count as on time: network jitter is not the device's fault.
POLL_TOLERANCE = timedelta(seconds=1)
RETENTION = timedelta(days=1)
MAX_DRAWS = 8


class GrantError(ApiError):
    """An RFC 8628 §3.5 / RFC 6749 §5.2 token error (always 400)."""

    MESSAGES = {
        "authorization_pending": "Nobody has approved this device yet; keep polling.",
        "slow_down": "Polling too fast: wait the returned interval between polls.",
        "access_denied": "The request to link this device was denied.",
        "expired_token": "This device code has expired; start again with /device/authorize.",
        "invalid_grant": "This device code is unknown or has already been used.",
    }

    def __init__(self, code: str, **extra) -> None:
        super().__init__(400, code, self.MESSAGES[code], **extra)


@dataclass(frozen=True)
class StartedAuthorization:
    device_code: str
    user_code: str | None
    qr_token: str | None
    expires_in: int
    interval: int


def strategies_on() -> tuple[bool, bool]:
    """(pairing_code on, qr_code on): what an authorize answer may offer right now; raises
    ``StrategyDisabled`` when both are off (a device flow needs one). Its ``disabled_by``
    is ``flag_store_unreadable`` if either is off only because the switches cannot be read
    (that one may be on once they can: come back later), else pairing_code's."""
    pairing, qr = kill_switch.state(PAIRING_CODE), kill_switch.state(QR_CODE)
    if not (pairing.enabled or qr.enabled):
        unreadable = [state for state in (pairing, qr)
                      if state.disabled_by == kill_switch.FLAG_STORE_UNREADABLE]
        raise kill_switch.StrategyDisabled(
            [PAIRING_CODE, QR_CODE], unreadable[0] if unreadable else pairing,
            "Linking by pairing code and by QR code are both switched off on this server.")
    return pairing.enabled, qr.enabled


def start(*, device_uid: str, name: str, model: str | None,
          address: ClientAddress | None) -> StartedAuthorization:
    pairing_on, qr_on = strategies_on()
    now = utcnow()
    ttl = int(current_app.config["DEVICE_FLOW_TTL"])
    interval = int(current_app.config["DEVICE_FLOW_INTERVAL"])
    purge(now)
    for _ in range(MAX_DRAWS):
        device_code = codes.new_device_code()
        qr_token = codes.qr_token_for(device_code)
        user_code = codes.user_code_for(qr_token) if pairing_on else None
        user_code_hash = codes.code_hash(user_code) if user_code else None
        if user_code_hash and db.session.scalar(select(DeviceAuthorization.id).where(
                DeviceAuthorization.user_code_hash == user_code_hash)):
            continue
        db.session.add(DeviceAuthorization(
            device_code_hash=codes.secret_hash(device_code), user_code_hash=user_code_hash,
            qr_token_hash=codes.secret_hash(qr_token) if qr_on else None,
            device_uid=device_uid, name=name, model=model, requested_at=now,
            requested_from_ip=address.client_ip if address else None,
            requested_household=client_address.warning_household(address)
            if address else None,
            expires_at=now + timedelta(seconds=ttl), poll_interval=interval, status=PENDING))
        audit.record("device_flow_requested", actor="device", device_uid=device_uid,
                     strategy=PAIRING_CODE if pairing_on else QR_CODE, address=address,
                     detail=f"{name!r}; user code: {'yes' if pairing_on else 'no'}, "
                            f"QR link: {'yes' if qr_on else 'no'}")
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            continue
        return StartedAuthorization(device_code=device_code, user_code=user_code,
                                    qr_token=qr_token if qr_on else None,
                                    expires_in=ttl, interval=interval)
    raise RuntimeError("no free user code after several draws")  # ~never: 2.56e10 codes


_AUTHORIZATIONS = DeviceAuthorization.__table__
_A = _AUTHORIZATIONS.c
# What a token poll or the QR image needs, read by one statement on its own
# (single_statement): a pending poll is this read and one UPDATE, with no transaction.
# Issuing the token does not rest on this read: its claim is conditional, in the session.
_BY_DEVICE_CODE_HASH = (
    select(_A.id, _A.device_code_hash, _A.qr_token_hash, _A.qr_opened_at, _A.device_uid,
           _A.name, _A.model, _A.expires_at, _A.poll_interval, _A.last_polled_at, _A.status,
           _A.decided_by_id, _A.decided_at, _A.decided_via, _A.decided_from_ip,
           _A.decided_peer_ip, _A.token_issued_at)
    .where(_A.device_code_hash == bindparam("device_code_hash")))


def by_device_code(text: str | None) -> Row:
    """The authorization a device code belongs to, or ``invalid_grant`` (audited).

    Called with no uncommitted writes in the session: the audit row is written at once.
    """
    row = None
    if text and codes.looks_like_device_code(text):
        row = single_statement.first(_BY_DEVICE_CODE_HASH,
                                     {"device_code_hash": codes.secret_hash(text)})
    if row is None or not codes.secret_matches(row.device_code_hash, text or ""):
        _audit_invalid_code(None, "unknown device code")
        raise GrantError("invalid_grant")
    return row


def _audit_invalid_code(device_uid: str | None, detail: str) -> None:
    """``device_code_invalid``, once a minute per address at most: polls come as fast as
    the token limit allows (120 a minute), and each would otherwise be a row."""
    if audit_throttle.first_this_minute("tsd-audit-device-code", address_key()):
        audit.record_now("device_code_invalid", actor="device", outcome="refused",
                         device_uid=device_uid, detail=f"{detail} (audited once a minute "
                         "per address at most)")


def poll(device_code: str | None) -> LinkResult:
    """One token request (RFC 8628 §3.4): the access token once, or a ``GrantError``."""
    row = by_device_code(device_code)
    now = utcnow()
    if row.token_issued_at is not None:
        _audit_invalid_code(row.device_uid, "device code already used")
        raise GrantError("invalid_grant")
    if row.expires_at <= now:
        raise GrantError("expired_token")
    if row.status == DENIED:
        raise GrantError("access_denied")
    if row.status == PENDING:
        _pending_poll(row, now)
    return _issue_token(row)


# The two writes of a pending poll, built once (bindparams): a poll runs one of them.
_POLLED_ON_TIME = (
    update(_AUTHORIZATIONS)
    .where(_A.id == bindparam("authorization_id"),
           _A.last_polled_at.is_not_distinct_from(bindparam("polled_before")))
    .values(last_polled_at=bindparam("polled_at", type_=_A.last_polled_at.type)))
_POLLED_TOO_SOON = (
    update(_AUTHORIZATIONS).where(_A.id == bindparam("authorization_id"))
    .values(last_polled_at=bindparam("polled_at", type_=_A.last_polled_at.type),
            poll_interval=_A.poll_interval + SLOW_DOWN_STEP)
    .returning(_A.poll_interval))


def _pending_poll(row: Row, now: datetime) -> NoReturn:
    """Record the poll and raise ``authorization_pending`` or ``slow_down``.

    The on-time write applies only if the poll time is still the one read, so of polls sent
    together one is on time and the others, which did not wait, get slow_down. slow_down adds
    5 s for this and later polls (RFC 8628 §3.5) in the same UPDATE, which returns the sum.
    """
    on_time = (row.last_polled_at is None or
               now >= row.last_polled_at + timedelta(seconds=row.poll_interval) - POLL_TOLERANCE)
    if on_time and single_statement.rowcount(_POLLED_ON_TIME, {
            "authorization_id": row.id, "polled_before": row.last_polled_at,
            "polled_at": now}) == 1:
        raise GrantError("authorization_pending")
    slowed = single_statement.first(_POLLED_TOO_SOON,
                                    {"authorization_id": row.id, "polled_at": now})
    assert slowed is not None  # rows are purged a day after expiry, and this one is live
    raise GrantError("slow_down", interval=slowed.poll_interval)


def _issue_token(row: Row) -> LinkResult:
    """The account's lock first (``pending_links``), then the time (the lock may have
    waited for a withdrawal), then the claim: approved, not collected, not expired."""
    if row.decided_by_id is not None:
        devices.lock_links_of(row.decided_by_id)
    now = utcnow()
    claimed = db.session.execute(
        update(DeviceAuthorization)
        .where(DeviceAuthorization.id == row.id, DeviceAuthorization.status == APPROVED,
               DeviceAuthorization.token_issued_at.is_(None),
               DeviceAuthorization.expires_at > now)
        .values(token_issued_at=now)
        .execution_options(synchronize_session=False)).rowcount == 1
    owner = db.session.get(User, row.decided_by_id) if row.decided_by_id else None
    if not claimed or owner is None:
        db.session.rollback()
        raise GrantError(_why_not_claimed(row.id, now) if not claimed else "access_denied")
    # The link row's address is this request's, the printer's, as for the other two ways of
    # linking: a printer linked from an address unlike its approver's is what an operator
    # looks for (RFC 8628 §5.4). The approver's full address is on the decision's row.
    approved = row.decided_at.isoformat() if row.decided_at else "(unknown)"

    def mark_spent(device: Device) -> None:
        db.session.execute(update(DeviceAuthorization).where(DeviceAuthorization.id == row.id)
                           .values(device_id=device.id))

    return link_device(
        owner=owner, device_uid=row.device_uid, name=row.name, model=row.model,
        strategy=row.decided_via or PAIRING_CODE, actor=f"user:{owner.id}", address=None,
        detail=f"device flow approved {approved} from {row.decided_from_ip or 'unknown'}",
        mark_spent=mark_spent)


def qr_token_for_device(device_code: str | None) -> str:
    """The QR link token for the device holding ``device_code`` (to draw its QR image)."""
    row = by_device_code(device_code)
    assert device_code is not None
    if row.token_issued_at is not None:
        raise GrantError("invalid_grant")
    if row.expires_at <= utcnow():
        raise GrantError("expired_token")
    if row.qr_token_hash is None:
        raise ApiError(409, "qr_unavailable", "This request has no QR link (QR linking was "
                       "switched off when the device asked); use the user code.")
    if row.qr_opened_at is not None or row.status != PENDING:
        raise ApiError(409, "qr_link_used", "This QR link has been opened or decided already.")
    return codes.qr_token_for(device_code)


def _why_not_claimed(authorization_id: int, now: datetime) -> str:
    """The answer for a claim lost after the first look (RFC 8628 §3.5): collected since
    (``invalid_grant``), withdrawn since (``access_denied``: a log-out, a switch-off), or
    expired while the collection waited for the account's lock (``expired_token``)."""
    current = db.session.get(DeviceAuthorization, authorization_id, populate_existing=True)
    if current is None or current.token_issued_at is not None:
        return "invalid_grant"
    if current.status != APPROVED:
        return "access_denied"
    return "expired_token" if current.expires_at <= now else "invalid_grant"


def purge(now: datetime) -> None:
    """Forget authorizations that expired more than ``RETENTION`` ago (caller commits)."""
    db.session.execute(delete(DeviceAuthorization)
                       .where(DeviceAuthorization.expires_at < now - RETENTION))
