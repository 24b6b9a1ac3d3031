"""The device authorization grant (RFC 8628), the person's side: reach a request, decide it.

A logged-in person types the user code on /link or opens the QR link, sees the device's
details and decides (``decide``). The first account to reach the request, either way,
binds it (``bound_to_id``, ``open_by_user_code`` / ``open_qr_link``): the user code sits
on the printer's screen next to the QR code (and follows from the QR token), so spending
the QR link alone would leave the request to anyone who saw the screen. Another account
is refused (``HeldByAnotherAccount``). Binding and deciding are conditional UPDATEs of a
pending row held by that account or by none, so of two simultaneous binds or decisions
exactly one wins. Approving re-reads the kill switch.

The device's side (``start``, ``poll``, issuing the token) is ``device_flow``, whose strategy
names this module uses.
"""

from __future__ import annotations

from datetime import datetime
from typing import NoReturn

from sqlalchemy import ColumnElement, and_, func, literal, or_, select, update

from tsd_server import audit, client_address
from tsd_server.auth import accounts
from tsd_server.client_address import ClientAddress
from tsd_server.clock import utcnow
from tsd_server.discovery import kill_switch
from tsd_server.discovery.pairing import codes
from tsd_server.discovery.pairing.device_flow import PAIRING_CODE, QR_CODE
from tsd_server.extensions import db
from tsd_server.models import DeviceAuthorization, User
from tsd_server.models.pairing import APPROVED, DENIED, PENDING

# Where the printer asked from, against where the approver is now (``network_seen``).
SAME_NETWORK = "same_network"
OTHER_NETWORK = "other_network"
PRINTER_UNCHECKED = "printer_unchecked"
NOT_COMPARABLE = "not_comparable"


class HeldByAnotherAccount(Exception):
    """The request was reached first by another account: only that one may go on with it."""


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
    account that holds the request: in another browser that account goes on by typing the
    code (the browser that opened it gets its page again: ``link_pages.reopened_qr_link``).
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
    commit both, and return the request. Its way is ``way_reached``: the code of a request
    whose QR link was opened, typed again, reaches it as qr_code."""
    row = get(authorization_id)
    assert row is not None  # just bound, in this transaction
    device_uid, via = row.device_uid, way_reached(row, via)
    try:  # a binding made as the way is switched off would escape its withdrawal
        kill_switch.hold_enabled(via)
    except kill_switch.StrategyDisabled:  # rolled back
        _refused_as_switched_off(user, device_uid, via, address, event="device_flow_opened")
        raise
    audit.record("device_flow_opened", actor=f"user:{user.id}", outcome="bound",
                 user_id=user.id, device_uid=device_uid, strategy=via, address=address,
                 detail=asked_from(row, address))
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


def network_seen(row: DeviceAuthorization, address: ClientAddress | None) -> str:
    """Did the printer ask from the household the approver is in now (RFC 8628 §5.4)?

    A printer in front of the person is usually on the same home network; a request from
    another one is what a code or link sent by someone elsewhere looks like (and also what
    a phone on mobile data looks like, so the page warns and does not refuse). Households
    are ``client_address.warning_household``'s.

    - ``OTHER_NETWORK``: both known, of one address family, and different: a warning. A
      printer whose proxy named two addresses (``client_address.either_household``) never
      matches: it may have chosen the one that does.
    - ``PRINTER_UNCHECKED``: the approver's known, the printer's not, or of the other family
      (a printer on IPv4 and a phone on IPv6 in one home; also a stranger's printer asking
      over the family the victim is not on, to escape the warning): a note.
    - ``NOT_COMPARABLE``: the approver's unknown (then nobody's is, usually: a proxy that
      passes no address; or one of two): nothing, as for every approval on such a server.
    - ``SAME_NETWORK``: nothing either. Never shown as a reassurance: behind a proxy the
      server was not told about, or a shared public address, strangers share one key.
    """
    approver = client_address.warning_household(address) if address is not None else None
    if approver is None or client_address.EITHER in approver:
        return NOT_COMPARABLE
    printer = row.requested_household
    if printer is None or not any((":" in candidate) == (":" in approver)
                                  for candidate in printer.split(client_address.EITHER)):
        return PRINTER_UNCHECKED
    return SAME_NETWORK if printer == approver else OTHER_NETWORK


def asked_from(row: DeviceAuthorization, address: ClientAddress | None) -> str:
    """The audit detail of a binding or decision: the printer, its address, and whether it
    asked from the household of the request answering (the remote-phishing signal the
    runbook searches)."""
    where = {SAME_NETWORK: "the approver's household",
             OTHER_NETWORK: "another household than the approver's",
             PRINTER_UNCHECKED: "the printer's household not comparable",
             NOT_COMPARABLE: "the approver's household unknown"}[network_seen(row, address)]
    return f"{row.name!r} asked from {row.requested_from_ip or 'unknown'} ({where})"


def way_reached(row: DeviceAuthorization, via: str) -> str:
    """The strategy a decision on ``row`` goes through: qr_code once its QR link was opened,
    whatever page the person answers on (the code typed after scanning is still the scan's
    request), else ``via``. Switch-offs, incident queries and the link all name it so: with
    QR linking switched off, typing the code a QR page showed must not approve it as
    pairing_code (``pending_links`` counts such a request as reached by qr_code too)."""
    return QR_CODE if row.qr_opened_at is not None else via


def is_open(row: DeviceAuthorization) -> bool:
    return row.status == PENDING and row.expires_at > utcnow()


def get(authorization_id: int) -> DeviceAuthorization | None:
    """The request as the database has it now (not as this session last read it)."""
    return db.session.get(DeviceAuthorization, authorization_id, populate_existing=True)


def decide(authorization_id: int, *, user: User, approve: bool, via: str,
           address: ClientAddress | None) -> bool:
    """Approve or deny a pending authorization; False (audited as ``too_late``) when it is
    no longer pending, or another account holds it. ``via`` is the way the person came; the
    decision goes through ``way_reached``.

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
    via = way_reached(row, via)
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
               _free_or_held_by(user.id),
               # its way as read: a QR link opened since makes it a qr_code decision
               DeviceAuthorization.qr_opened_at.is_not(None) if via == QR_CODE
               else DeviceAuthorization.qr_opened_at.is_(None))
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
                 detail=asked_from(row, address))
    db.session.commit()
    return True


def too_late(row: DeviceAuthorization | None, *, user: User, via: str,
             address: ClientAddress | None) -> None:
    """Audit an answer that decided nothing ("Too late": ``device_flow_decision`` /
    ``too_late``), saying why. ``row`` is the request the answer was about, None when it is
    gone (purged) or the session's id names another request now."""
    if row is not None:
        via = way_reached(row, via)
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


def _refused_as_switched_off(user: User, device_uid: str, via: str,
                             address: ClientAddress | None, *,
                             event: str = "device_flow_decision") -> None:
    audit.record(event, actor=f"user:{user.id}", outcome="strategy_disabled",
                 user_id=user.id, device_uid=device_uid, strategy=via, address=address)
    db.session.commit()

