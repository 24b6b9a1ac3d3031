"""Links an account has set in motion but that have not happened yet, withdrawn at once.

Three kinds outlive the moment they were made: a web code the account issued that no
device has redeemed yet, a device flow the account approved whose device has not collected
its token yet, and an ip_match offer the account made (confirmed or not) that the printer
has not completed yet. Whoever held the account's session (a stolen cookie, a leaked password) can
prepare either and use it after the owner has cleaned up. So when the owner or an operator
removes the account's printers, the password changes (or an operator sets one), or the
owner logs out everywhere, these go too: each is made unusable and audited
(``revocation`` / ``withdrawn``). A strategy switched off withdraws
every account's waiting links of that strategy, for the same reason.

Order against a redemption, a token collection or an offer's completion running at the
same moment: each takes the account's lock (``devices.lock_links_of``) and then claims its
row (a conditional UPDATE or DELETE) before it links. Call ``withdraw`` holding that lock
too, in the same transaction: a link in progress then either finishes first or finds its
row withdrawn, and no link can claim a row between this and the commit (which is what
makes an ending of the account's sessions hold: a code that a request of an ended session
committed while the ending waited for it is found here and cannot be redeemed first).
``withdraw_strategies`` runs after a switch-off has committed, holding no account's lock:
a link then re-reads the switch before it commits (``kill_switch.hold_enabled``).
``withdraw_made_in`` (an incident revoke) holds none either: it waits for a link that has
claimed one of its rows, and the revoke then finds that link among those it revokes.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, or_, select, true, update

from tsd_server import audit
from tsd_server.clock import utcnow
from tsd_server.extensions import db
from tsd_server.models import DeviceAuthorization, PairingCode, User
from tsd_server.models.ip_match import Announcement, Offer
from tsd_server.models.pairing import APPROVED, DENIED, PENDING

WEB_CODE_STRATEGY = "pairing_code"
QR_STRATEGY = "qr_code"
OFFER_STRATEGY = "ip_match"
# Codes and approvals that expired this recently are withdrawn too: a link compares the
# expiry with its own clock, which may be behind this one (another host, or read before
# the link waited for the account's lock). Far under the day they are kept (RETENTION).
CLOCK_SKEW_ALLOWANCE = timedelta(minutes=10)


def withdraw(user: User, *, actor: str, why: str) -> int:
    """Spend the account's unredeemed web codes, deny its uncollected approvals and delete
    its ip_match offers, one ``revocation`` audit row each; the caller holds the account's
    lock (see above) and commits. Returns how many were withdrawn (and audited)."""
    return _withdraw(codes=PairingCode.user_id == user.id,
              approvals=DeviceAuthorization.decided_by_id == user.id,
              offers=Offer.user_id == user.id, actor=actor, why=why)


def withdraw_strategies(strategies: set[str], *, actor: str, why: str) -> int:
    """The same for every account, for what would link through ``strategies``: a switch-off
    must not leave links waiting to happen once the strategy is switched on again (an
    approval made during an incident, collected afterwards, would fall outside its window).
    Web codes belong to pairing_code, offers to ip_match, approvals to the strategy they
    were made through, and printers' requests an account has reached but not decided to the
    way it reached them (denied): bound to that account, one would otherwise be approved
    once the strategy is on again (a QR link opened before a QR switch-off, a code guessed
    during a wave of guesses). The caller commits."""
    return _withdraw(codes=true() if WEB_CODE_STRATEGY in strategies else None,
                     approvals=DeviceAuthorization.decided_via.in_(sorted(strategies)),
                     offers=true() if OFFER_STRATEGY in strategies else None, actor=actor,
                     why=why) + _deny_reached({
                         QR_STRATEGY: DeviceAuthorization.qr_opened_at.is_not(None),
                         WEB_CODE_STRATEGY: and_(DeviceAuthorization.bound_at.is_not(None),
                                                 DeviceAuthorization.qr_opened_at.is_(None)),
                     }, strategies, actor=actor, why=why)


def withdraw_made_in(strategies: set[str], since: datetime, until: datetime, *, actor: str,
                     why: str) -> int:
    """The same for what was set in motion through ``strategies`` in [since, until): web
    codes issued, approvals given and offers made in it, and printers' requests reached in
    it but not decided yet (denied). An incident revoke takes them, or an approval given in
    the window and collected after the revoke would link a printer that the revoke, which
    finds links by when they completed, never sees. The caller commits."""
    def made_in(column) -> ColumnElement[bool]:
        return and_(column >= since, column < until)

    return _withdraw(
        codes=made_in(PairingCode.created_at) if WEB_CODE_STRATEGY in strategies else None,
        approvals=and_(DeviceAuthorization.decided_via.in_(sorted(strategies)),
                       made_in(DeviceAuthorization.decided_at)),
        offers=made_in(Offer.created_at) if OFFER_STRATEGY in strategies else None,
        actor=actor, why=why) + _deny_reached({
            # Its QR link opened in the window, or first reached by its code in it (a link
            # opened first sets bound_at to the same time), whatever happened to it since.
            QR_STRATEGY: made_in(DeviceAuthorization.qr_opened_at),
            WEB_CODE_STRATEGY: and_(made_in(DeviceAuthorization.bound_at), or_(
                DeviceAuthorization.qr_opened_at.is_(None),
                DeviceAuthorization.qr_opened_at != DeviceAuthorization.bound_at)),
        }, strategies, actor=actor, why=why)


def _deny_reached(reached_by: dict[str, ColumnElement[bool]], strategies: set[str], *,
                  actor: str, why: str) -> int:
    """Deny the printers' requests an account reached through one of ``strategies`` (as
    ``reached_by`` selects them, per strategy) and has not decided yet: whoever holds one
    could otherwise approve it later and take a printer it reached during the incident."""
    ways = {name: condition for name, condition in reached_by.items() if name in strategies}
    if not ways:
        return 0
    now = utcnow()
    # Those expired a moment ago by this clock too, as in _withdraw: the host deciding one
    # may be behind this one. Audited, and counted, only if still live by this clock.
    denied = db.session.execute(
        update(DeviceAuthorization)
        .where(or_(*ways.values()), DeviceAuthorization.status == PENDING,
               DeviceAuthorization.expires_at > now - CLOCK_SKEW_ALLOWANCE)
        .values(status=DENIED)
        .returning(DeviceAuthorization.bound_to_id, DeviceAuthorization.device_uid,
                   DeviceAuthorization.qr_opened_at, DeviceAuthorization.expires_at)
        .execution_options(synchronize_session=False)).all()
    live = [row for row in denied if row.expires_at > now]
    only = next(iter(ways)) if len(ways) == 1 else None  # the strategy that denied it
    audit.record_many("revocation", actor=actor, outcome="withdrawn", rows=[
        {"user_id": user_id, "device_uid": device_uid,
         "strategy": only or (QR_STRATEGY if qr_opened_at else WEB_CODE_STRATEGY),
         "detail": f"printer's request reached, not decided yet: {why}"}
        for user_id, device_uid, qr_opened_at, _ in live])
    return len(live)


def _withdraw(*, codes: ColumnElement[bool] | None, approvals: ColumnElement[bool],
              offers: ColumnElement[bool] | None, actor: str, why: str) -> int:
    """Withdraw the waiting links each condition selects (None: none of that kind); how
    many were still usable (and are audited)."""
    now = utcnow()
    recent = now - CLOCK_SKEW_ALLOWANCE
    # Marked spent, a state every redemption's claim checks whatever its clock says.
    spent_codes = db.session.execute(
        update(PairingCode)
        .where(codes, PairingCode.used_at.is_(None), PairingCode.expires_at > recent)
        .values(used_at=now)
        .returning(PairingCode.user_id, PairingCode.created_at, PairingCode.expires_at)
        .execution_options(synchronize_session=False)).all() if codes is not None else []
    denied = db.session.execute(
        update(DeviceAuthorization)
        .where(approvals, DeviceAuthorization.status == APPROVED,
               DeviceAuthorization.token_issued_at.is_(None),
               DeviceAuthorization.expires_at > recent)
        .values(status=DENIED)
        .returning(DeviceAuthorization.decided_by_id, DeviceAuthorization.device_uid,
                   DeviceAuthorization.decided_via, DeviceAuthorization.expires_at)
        .execution_options(synchronize_session=False)).all()
    deleted = db.session.execute(
        delete(Offer).where(offers)
        .returning(Offer.user_id, Offer.public_id, Offer.status, Offer.announcement_id)
        .execution_options(synchronize_session=False)).all() if offers is not None else []
    printers = dict(db.session.execute(
        select(Announcement.id, Announcement.device_uid)
        .where(Announcement.id.in_([offer.announcement_id for offer in deleted]))).all()
    ) if deleted else {}

    # Audited only what was still usable by this clock: one that expired a moment ago is
    # spent all the same, but an operator counting what a thief held must not count it.
    # One INSERT for them all: a switch-off or an incident revoke withdraws thousands.
    live_codes = [row for row in spent_codes if row.expires_at > now]
    live_approvals = [row for row in denied if row.expires_at > now]
    audit.record_many("revocation", actor=actor, outcome="withdrawn", rows=[
        *({"user_id": user_id, "device_uid": None, "strategy": WEB_CODE_STRATEGY,
           "detail": f"unused web code issued {created_at.isoformat()}: {why}"}
          for user_id, created_at, _ in live_codes),
        *({"user_id": user_id, "device_uid": device_uid, "strategy": via,
           "detail": f"approved, token not collected yet: {why}"}
          for user_id, device_uid, via, _ in live_approvals),
        *({"user_id": user_id, "device_uid": printers.get(announcement_id),
           "strategy": OFFER_STRATEGY,
           "detail": f"offer {public_id} ({status}), printer not linked yet: {why}"}
          for user_id, public_id, status, announcement_id in deleted)])
    return len(live_codes) + len(live_approvals) + len(deleted)
