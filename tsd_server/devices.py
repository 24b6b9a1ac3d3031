"""Owner-side device rules: list, rename, revoke (one, or all of an account). Creating devices
is the link service's job."""

from __future__ import annotations

from datetime import datetime

from flask import current_app
from sqlalchemy import case, func, select, update

from tsd_server import audit, pending_links
from tsd_server.clock import utcnow
from tsd_server.extensions import db
from tsd_server.models import Device, User


def _listed(owner_id: int):
    """The rows an account's printer list shows: active ones and those an incident left
    needing a re-link."""
    return (Device.owner_id == owner_id) & (
        Device.token_hash.is_not(None) | Device.needs_relink.is_(True))


def devices_of(user: User) -> list[Device]:
    """The user's printers: active ones and those an incident left needing a re-link."""
    query = select(Device).where(_listed(user.id)).order_by(Device.linked_at.desc())
    return list(db.session.scalars(query))


def printer_limit_reached(owner_id: int, device_uid: str) -> int | None:
    """``TSD_MAX_PRINTERS_PER_ACCOUNT`` when linking ``device_uid`` would add a printer to
    an account that lists that many already, else None. A printer the account lists already
    is a re-link, never refused: an account at its limit can still replace a printer's
    token. Every printer makes the account's pages and device list dearer, and sign-up is
    open by default."""
    limit = current_app.config["MAX_PRINTERS_PER_ACCOUNT"]
    listed, relink = db.session.execute(
        select(func.count(), func.max(case((Device.device_uid == device_uid, 1), else_=0)))
        .where(_listed(owner_id))).one()
    return limit if listed >= limit and not relink else None


# Ids come from URLs (<int:device_pk> has no upper bound). Rows never get ids past this
# (PostgreSQL's integer), and SQLite raises OverflowError past 2**63 - 1 instead of
# finding nothing, which would be a 500.
MAX_ID = 2**31 - 1


def owned_device(user: User, device_pk: int) -> Device | None:
    """The device if ``user`` owns it; None otherwise (no hint whether it exists)."""
    if not 0 < device_pk <= MAX_ID:
        return None
    device = db.session.get(Device, device_pk)
    if device is None or device.owner_id != user.id:
        return None
    return device


def working_printer(user: User, device_uid: str) -> Device | None:
    """The user's printer with this device id whose token works, if any."""
    return db.session.scalar(
        select(Device).where(Device.owner_id == user.id, Device.device_uid == device_uid,
                             Device.token_hash.is_not(None)))


def replaced_by_link(user: User, device_uid: str) -> Device | None:
    """The user's printer a new link under ``device_uid`` would take the place of (links
    re-link in place): a working one, or one an incident left waiting to be linked again,
    whose owner was told to link it again and would expect exactly such a request."""
    return db.session.scalar(
        select(Device).where(Device.owner_id == user.id, Device.device_uid == device_uid,
                             (Device.token_hash.is_not(None))
                             | (Device.needs_relink.is_(True))).limit(1))


def rename(device: Device, name: str) -> None:
    device.name = name
    db.session.commit()


def revoke_token(device: Device, *, actor: str, detail: str, needs_relink: bool = False) -> None:
    """Invalidate the token at once; the caller commits (with its audit row)."""
    device.token_hash = None
    device.revoked_at = utcnow()
    device.needs_relink = needs_relink
    audit.record("revocation", actor=actor, device=device, strategy=device.linked_via,
                 detail=detail)


def revoke_tokens(device_ids: list[int], *, at: datetime) -> None:
    """``revoke_token`` with ``needs_relink`` for many devices in one UPDATE, without their
    audit rows (the caller writes them, ``audit.record_many``) and without loading them:
    an incident revoke of tens of thousands of devices. The caller holds them locked and
    commits."""
    db.session.execute(update(Device).where(Device.id.in_(device_ids))
                       .values(token_hash=None, revoked_at=at, needs_relink=True))


def unlink(device: Device, user: User) -> bool:
    """The owner removes a printer: its token stops working immediately. False, changing
    and auditing nothing, when it was no longer linked: the same confirmation sent twice
    (two tabs, a double press with JavaScript off) unlinks once, and a printer revoked by
    an incident meanwhile keeps its re-link badge. Two unlinks at once wait for each other
    on the account's link lock (PostgreSQL; SQLite has one writer). An incident revoke does
    not take that lock, and on SQLite the read takes no lock at all, so whether the printer
    is still linked is decided by the UPDATE itself, never by a read before it."""
    lock_links_of(user.id)
    # The strategy as the row has it now: a re-link in place may have changed it since
    # ``device`` was read.
    linked_via = db.session.scalar(
        update(Device).where(Device.id == device.id, Device.token_hash.is_not(None))
        .values(token_hash=None, revoked_at=utcnow(), needs_relink=False)
        .returning(Device.linked_via).execution_options(synchronize_session=False))
    if linked_via is None:
        db.session.rollback()
        return False
    audit.record("revocation", actor=f"user:{user.id}", device=device, strategy=linked_via,
                 detail="unlinked by owner")
    db.session.commit()
    return True


def lock_links_of(owner_id: int) -> None:
    """Wait for the account's other links and revocations to finish (PostgreSQL; SQLite has
    one writer at a time). FOR NO KEY UPDATE on the account's row: rows that merely refer
    to the account (audit rows, codes) are not held up. Every link takes it before it claims
    its code, approval or offer, and a withdrawal holds it (``pending_links``)."""
    db.session.execute(select(User.id).where(User.id == owner_id)
                       .with_for_update(key_share=True))


def active_devices_of(user: User, *, lock: bool = False) -> list[Device]:
    """The account's printers whose token works: what revoking the account would revoke.
    ``lock`` holds them until the caller commits (PostgreSQL; on SQLite the caller holds
    the one writer's lock already), in id order as an incident revoke takes them."""
    query = (select(Device).where(Device.owner_id == user.id, Device.token_hash.is_not(None))
             .order_by(Device.id))
    if lock:  # and as locked: printers loaded before (delete_account's count) are refreshed
        query = query.with_for_update().execution_options(populate_existing=True)
    return list(db.session.scalars(query))


def revoke_all(user: User, *, actor: str, detail: str, needs_relink: bool = False) -> list[Device]:
    """Revoke every working token of the account at once, one audit row per printer, and
    withdraw the links it has set in motion (``pending_links``); the caller commits.
    Returns the printers revoked. A link landing at the same moment comes either before
    (and is revoked too) or after, and then only if it was not one of those withdrawn. An
    incident revoke at the same moment (which takes no account lock) either revokes a
    printer first, and it is not among these, or waits for these to be revoked: the
    printers are read locked, or this would clear the incident's re-link badge and audit
    a second revocation. (``accounts.delete_account`` locks the account row first; meeting
    an incident revoke, one of the two is rolled back whole as a deadlock and runs again:
    ``deadlock_retry``.)"""
    lock_links_of(user.id)
    pending_links.withdraw(user, actor=actor, why=detail)  # holding the lock: see there
    active = active_devices_of(user, lock=True)
    for device in active:
        revoke_token(device, actor=actor, detail=detail, needs_relink=needs_relink)
    return active


def unlink_all(user: User) -> list[Device]:
    """The owner removes every printer (a leaked token, a printer that should not be there):
    none keeps access."""
    unlinked = revoke_all(user, actor=f"user:{user.id}", detail="unlinked by owner (all)")
    db.session.commit()
    return unlinked
