"""The device side: announce, bind the device_secret, expire and purge.

A device announces every ``poll_interval`` seconds until it is linked. The first announce
binds its ``device_secret`` (stored as SHA-256) to its ``device_id``; while that
announcement lives, another secret gets 409, so nobody else can answer for the device or
receive its token. An announcement is listed for at least ``IP_MATCH_ANNOUNCE_TTL``
seconds after the last announce; after that it goes, together with its binding and any
offer -- but not the device's wrong-code count, which is kept by device_id in its own table
for a day after the last wrong code, whatever becomes of announcements and links
(``wrong_codes``).

``last_seen_at`` is written at most every ``IP_MATCH_LAST_SEEN_WRITE_INTERVAL`` seconds
(no write per announce), so it lags the real last announce by less than that. Liveness
is therefore counted from ``last_seen_at`` + write interval (``live_since``): a silent
device stays at least the TTL after its last announce, as documented, and is gone at most
TTL + write interval after it. The settings check poll interval + write interval < TTL,
so a device announcing every ``poll_interval`` stays listed even when announces come up
to the write interval late, and a silent one is gone within twice the TTL.

Refused announces of devices the server does not know yet are logged, not audited, so a
broken proxy cannot flood the audit table; everything that changes state is audited.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, ScalarSelect, bindparam, delete, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from tsd_server import audit, audit_throttle, client_address, single_statement
from tsd_server.api.errors import ApiError
from tsd_server.client_address import ClientAddress
from tsd_server.clock import utcnow
from tsd_server.discovery.ip_match import breaker, offers, wrong_codes
from tsd_server.discovery.ip_match.eligibility import (
    HOUSEHOLD_BLOCKED,
    HOUSEHOLD_LIMIT,
    STRATEGY,
    Ineligible,
)
from tsd_server.discovery.ip_match.settings import IpMatchSettings, current
from tsd_server.extensions import db
from tsd_server.models.ip_match import Announcement, Offer, WrongCodeCount
from tsd_server.rate_limit_keys import address_key

log = logging.getLogger(__name__)

ACTOR = "device"


@dataclass(frozen=True)
class AnnounceRequest:
    device_uid: str
    device_secret: str
    name: str
    model: str | None
    agent_version: str | None


def secret_hash(secret: str) -> str:
    """SHA-256: the secret is long and random (checked on input), so a fast hash is right."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def live_since(settings: IpMatchSettings, now: datetime) -> datetime:
    """Announcements whose ``last_seen_at`` is after this moment are live.

    The write interval is added because ``last_seen_at`` may lag the last announce by up to
    that much: without it a device could go before the TTL after its last announce.
    """
    return now - settings.announce_ttl - settings.last_seen_write_interval


def announce(request: AnnounceRequest) -> dict[str, Any]:
    """Handle one announce and answer the device (waiting / confirm / linked)."""
    settings, now = current(), utcnow()
    address = client_address.for_request()
    if not address.eligible:
        log.info("ip_match announce of %s refused: %s", request.device_uid,
                 address.ineligibility_reason)
        raise Ineligible(address.ineligibility_reason or "")
    household = address.household
    assert household is not None
    if _quiet_repeat(request, address, settings, now):
        return offers.waiting(settings)
    if breaker.is_blocked(household, now):
        raise Ineligible(HOUSEHOLD_BLOCKED)

    row = _live_row(request.device_uid, settings, now)
    if row is None:
        try:
            row = _register(request, address, settings, now)
        except IntegrityError:
            # Another process registered this device_id a moment ago: answer as to a repeat.
            db.session.rollback()
            row = _live_row(request.device_uid, settings, now)
            if row is None:
                raise
    if not hmac.compare_digest(row.secret_hash, secret_hash(request.device_secret)):
        # Anyone who knows a live device's id can send these at the announce limit's pace.
        if audit_throttle.first_this_minute("tsd-audit-secret-mismatch", address_key()):
            audit.record("ip_match_announce", actor=ACTOR, outcome="secret_mismatch",
                         device_uid=request.device_uid, strategy=STRATEGY, address=address,
                         detail="another device_secret is bound to this device_id (audited "
                                "once a minute per address at most)")
            db.session.commit()
        raise ApiError(409, "device_id_taken", "Another device is announcing with this "
                       "device_id. Each device needs its own device_id and device_secret.")
    _refresh(row, request, address, settings, now)
    return offers.device_step(row, address, settings, now)


_ANNOUNCEMENTS = Announcement.__table__
# A quiet repeat in one statement (single_statement): the columns an announce may change,
# whether an offer waits, and the household's block.
_QUIET_REPEAT = select(
    _ANNOUNCEMENTS.c.secret_hash, _ANNOUNCEMENTS.c.household, _ANNOUNCEMENTS.c.client_ip,
    _ANNOUNCEMENTS.c.name, _ANNOUNCEMENTS.c.model, _ANNOUNCEMENTS.c.agent_version,
    _ANNOUNCEMENTS.c.last_seen_at,
    exists().where(Offer.announcement_id == _ANNOUNCEMENTS.c.id).label("has_offer"),
    breaker.blocked_until(bindparam("household")).label("blocked_until"),
).where(_ANNOUNCEMENTS.c.device_uid == bindparam("device_uid"))


def _quiet_repeat(request: AnnounceRequest, address: ClientAddress,
                  settings: IpMatchSettings, now: datetime) -> bool:
    """Is this the common announce that changes nothing? Then "waiting" is the whole answer.

    Anything else (unknown or expired device, another secret, a change, a due last_seen
    write, an offer, a blocked household) goes the full way, which re-reads and handles it.
    """
    row = single_statement.first(_QUIET_REPEAT, {"device_uid": request.device_uid,
                                                 "household": address.household})
    return (row is not None and not row.has_offer
            and not breaker.blocks(row.blocked_until, now)
            and row.last_seen_at > live_since(settings, now)
            and not _last_seen_due(row.last_seen_at, settings, now)
            and not _changes(row, request, address)
            and hmac.compare_digest(row.secret_hash, secret_hash(request.device_secret)))


def _live_row(device_uid: str, settings: IpMatchSettings, now: datetime) -> Announcement | None:
    """The device's live announcement; an expired one is deleted (binding and offer too)."""
    # The offer comes in the same query: the answer needs it (one round trip, not two).
    row = db.session.scalar(select(Announcement).where(Announcement.device_uid == device_uid)
                            .options(joinedload(Announcement.offer)))
    if row is not None and row.last_seen_at <= live_since(settings, now):
        if row.offer is not None:
            offers.end(row.offer, "expired", "the device stopped announcing")
        db.session.delete(row)
        db.session.commit()
        return None
    return row


def _register(request: AnnounceRequest, address: ClientAddress, settings: IpMatchSettings,
              now: datetime) -> Announcement:
    """Bind the secret to the device_id; refuse beyond one over the household cap."""
    household = address.household
    assert household is not None
    purge_expired(settings, now)
    count = live_count(household, settings, now)
    if count > settings.max_devices_per_household:
        db.session.commit()
        log.info("ip_match announce of %s refused: household %s is over its cap",
                 request.device_uid, household)
        raise Ineligible(HOUSEHOLD_LIMIT)
    row = Announcement(device_uid=request.device_uid,
                       secret_hash=secret_hash(request.device_secret), household=household,
                       client_ip=address.client_ip, name=request.name, model=request.model,
                       agent_version=request.agent_version, first_seen_at=now,
                       last_seen_at=now)
    db.session.add(row)
    db.session.flush()
    audit.record("ip_match_announce", actor=ACTOR, outcome="registered",
                 device_uid=request.device_uid, strategy=STRATEGY, address=address,
                 detail=f"name {request.name!r}")
    if count + 1 > settings.max_devices_per_household:
        audit.record("ip_match_household_limit", actor="auto", outcome="limit_exceeded",
                     device_uid=request.device_uid, strategy=STRATEGY, address=address,
                     detail=f"{count + 1} unlinked devices announcing (limit "
                            f"{settings.max_devices_per_household}); nearby lists none")
    db.session.commit()
    return row


def _changes(row: Any, request: AnnounceRequest, address: ClientAddress) -> dict[str, Any]:
    """The announcement's columns this announce changes (``row``: a model or a Core row)."""
    sent = {"household": address.household, "client_ip": address.client_ip,
            "name": request.name, "model": request.model,
            "agent_version": request.agent_version}
    return {column: value for column, value in sent.items() if getattr(row, column) != value}


def _last_seen_due(last_seen_at: datetime, settings: IpMatchSettings, now: datetime) -> bool:
    return now - last_seen_at >= settings.last_seen_write_interval


def _refresh(row: Announcement, request: AnnounceRequest, address: ClientAddress,
             settings: IpMatchSettings, now: datetime) -> None:
    """Record what changed; a quiet repeat within the write interval writes nothing."""
    changes = _changes(row, request, address)
    if "household" in changes:
        assert address.household is not None
        if over_household_limit(address.household, settings, now):
            raise Ineligible(HOUSEHOLD_LIMIT)
        if row.offer is not None:
            offers.end(row.offer, "voided", "the device moved to another household",
                       address=address)
        # At most once a minute per device: a device sent from two addresses in turn
        # (IPv4 and IPv6) would otherwise write a row per announce.
        if audit_throttle.first_this_minute("tsd-audit-household-changed", row.device_uid):
            audit.record("ip_match_announce", actor=ACTOR, outcome="household_changed",
                         device_uid=row.device_uid, strategy=STRATEGY, address=address,
                         detail=f"from {row.household} (audited once a minute per device "
                                "at most)")
    if row.offer is not None and changes.keys() & {"name", "model"}:
        # The person picked the printer by what it said about itself and is to read the
        # code off its screen. Renamed once it holds the code, a device could show it in
        # its name, on the very page where the code is typed.
        offers.end(row.offer, "voided", "the device changed its name or model",
                   address=address)
    for column, value in changes.items():
        setattr(row, column, value)
    if changes or _last_seen_due(row.last_seen_at, settings, now):
        row.last_seen_at = now
        db.session.commit()


def live_devices(household: Any, since: Any) -> ScalarSelect:
    """How many announcements of the household are live (seen after ``since``)."""
    return select(func.count()).select_from(Announcement).where(
        Announcement.household == household,
        Announcement.last_seen_at > since).scalar_subquery()


def live_count(household: str, settings: IpMatchSettings, now: datetime) -> int:
    return db.session.scalar(select(live_devices(household, live_since(settings, now)))) or 0


def over_household_limit(household: str, settings: IpMatchSettings, now: datetime) -> bool:
    return live_count(household, settings, now) > settings.max_devices_per_household


_OFFERS = Offer.__table__
# What nearby shows of each live device, with its offer (if any) in the same statement.
_LIVE_IN_HOUSEHOLD = (
    select(_ANNOUNCEMENTS.c.device_uid, _ANNOUNCEMENTS.c.name, _ANNOUNCEMENTS.c.model,
           _ANNOUNCEMENTS.c.last_seen_at, _OFFERS.c.public_id, _OFFERS.c.status,
           _OFFERS.c.user_id, _OFFERS.c.expires_at)
    .outerjoin(_OFFERS, _OFFERS.c.announcement_id == _ANNOUNCEMENTS.c.id)
    .where(_ANNOUNCEMENTS.c.household == bindparam("household"),
           _ANNOUNCEMENTS.c.last_seen_at > bindparam("live_since"))
    .order_by(_ANNOUNCEMENTS.c.first_seen_at, _ANNOUNCEMENTS.c.id))


def live_in_household(household: str, settings: IpMatchSettings, now: datetime) -> list[Row]:
    """The household's live devices and their offers' columns (NULL without), read-only."""
    return single_statement.all_rows(_LIVE_IN_HOUSEHOLD, {
        "household": household, "live_since": live_since(settings, now)})


def find_live(device_uid: str, household: str, settings: IpMatchSettings,
              now: datetime) -> Announcement | None:
    """The device, only if it is live and announcing from ``household``."""
    return db.session.scalar(select(Announcement).where(
        Announcement.device_uid == device_uid, Announcement.household == household,
        Announcement.last_seen_at > live_since(settings, now)))


def purge_expired(settings: IpMatchSettings, now: datetime) -> int:
    """Delete expired announcements and their offers, and wrong-code counts that count
    nothing any more (the caller commits). A running count stays whatever becomes of the
    device's announcement: it is kept by device_id (``wrong_codes``)."""
    cutoff = live_since(settings, now)
    expired = select(Announcement.id).where(Announcement.last_seen_at <= cutoff)
    ended = db.session.execute(
        select(Offer.public_id, Offer.user_id, Offer.household, Announcement.device_uid)
        .join(Announcement, Announcement.id == Offer.announcement_id)
        .where(Offer.announcement_id.in_(expired)))
    for public_id, user_id, household, device_uid in ended:
        # No request of the device's: the household is the offer's, the address unknown.
        audit.record("ip_match_offer_ended", actor="auto", outcome="expired",
                     user_id=user_id, device_uid=device_uid, strategy=STRATEGY,
                     address=ClientAddress(client_ip=None, peer_ip=None, household=household),
                     detail=f"offer {public_id}: the device stopped announcing")
    unsynchronised = {"synchronize_session": False}
    db.session.execute(delete(Offer).where(Offer.announcement_id.in_(expired)),
                       execution_options=unsynchronised)
    db.session.execute(delete(WrongCodeCount).where(wrong_codes.not_counting(now)),
                       execution_options=unsynchronised)
    result = db.session.execute(delete(Announcement).where(Announcement.last_seen_at <= cutoff),
                                execution_options=unsynchronised)
    return result.rowcount or 0
