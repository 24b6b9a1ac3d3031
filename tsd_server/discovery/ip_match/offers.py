"""Offers: a user asks to link a device; the device shows a code; the link completes.

1. ``link``: a user in the device's household picks it. One offer per device at a time (a
   unique index, so concurrent requests cannot both win); the same user picking it again
   gets the same offer, anyone else gets 409 until it ends.
2. With confirmation on, the device's next announce returns status "confirm", a 6-digit
   code from ``secrets`` and the account's display name. The code is stored only masked
   with a key derived from SECRET_KEY, so the database alone does not reveal it, and the
   server can show it to the device on every announce until the offer ends.
3. ``confirm``: the user types the code (constant-time compare). Each try first reserves
   one of ``IP_MATCH_CODE_ATTEMPTS`` in a single UPDATE, so parallel guesses get no more
   tries; the last wrong one voids the offer. Every wrong code also counts against the
   device_id, whatever becomes of the offer or the announcement (``wrong_codes``: nine a
   day at most).
4. ``device_step`` completes a confirmed offer (or, with confirmation off, any offer) on
   the device's next announce, after re-checking household, breaker and cap, through
   ``link_service.link_device`` -- the only code that creates devices and tokens. The
   token goes to this announce's answer only: to the holder of the device_secret, once.

Offers expire after ``IP_MATCH_OFFER_TTL``, checked again at completion with the time read
after the account's lock (which may have waited). Every step is audited.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import Row, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value

from tsd_server import audit, devices
from tsd_server.api.errors import ApiError
from tsd_server.auth import accounts
from tsd_server.client_address import ClientAddress
from tsd_server.clock import utcnow
from tsd_server.discovery import kill_switch, link_service
from tsd_server.discovery.ip_match import breaker, wrong_codes
from tsd_server.discovery.ip_match.eligibility import (
    HOUSEHOLD_CHANGED,
    STRATEGY,
    Ineligible,
    UserCheck,
    check_user,
)
from tsd_server.discovery.ip_match.settings import IpMatchSettings, current
from tsd_server.extensions import db
from tsd_server.models import User
from tsd_server.models.ip_match import Announcement, Offer

AWAITING_CONFIRMATION = "awaiting_confirmation"
PENDING_DEVICE = "pending_device"
CONFIRMED = "confirmed"

CODE_DIGITS = 6
CODE_SPACE = 10**CODE_DIGITS
OFFER_ID_BYTES = 24  # 192 bits


# --- the code --------------------------------------------------------------------------

def _pad(public_id: str) -> int:
    key = current_app.secret_key
    key_bytes = key if isinstance(key, bytes) else str(key).encode("utf-8")
    digest = hmac.new(key_bytes, b"ip_match confirmation code\x00" + public_id.encode("ascii"),
                      hashlib.sha256).digest()
    return int.from_bytes(digest, "big") % CODE_SPACE


def _mask(code: int, public_id: str) -> int:
    return (code + _pad(public_id)) % CODE_SPACE


def code_of(offer: Offer) -> str | None:
    """The offer's code as six digits (None when confirmation is off for it)."""
    if offer.code_masked is None:
        return None
    return f"{(offer.code_masked - _pad(offer.public_id)) % CODE_SPACE:0{CODE_DIGITS}d}"


def normalise_code(text: str) -> str | None:
    """Six digits, ignoring spaces and dashes people type; anything else is None."""
    digits = text.replace(" ", "").replace("-", "")
    if len(digits) != CODE_DIGITS or not digits.isascii() or not digits.isdigit():
        return None
    return digits


# --- shared ----------------------------------------------------------------------------

def expires_in(offer: Offer | Row, now: datetime) -> int:
    return max(0, int((offer.expires_at - now).total_seconds()))


def is_live(offer: Offer | Row, now: datetime) -> bool:
    return offer.expires_at > now


def _same_offer(offer: Offer) -> tuple:
    """Conditions that name this offer, not just its id: before migration 0008, SQLite gave
    a deleted newest offer's id to the next one, which may be another account's (its public
    id is random and never comes back)."""
    return Offer.id == offer.id, Offer.public_id == offer.public_id


def end(offer: Offer, outcome: str, detail: str, *, address: ClientAddress | None = None,
        actor: str = "auto") -> bool:
    """Delete the offer and audit why (expired / voided); the caller commits.

    Returns False when another request ended it first (then nothing is audited twice).
    """
    announcement = offer.announcement
    deleted = db.session.execute(delete(Offer).where(*_same_offer(offer)),
                                 execution_options={"synchronize_session": False}).rowcount
    db.session.expunge(offer)
    set_committed_value(announcement, "offer", None)
    if deleted:
        audit.record("ip_match_offer_ended", actor=actor, outcome=outcome,
                     user_id=offer.user_id, device_uid=announcement.device_uid,
                     strategy=STRATEGY, address=address,
                     detail=f"offer {offer.public_id}: {detail}")
    return bool(deleted)


def _refuse(event: str, user: User, check: UserCheck, outcome: str, error: ApiError, *,
            device_uid: str | None = None, detail: str | None = None) -> ApiError:
    """Audit a refused user step and return the error to raise."""
    audit.record(event, actor=f"user:{user.id}", outcome=outcome, user_id=user.id,
                 device_uid=device_uid, strategy=STRATEGY, address=check.address,
                 detail=detail or error.message)
    db.session.commit()
    return error


def _checked_user(event: str, user: User, settings: IpMatchSettings, now: datetime,
                  device_uid: str | None = None) -> UserCheck:
    kill_switch.require_enabled(STRATEGY, fresh=True)
    check = check_user(user.id, settings, now)
    if check.reason is not None:
        raise _refuse(event, user, check, check.reason, Ineligible(check.reason),
                      device_uid=device_uid)
    return check


# --- user side -------------------------------------------------------------------------

def link(user: User, device_uid: str) -> Offer:
    """Open (or return the user's own open) offer for a device announcing nearby."""
    settings, now = current(), utcnow()
    check = _checked_user("link_failed", user, settings, now, device_uid)
    if (limit := devices.printer_limit_reached(user.id, device_uid)) is not None:
        raise _refuse("link_failed", user, check, "too_many_printers",
                      link_service.TooManyPrinters(limit), device_uid=device_uid)
    from tsd_server.discovery.ip_match import announcements

    for _ in range(3):  # an expired offer ended, then one collision with another request
        row = announcements.find_live(device_uid, check.household or "", settings, now)
        if row is None:
            raise _refuse("link_failed", user, check, "not_found", ApiError(
                404, "not_found", "No printer with this id is announcing near you."),
                device_uid=device_uid)
        existing = row.offer
        if existing is not None and is_live(existing, now):
            if existing.user_id == user.id:
                return existing
            raise _refuse("link_failed", user, check, "offer_pending", ApiError(
                409, "offer_pending", "Someone else is linking this printer right now. Try "
                "again when their offer has ended (at most a few minutes)."),
                device_uid=device_uid)
        if existing is not None:
            # Committed alone: a row held while this waits for the account's row (below)
            # would deadlock with a log-out, which holds that row and deletes offers.
            end(existing, "expired", "expired before it was used")
            db.session.commit()
            continue  # look again: the announcement may have gone meanwhile
        locked_until = wrong_codes.locked_until(row.device_uid, now)
        if locked_until is not None:
            raise _refuse("link_failed", user, check, wrong_codes.TOO_MANY,
                          wrong_codes.refusal(locked_until, now), device_uid=device_uid)
        try:
            offer = _new_offer(row, user, check, settings, now)  # flushed: may collide
            accounts.require_session_current(user)
            kill_switch.hold_enabled(STRATEGY)
            db.session.commit()
        except IntegrityError:
            db.session.rollback()  # another request opened an offer first: look again
            continue
        return offer
    raise ApiError(409, "offer_pending", "This printer is being linked right now; try again.")


def _new_offer(row: Announcement, user: User, check: UserCheck, settings: IpMatchSettings,
               now: datetime) -> Offer:
    public_id = secrets.token_urlsafe(OFFER_ID_BYTES)
    # A link that would take the place of one of the account's printers asks for the code
    # even with confirmation off: the person sees the page that names that printer first.
    confirm = (settings.require_confirmation
               or devices.replaced_by_link(user, row.device_uid) is not None)
    offer = Offer(
        public_id=public_id, announcement_id=row.id, user_id=user.id,
        household=check.household, status=AWAITING_CONFIRMATION if confirm else PENDING_DEVICE,
        code_masked=_mask(secrets.randbelow(CODE_SPACE), public_id) if confirm else None,
        attempts_left=settings.code_attempts, created_at=now,
        expires_at=now + settings.offer_ttl)
    db.session.add(offer)
    db.session.flush()
    audit.record("ip_match_offer", actor=f"user:{user.id}", outcome=offer.status,
                 user_id=user.id, device_uid=row.device_uid, strategy=STRATEGY,
                 address=check.address,
                 detail=f"offer {public_id} for {row.name!r}, expires "
                        f"{offer.expires_at.isoformat()}")
    return offer


def owned_offer(user: User, public_id: str) -> Offer | None:
    """The user's offer with this id, or None (no hint whether someone else's exists)."""
    if not public_id or len(public_id) > 64:
        return None
    offer = db.session.scalar(select(Offer).where(Offer.public_id == public_id))
    if offer is None or offer.user_id != user.id:
        return None
    return offer


def confirm(user: User, public_id: str, typed_code: str) -> str:
    """Check the code the device showed; returns "confirmed" or raises (400 wrong_code...)."""
    settings, now = current(), utcnow()
    code = normalise_code(typed_code)
    if code is None:
        raise ApiError(400, "invalid_field", "'code' must be the 6 digits the printer shows.",
                       field="code")
    check = _checked_user("confirmation", user, settings, now)
    offer = owned_offer(user, public_id)
    if offer is None:
        raise _refuse("confirmation", user, check, "not_found", ApiError(
            404, "not_found", "No such link offer: it may have ended. Start again from "
            "'Printers near you'."))
    device_uid = offer.announcement.device_uid
    if not is_live(offer, now):
        end(offer, "expired", "expired before it was confirmed", address=check.address)
        raise _refuse("confirmation", user, check, "offer_expired", ApiError(
            410, "offer_expired", "The offer expired. Start again from 'Printers near you'."),
            device_uid=device_uid)
    if offer.household != check.household or offer.announcement.household != offer.household:
        raise _refuse("confirmation", user, check, HOUSEHOLD_CHANGED,
                      Ineligible(HOUSEHOLD_CHANGED), device_uid=device_uid)
    if offer.status == CONFIRMED:
        return CONFIRMED
    if offer.status != AWAITING_CONFIRMATION:
        raise ApiError(409, "not_awaiting_confirmation", "This offer needs no code; the "
                       "printer finishes linking on its next announce.")
    return _try_code(offer, user, code, check, now)


def _try_code(offer: Offer, user: User, code: str, check: UserCheck, now: datetime) -> str:
    device_uid = offer.announcement.device_uid
    public_id, expected = offer.public_id, code_of(offer)
    # Reserve one try first: parallel guesses cannot get more than the configured number.
    reserved = db.session.execute(
        update(Offer).where(*_same_offer(offer), Offer.status == AWAITING_CONFIRMATION,
                            Offer.attempts_left > 0)
        .values(attempts_left=Offer.attempts_left - 1),
        execution_options={"synchronize_session": False}).rowcount
    if not reserved:
        db.session.rollback()
        raise _refuse("confirmation", user, check, "no_tries_left", ApiError(
            404, "not_found", "This offer has no tries left and is void. Start again from "
            "'Printers near you'."), device_uid=device_uid)
    # Then the device's: its wrong codes are bounded however this offer ends.
    if not wrong_codes.hold(device_uid, now):
        db.session.rollback()
        until = wrong_codes.locked_until(device_uid, now)
        raise _refuse("confirmation", user, check, wrong_codes.TOO_MANY,
                      wrong_codes.refusal(until, now), device_uid=device_uid)
    if expected is not None and hmac.compare_digest(expected, code):
        db.session.execute(
            update(Offer).where(*_same_offer(offer)).values(
                status=CONFIRMED, confirmed_at=now, confirmed_from_ip=check.address.client_ip),
            execution_options={"synchronize_session": False})
        audit.record("confirmation", actor=f"user:{user.id}", outcome="ok", user_id=user.id,
                     device_uid=device_uid, strategy=STRATEGY, address=check.address,
                     detail=f"offer {public_id}")
        db.session.commit()
        return CONFIRMED
    # Still in the reserving transaction (both rows held): count, void and audit together.
    left = db.session.scalar(select(Offer.attempts_left).where(*_same_offer(offer))) or 0
    counted = wrong_codes.count_wrong(device_uid, now)
    device_done = counted >= wrong_codes.WRONG_CODES_PER_WINDOW
    if left <= 0 or device_done:
        why = "too many wrong codes for this printer" if device_done else "too many wrong codes"
        end(offer, "voided", why, address=check.address, actor=f"user:{user.id}")
        left = 0
    if device_done:
        after = (" Too many wrong codes were typed for this printer: the offer is void and "
                 "the printer takes no new ones for now. Link it with a pairing code instead.")
    elif left:
        after = f" {left} {'try' if left == 1 else 'tries'} left."
    else:
        after = " The offer is void: start again from 'Printers near you'."
    error = ApiError(400, "wrong_code", "That is not the code the printer shows." + after,
                     attempts_left=left)
    raise _refuse("confirmation", user, check, "wrong_code", error, device_uid=device_uid,
                  detail=f"offer {public_id}: wrong code, {left} left; {counted} of "
                         f"{wrong_codes.WRONG_CODES_PER_WINDOW} for the printer")


# --- device side -----------------------------------------------------------------------

def waiting(settings: IpMatchSettings) -> dict[str, Any]:
    """The announce answer while nobody links the device."""
    return {"status": "waiting", "poll_interval": settings.poll_interval}


def device_step(row: Announcement, address: ClientAddress, settings: IpMatchSettings,
                now: datetime) -> dict[str, Any]:
    """The announce answer for a device whose announcement is current and refreshed."""
    idle = waiting(settings)
    offer = row.offer
    if offer is None:
        return idle
    if not is_live(offer, now):
        end(offer, "expired", "expired before it completed", address=address)
        db.session.commit()
        return idle
    problem = None
    if offer.household != row.household:
        problem = "device and offer are in different households"
    elif offer.user is None:
        problem = "the account no longer exists"
    if problem is not None:
        end(offer, "voided", problem, address=address)
        db.session.commit()
        return idle
    if offer.status == AWAITING_CONFIRMATION:
        if offer.code_shown_at is None:
            offer.code_shown_at = now
            audit.record("ip_match_code_shown", actor="device", outcome="ok",
                         user_id=offer.user_id, device_uid=row.device_uid, strategy=STRATEGY,
                         address=address, detail=f"offer {offer.public_id}")
            db.session.commit()
        return {**idle, "status": "confirm", "confirmation": {
            "code": code_of(offer), "account": offer.user.display_name,
            "expires_in": expires_in(offer, now)}}
    return _complete(row, offer, address, settings, now) or idle


def _complete(row: Announcement, offer: Offer, address: ClientAddress,
              settings: IpMatchSettings, now: datetime) -> dict[str, Any] | None:
    """Link the device for the offer's user, once; None when the offer cannot complete."""
    from tsd_server.discovery.ip_match import announcements

    assert address.household is not None
    problem = None
    if breaker.is_blocked(address.household, now):
        problem = "the household is blocked by the anomaly breaker"
    elif announcements.over_household_limit(address.household, settings, now):
        problem = "too many unlinked devices announce from the household"
    if problem is not None:
        audit.record("link_failed", actor="auto", outcome="refused", user_id=offer.user_id,
                     device_uid=row.device_uid, strategy=STRATEGY, address=address,
                     detail=f"offer {offer.public_id}: {problem}")
        end(offer, "voided", problem, address=address)
        db.session.commit()
        return None

    owner, status, public_id = offer.user, offer.status, offer.public_id
    uid, name, model = row.device_uid, row.name, row.model
    confirmed_from = offer.confirmed_from_ip
    # The gate: exactly one announce deletes the offer in its ready state and unexpired, and
    # goes on, after taking the account's lock, as every link does (``pending_links`` says
    # why). The time is read after the lock: it may have waited (a log-out), as for codes.
    devices.lock_links_of(offer.user_id)
    now = utcnow()
    if not is_live(offer, now):
        end(offer, "expired", "expired while the link waited for the account",
            address=address)
        db.session.commit()
        return None
    won = db.session.execute(
        delete(Offer).where(*_same_offer(offer), Offer.status == status,
                            Offer.expires_at > now),
        execution_options={"synchronize_session": False}).rowcount
    if won != 1:
        db.session.rollback()
        return None
    # The device's wrong-code count stays: it is the device_id's (wrong_codes), and a linked
    # fake printer under the same id must not take it away.
    db.session.execute(delete(Announcement).where(Announcement.id == row.id),
                       execution_options={"synchronize_session": False})
    how = (f"confirmed with the code from {confirmed_from}" if status == CONFIRMED
           else "confirmation off")
    result = link_service.link_device(
        owner=owner, device_uid=uid, name=name, model=model, strategy=STRATEGY,
        actor=f"user:{owner.id}", address=address,
        detail=f"offer {public_id}; {how}; household {address.household}")
    return {"status": "linked", "poll_interval": settings.poll_interval,
            "access_token": result.access_token, "token_type": "Bearer",
            "device": result.device_json}
