"""The link service: the only code that creates a Device and issues its access token.

Every strategy ends here. The kill switch is read again, bypassing the per-process cache,
at the moment of linking, so an offer or code handed out before a switch-off cannot
complete after it. The device, its token hash, the audit row and whatever the calling
strategy left pending in the session (its code marked used, say) are committed together,
so a strategy gets single use and the link in one transaction.

The check and the commit are milliseconds apart: a link whose fresh check passed may commit
just after a toggle lands. That is inside the one-second promise of the kill switch; every
link attempt that *starts* after the toggle committed is refused.

The audit row carries exactly the device's ``linked_at``, so the incident commands find the
same links whether they read the devices or the audit log.

A printer has one row per account (a unique index on owner and device id): linking it again
re-links that row, and the old token stops working. Links of one owner are serialised on the
owner's row (PostgreSQL; SQLite has one writer at a time, and every strategy writes its
claim before linking), so two links of the same printer at once end as a link and a
re-link. Should the index still refuse a row (a writer that does not take the lock), the
attempt is audited and answered 409 ``link_conflict``; nothing of it is kept, so the device
can simply try again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from flask import has_request_context
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from tsd_server import audit, devices
from tsd_server.api.errors import ApiError
from tsd_server.auth.tokens import new_access_token, token_hash, token_hint
from tsd_server.client_address import ClientAddress, for_request
from tsd_server.clock import utcnow
from tsd_server.discovery import kill_switch
from tsd_server.extensions import db
from tsd_server.models import Device, User

log = logging.getLogger(__name__)


class LinkConflict(ApiError):
    def __init__(self) -> None:
        super().__init__(409, "link_conflict",
                         "This printer is being linked to the same account by another "
                         "request at this moment. Nothing was linked; try again.")


class TooManyPrinters(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(409, "too_many_printers", (
            f"The account already has {limit} printers, the most this server allows. Nothing "
            "was linked: unlink a printer on the website, then link this one again."))


@dataclass(frozen=True)
class LinkResult:
    device: Device
    # Shown once to the device, never stored.
    access_token: str
    # What the device is told about itself, read before the commit expired ``device``:
    # reading it afterwards would be one more round trip, and a failure there would lose
    # the token of a link already made.
    device_json: dict


def link_device(
    *,
    owner: User,
    device_uid: str,
    name: str,
    model: str | None,
    strategy: str,
    actor: str,
    address: ClientAddress | None,
    detail: str | None = None,
    mark_spent: Callable[[Device], None] | None = None,
) -> LinkResult:
    """Link (or re-link) a device to ``owner`` and commit; or raise ``StrategyDisabled``,
    ``TooManyPrinters`` (a new printer for an account at ``TSD_MAX_PRINTERS_PER_ACCOUNT``)
    or ``LinkConflict``.

    ``address`` is where the linking request came from (recorded on the device and in the
    audit row). A device the owner already has under the same ``device_uid`` is re-linked
    in place: its old token stops working and an incident's "needs re-link" is cleared.
    On refusal, the caller's pending changes are rolled back and the attempt is audited
    (``link_failed``, outcome ``strategy_disabled``, ``too_many_printers`` or
    ``conflict``). ``address`` None means the current request's, when there is one.
    ``mark_spent`` writes the device's id on the code or request the link spent, in the
    link's own transaction: a write after the commit could fail once the printer is
    linked, and its token would be lost.
    """
    owner_id = owner.id  # still readable after a failed flush expired ``owner``
    if address is None and has_request_context():
        address = for_request()
    current = kill_switch.state(strategy, fresh=True)
    if not current.enabled:
        _audit_refusal(owner_id, device_uid, strategy, actor, address, "strategy_disabled",
                       current.reason)
        raise kill_switch.StrategyDisabled(strategy, current)

    devices.lock_links_of(owner_id)
    if (limit := devices.printer_limit_reached(owner_id, device_uid)) is not None:
        _audit_refusal(owner_id, device_uid, strategy, actor, address, "too_many_printers",
                       f"the account has {limit} printers, TSD_MAX_PRINTERS_PER_ACCOUNT")
        raise TooManyPrinters(limit)
    device = db.session.scalar(
        select(Device).where(Device.owner_id == owner_id, Device.device_uid == device_uid))
    relink = device is not None
    if device is None:
        device = Device(owner_id=owner_id, device_uid=device_uid)
        db.session.add(device)
    token = new_access_token()
    device.name = name
    device.model = model
    device.linked_via = strategy
    now = utcnow()
    device.linked_at = now
    device.linked_from_ip = address.client_ip if address else None
    device.token_hash = token_hash(token)
    device.token_hint = token_hint(token)
    device.revoked_at = None
    device.needs_relink = False
    try:
        db.session.flush()
    except IntegrityError:
        log.warning("link of %s to user %s refused: the printer was linked to that account "
                    "at the same moment", device_uid, owner_id)
        _audit_refusal(owner_id, device_uid, strategy, actor, address, "conflict",
                       "linked to the same account by another request at the same moment")
        raise LinkConflict() from None
    notes = [detail] if detail else []
    if relink:  # the audit trail says when a link replaced a working (or revoked) token
        notes.append("re-linked: the previous token stopped working")
    event = audit.record("link", actor=actor, user_id=owner_id, device=device,
                         strategy=strategy, address=address, detail="; ".join(notes) or None)
    event.at = now
    if mark_spent is not None:
        mark_spent(device)
    try:
        kill_switch.hold_enabled(strategy)
    except kill_switch.StrategyDisabled as refused:
        _audit_refusal(owner_id, device_uid, strategy, actor, address, "strategy_disabled",
                       refused.state.reason)
        raise
    answer = device.to_json()
    db.session.commit()
    return LinkResult(device=device, access_token=token, device_json=answer)


def _audit_refusal(owner_id: int, device_uid: str, strategy: str, actor: str,
                   address: ClientAddress | None, outcome: str, detail: str | None) -> None:
    """Drop the caller's pending work and record the refused attempt (``link_failed``).

    When the database itself is failing (the usual reason the flag store is unreadable) the
    row cannot be written either; the refusal stands and the failure is logged.
    """
    db.session.rollback()
    try:
        audit.record("link_failed", actor=actor, outcome=outcome, user_id=owner_id,
                     device_uid=device_uid, strategy=strategy, address=address, detail=detail)
        db.session.commit()
    except SQLAlchemyError:
        db.session.rollback()
        log.exception("could not audit a refused %s link (%s)", strategy, outcome)
