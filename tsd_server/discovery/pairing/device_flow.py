"""The device authorization grant (RFC 8628): the device asks, a person approves, it polls.

1. ``start``: the device gets a device_code (256 bits; only its hash is kept), a user_code
   (when pairing_code is on) and a QR link token (when qr_code is on), both derived from the
   device_code (see ``codes``), with ``expires_in`` and ``interval``.
2. A logged-in person types the user code on /link or opens the QR link, sees the device's
   details and decides (``decide``). The first account to reach the request, either way,
   binds it (``bound_to_id``, ``open_by_user_code`` / ``open_qr_link``): the user code sits
   on the printer's screen next to the QR code (and follows from the QR token), so spending
   the QR link alone would leave the request to anyone who saw the screen. Another account
   is refused (``HeldByAnotherAccount``). Binding and deciding are conditional UPDATEs of a
   pending row held by that account or by none, so of two simultaneous binds or decisions
   exactly one wins. Approving re-reads the kill switch.
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
from sqlalchemy import (
    ColumnElement,
    Row,
    and_,
    bindparam,
    delete,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from tsd_server import audit, audit_throttle, devices, single_statement
from tsd_server.api.errors import ApiError
from tsd_server.auth import accounts
from tsd_server.client_address import ClientAddress
from tsd_server.clock import utcnow
from tsd_server.discovery import kill_switch
from tsd_server.discovery.link_service import LinkResult, link_device
from tsd_server.discovery.pairing import codes
from tsd_server.extensions import db
from tsd_server.models import DeviceAuthorization, User
from tsd_server.models.pairing import APPROVED, DENIED, PENDING
from tsd_server.rate_limit_keys import address_key

PAIRING_CODE = "pairing_code"
QR_CODE = "qr_code"
SLOW_DOWN_STEP = 5  # seconds added per slow_down (RFC 8628 §3.5)
# Polls this much early still count as on time: network jitter is not the device's fault.
POLL_TOLERANCE = timedelta(seconds=1)
RETENTION = timedelta(days=1)
MAX_DRAWS = 8


class HeldByAnotherAccount(Exception):
    """The request was reached first by another account: only that one may go on with it."""


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
    """(pairing_code on, qr_code on): what an authorize answer may offer right now."""
    return kill_switch.is_enabled(PAIRING_CODE), kill_switch.is_enabled(QR_CODE)


def start(*, device_uid: str, name: str, model: str | None,
          address: ClientAddress | None) -> StartedAuthorization:
    pairing_on, qr_on = strategies_on()
    if not (pairing_on or qr_on):
        raise ApiError(503, "strategy_disabled",
                       "Linking by pairing code and by QR code are both switched off on this "
                       "server.", strategy=[PAIRING_CODE, QR_CODE])
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
    approver = ClientAddress(client_ip=row.decided_from_ip, peer_ip=row.decided_peer_ip)
    result = link_device(
        owner=owner, device_uid=row.device_uid, name=row.name, model=row.model,
        strategy=row.decided_via or PAIRING_CODE, actor=f"user:{owner.id}", address=approver,
        detail=f"device flow approved {row.decided_at.isoformat() if row.decided_at else ''}")
    db.session.execute(update(DeviceAuthorization).where(DeviceAuthorization.id == row.id)
                       .values(device_id=result.device.id))
    db.session.commit()
    return result


def _free_or_held_by(user_id: int) -> ColumnElement[bool]:
    """The request is held by ``user_id``, or by nobody yet.

    Nobody: ``bound_to_id`` and ``bound_at`` both NULL (never reached, or waiting since before
    migration 0011). ``bound_at`` without ``bound_to_id`` is a request whose account was
    deleted (``ondelete=SET NULL``): held by nobody who can still act, so closed to all,
    never freed for a stranger who saw the printer's screen."""
    return or_(DeviceAuthorization.bound_to_id == user_id,
               and_(DeviceAuthorization.bound_to_id.is_(None),
                    DeviceAuthorization.bound_at.is_(None)))


def is_free_or_held_by(row: DeviceAuthorization, user_id: int) -> bool:
    """``_free_or_held_by`` for a row already read."""
    return row.bound_to_id == user_id or (row.bound_to_id is None and row.bound_at is None)


def _bind_values(user_id: int, now: datetime) -> dict:
    """The binding's columns: the account, and the first time it reached the request."""
    return {"bound_to_id": user_id,
            "bound_at": func.coalesce(DeviceAuthorization.bound_at,
                                      literal(now, DeviceAuthorization.bound_at.type))}


def open_by_user_code(text: str | None, *, user: User,
                      address: ClientAddress | None) -> DeviceAuthorization | None:
    """Reach a request by its typed user code, binding it to ``user``: the request, or None
    when no request is waiting with that code (the caller counts it as a wrong code).

    One conditional UPDATE binds it: pending, unexpired, and held by ``user`` or by nobody,
    so of two accounts typing the code at once exactly one gets it. The same account again
    (a second tab, the code typed after scanning) is fine. Another account's request raises
    ``HeldByAnotherAccount`` and changes nothing; that is not a wrong code (it names a live
    request), so it is audited here, not counted by the failure breaker.
    """
    code = codes.normalise(text)
    if code is None:
        return None
    code_hash = codes.code_hash(code)
    now = utcnow()
    bound = db.session.execute(
        update(DeviceAuthorization)
        .where(DeviceAuthorization.user_code_hash == code_hash,
               DeviceAuthorization.status == PENDING, DeviceAuthorization.expires_at > now,
               _free_or_held_by(user.id))
        .values(**_bind_values(user.id, now))
        .returning(DeviceAuthorization.id)
        .execution_options(synchronize_session=False)).scalar()
    if bound is not None:
        return _bound(bound, user=user, via=PAIRING_CODE, address=address)
    db.session.rollback()
    row = db.session.scalar(select(DeviceAuthorization).where(
        DeviceAuthorization.user_code_hash == code_hash))
    if row is None or not is_open(row):
        return None
    _refuse_held_elsewhere(row, user=user, via=PAIRING_CODE, address=address)


def qr_link_target(token: str) -> DeviceAuthorization | None:
    """The authorization a QR link names, spent or not (None for an unknown token)."""
    if not codes.QR_TOKEN_PATTERN.fullmatch(token):
        return None
    return db.session.scalar(select(DeviceAuthorization).where(
        DeviceAuthorization.qr_token_hash == codes.secret_hash(token)))


def open_qr_link(token: str, *, user: User,
                 address: ClientAddress | None) -> DeviceAuthorization | None:
    """Spend a QR link and bind its request to ``user``, in one conditional UPDATE: the
    request for the first open of a live link whose request nobody else holds; None (and a
    ``qr_link_invalid`` row saying why) for an unknown, spent, decided or expired link.

    A link whose request another account reached first by its user code raises
    ``HeldByAnotherAccount`` and is not spent. The link stays single-use even for the
    account that holds the request: that account goes on by typing the code.
    """
    row = qr_link_target(token)
    if row is None:
        _refuse_qr_link(None, user=user, address=address, detail="unknown QR link")
        return None
    now = utcnow()
    opened = db.session.execute(
        update(DeviceAuthorization)
        .where(DeviceAuthorization.id == row.id, DeviceAuthorization.qr_opened_at.is_(None),
               DeviceAuthorization.status == PENDING, DeviceAuthorization.expires_at > now,
               _free_or_held_by(user.id))
        .values(qr_opened_at=now, **_bind_values(user.id, now))
        .execution_options(synchronize_session=False)).rowcount == 1
    if opened:
        return _bound(row.id, user=user, via=QR_CODE, address=address)
    db.session.rollback()
    current = get(row.id)
    if current is None or current.expires_at <= now:
        detail = "expired"
    elif current.status != PENDING:
        detail = f"{current.status} already"
    elif current.qr_opened_at is not None:
        detail = "opened already" + ("" if current.bound_to_id == user.id
                                     else f" (the request is {_holder(current)})")
    else:
        _refuse_held_elsewhere(current, user=user, via=QR_CODE, address=address)
    _refuse_qr_link(current, user=user, address=address, detail=detail)
    return None


def _bound(authorization_id: int, *, user: User, via: str,
           address: ClientAddress | None) -> DeviceAuthorization:
    """Audit a binding (``device_flow_opened`` / ``bound``) with the UPDATE that made it,
    commit both, and return the request."""
    row = get(authorization_id)
    assert row is not None  # just bound, in this transaction
    audit.record("device_flow_opened", actor=f"user:{user.id}", outcome="bound",
                 user_id=user.id, device_uid=row.device_uid, strategy=via, address=address,
                 detail=f"{row.name!r} asked from {row.requested_from_ip or 'unknown'}")
    db.session.commit()
    return row


def _holder(row: DeviceAuthorization) -> str:
    """Who holds a request, for the audit log only (admins read it; the refused person is
    never told)."""
    if row.bound_to_id is not None:
        return f"held by user:{row.bound_to_id}"
    return "held by a deleted account" if row.bound_at is not None else "held by nobody"


def _refuse_held_elsewhere(row: DeviceAuthorization, *, user: User, via: str,
                           address: ClientAddress | None) -> NoReturn:
    """Audit a refused binding (``device_flow_opened`` / ``bound_elsewhere``), raise
    ``HeldByAnotherAccount``."""
    audit.record("device_flow_opened", actor=f"user:{user.id}", outcome="bound_elsewhere",
                 user_id=user.id, device_uid=row.device_uid, strategy=via, address=address,
                 detail=f"{row.name!r}: {_holder(row)} since "
                        f"{row.bound_at.isoformat() if row.bound_at else 'unknown'}")
    db.session.commit()
    raise HeldByAnotherAccount(row.device_uid)


def _refuse_qr_link(row: DeviceAuthorization | None, *, user: User,
                    address: ClientAddress | None, detail: str) -> None:
    audit.record("qr_link_invalid", actor=f"user:{user.id}", outcome="refused",
                 user_id=user.id, strategy=QR_CODE, address=address,
                 device_uid=row.device_uid if row is not None else None, detail=detail)
    db.session.commit()


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


def is_open(row: DeviceAuthorization) -> bool:
    return row.status == PENDING and row.expires_at > utcnow()


def get(authorization_id: int) -> DeviceAuthorization | None:
    """The request as the database has it now (not as this session last read it)."""
    return db.session.get(DeviceAuthorization, authorization_id, populate_existing=True)


def get_open(authorization_id: int) -> DeviceAuthorization | None:
    row = get(authorization_id)
    return row if row is not None and is_open(row) else None


def decide(authorization_id: int, *, user: User, approve: bool, via: str,
           address: ClientAddress | None) -> bool:
    """Approve or deny a pending authorization; False (audited as ``too_late``) when it is
    no longer pending, or another account holds it.

    The decision binds the request to ``user`` if nobody held it yet (requests waiting since
    before migration 0011): of two accounts deciding one, exactly one wins. Approving
    re-reads the kill switch of ``via`` bypassing the cache (``StrategyDisabled``); the link
    itself happens when the device next polls, through the link service, which reads it
    once more.
    """
    row = db.session.get(DeviceAuthorization, authorization_id)
    if row is None:
        too_late(None, user=user, via=via, address=address)
        return False
    outcome = APPROVED if approve else DENIED
    device_uid = row.device_uid
    if approve:
        current = kill_switch.state(via, fresh=True)
        if not current.enabled:
            _refused_as_switched_off(user, device_uid, via, address)
            raise kill_switch.StrategyDisabled(via, current)
    now = utcnow()
    won = db.session.execute(
        update(DeviceAuthorization)
        .where(DeviceAuthorization.id == authorization_id,
               DeviceAuthorization.status == PENDING, DeviceAuthorization.expires_at > now,
               _free_or_held_by(user.id))
        .values(status=outcome, decided_by_id=user.id, decided_at=now, decided_via=via,
                decided_from_ip=address.client_ip if address else None,
                decided_peer_ip=address.peer_ip if address else None,
                **_bind_values(user.id, now))
        .execution_options(synchronize_session=False)).rowcount == 1
    if not won:
        db.session.rollback()
        too_late(get(authorization_id), user=user, via=via, address=address)
        return False
    if approve:
        accounts.require_session_current(user)
        try:
            kill_switch.hold_enabled(via)  # switched off since the read above?
        except kill_switch.StrategyDisabled:
            _refused_as_switched_off(user, device_uid, via, address)
            raise
    audit.record("device_flow_decision", actor=f"user:{user.id}", outcome=outcome,
                 user_id=user.id, device_uid=row.device_uid, strategy=via, address=address,
                 detail=f"{row.name!r} asked from {row.requested_from_ip or 'unknown'}")
    db.session.commit()
    return True


def too_late(row: DeviceAuthorization | None, *, user: User, via: str,
             address: ClientAddress | None) -> None:
    """Audit an answer that decided nothing ("Too late": ``device_flow_decision`` /
    ``too_late``), saying why. ``row`` is the request the answer was about, None when it is
    gone (purged) or the session's id names another request now."""
    if row is None:
        why = "the request is gone"
    elif row.status != PENDING:
        why = f"{row.status} already"
    elif row.expires_at <= utcnow():
        why = "expired"
    elif not is_free_or_held_by(row, user.id):
        why = _holder(row)
    else:
        why = "not decided"  # lost and freed again in between: not expected
    audit.record("device_flow_decision", actor=f"user:{user.id}", outcome="too_late",
                 user_id=user.id, device_uid=row.device_uid if row is not None else None,
                 strategy=via, address=address, detail=why)
    db.session.commit()


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


def _refused_as_switched_off(user: User, device_uid: str, via: str,
                             address: ClientAddress | None) -> None:
    audit.record("device_flow_decision", actor=f"user:{user.id}", outcome="strategy_disabled",
                 user_id=user.id, device_uid=device_uid, strategy=via, address=address)
    db.session.commit()


def purge(now: datetime) -> None:
    """Forget authorizations that expired more than ``RETENTION`` ago (caller commits)."""
    db.session.execute(delete(DeviceAuthorization)
                       .where(DeviceAuthorization.expires_at < now - RETENTION))
