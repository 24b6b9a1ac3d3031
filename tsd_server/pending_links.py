"""Links an account has set in motion but that have not happened yet, withdrawn at once.

Two kinds outlive the moment they were made: a web code the account issued that no device
has redeemed yet, and a device flow the account approved whose device has not collected
its token yet. Whoever held the account's session (a stolen cookie, a leaked password) can
prepare either and use it after the owner has cleaned up. So when the owner or an operator
removes the account's printers, or the password changes, these go too: each is made
unusable and audited (``revocation`` / ``withdrawn``).

Order against a redemption or a token collection running at the same moment: both claim
their row with a conditional UPDATE before they link, and so does this, row against row;
whichever comes second finds the row no longer usable. Call this before taking
``devices.lock_links_of`` in the same transaction (a link in progress holds its row, then
waits for that lock: taking the lock first would deadlock with it).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import update

from tsd_server import audit
from tsd_server.clock import utcnow
from tsd_server.extensions import db
from tsd_server.models import DeviceAuthorization, PairingCode, User
from tsd_server.models.pairing import APPROVED, DENIED

WEB_CODE_STRATEGY = "pairing_code"


@dataclass(frozen=True)
class Withdrawn:
    codes: int
    approvals: int


def withdraw(user: User, *, actor: str, why: str) -> Withdrawn:
    """Spend the account's unredeemed web codes and deny its uncollected approvals, one
    ``revocation`` audit row each; the caller commits."""
    now = utcnow()
    codes = db.session.scalars(
        update(PairingCode)
        .where(PairingCode.user_id == user.id, PairingCode.used_at.is_(None),
               PairingCode.expires_at > now)
        .values(expires_at=now)
        .returning(PairingCode.created_at)
        .execution_options(synchronize_session=False)).all()
    approvals = db.session.execute(
        update(DeviceAuthorization)
        .where(DeviceAuthorization.decided_by_id == user.id,
               DeviceAuthorization.status == APPROVED,
               DeviceAuthorization.token_issued_at.is_(None),
               DeviceAuthorization.expires_at > now)
        .values(status=DENIED)
        .returning(DeviceAuthorization.device_uid, DeviceAuthorization.decided_via)
        .execution_options(synchronize_session=False)).all()
    for created_at in codes:
        audit.record("revocation", actor=actor, outcome="withdrawn", user_id=user.id,
                     strategy=WEB_CODE_STRATEGY,
                     detail=f"unused web code issued {created_at.isoformat()}: {why}")
    for device_uid, via in approvals:
        audit.record("revocation", actor=actor, outcome="withdrawn", user_id=user.id,
                     device_uid=device_uid, strategy=via,
                     detail=f"approved, token not collected yet: {why}")
    return Withdrawn(codes=len(codes), approvals=len(approvals))

