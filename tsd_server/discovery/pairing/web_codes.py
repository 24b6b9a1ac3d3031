"""Codes the web shows: a logged-in user gets ``XXXX-XXXX``, the device redeems it once.

Single use holds under concurrency: the redemption that wins is the one whose conditional
``UPDATE ... SET used_at = now WHERE used_at IS NULL AND expires_at > now`` changes the row;
any other sees zero rows and gets ``invalid_code``. The claim is committed by the link service
together with the device and its token, so a refused link (kill switch) leaves the code
unused, and a link never happens without the code being spent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import Row, bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError

from tsd_server import audit, devices, single_statement
from tsd_server.api.errors import ApiError
from tsd_server.auth import accounts
from tsd_server.client_address import ClientAddress
from tsd_server.clock import utcnow
from tsd_server.discovery import kill_switch
from tsd_server.discovery.link_service import LinkResult, link_device
from tsd_server.discovery.pairing import codes, failure_breaker
from tsd_server.extensions import db
from tsd_server.models import Device, PairingCode, User

STRATEGY = "pairing_code"
# Rows are kept this long after expiry (then deleted); the audit log keeps the history.
RETENTION = timedelta(days=1)
MAX_DRAWS = 8

INVALID_CODE_MESSAGE = ("This code is not valid: it may be mistyped, already used or expired. "
                        "Ask for a new one.")


class InvalidCode(ApiError):
    """Unknown, used, expired and malformed codes: one answer, so none can be told apart."""

    def __init__(self) -> None:
        super().__init__(400, "invalid_code", INVALID_CODE_MESSAGE)


@dataclass(frozen=True)
class IssuedCode:
    code: str  # canonical (8 letters); shown with codes.display()
    expires_at: datetime
    ttl: int

    @property
    def display(self) -> str:
        return codes.display(self.code)

    def expires_in(self) -> int:
        return max(0, int((self.expires_at - utcnow()).total_seconds()))


def ttl_seconds() -> int:
    return int(current_app.config["PAIRING_CODE_TTL"])


def issue(user: User, address: ClientAddress | None) -> IssuedCode:
    """A new code for ``user``, unique among the codes kept, committed and audited.

    The switch is read fresh: the route guard's cached "on" may be a second old, and a
    code issued after a switch-off withdrew the waiting ones would outlive it
    (``pending_links``)."""
    kill_switch.require_enabled(STRATEGY, fresh=True)
    now = utcnow()
    ttl = ttl_seconds()
    purge(now)
    for _ in range(MAX_DRAWS):
        code = codes.new_code()
        digest = codes.code_hash(code)
        if db.session.scalar(select(PairingCode.id).where(PairingCode.code_hash == digest)):
            continue
        db.session.add(PairingCode(
            code_hash=digest, user_id=user.id, created_at=now, expires_at=now + timedelta(
                seconds=ttl), created_from_ip=address.client_ip if address else None))
        audit.record("pairing_code_issued", actor=f"user:{user.id}", user_id=user.id,
                     strategy=STRATEGY, address=address, detail=f"expires in {ttl} s")
        try:
            accounts.require_session_current(user)
            kill_switch.hold_enabled(STRATEGY)
            db.session.commit()
        except IntegrityError:  # the same code drawn concurrently elsewhere
            db.session.rollback()
            continue
        return IssuedCode(code=code, expires_at=now + timedelta(seconds=ttl), ttl=ttl)
    raise RuntimeError("no free pairing code after several draws")  # ~never: 2.56e10 codes


_CODES = PairingCode.__table__
# The lookup is one statement on its own (single_statement): a wrong code, the common case
# under guessing, then costs this read and its audit row, with no transaction around them.
# Single use rests on the conditional claim in the session, not on this read.
_BY_CODE_HASH = (select(_CODES.c.id, _CODES.c.user_id, _CODES.c.created_at,
                        _CODES.c.expires_at, _CODES.c.used_at)
                 .where(_CODES.c.code_hash == bindparam("code_hash")))


def redeem(text: str, *, device_uid: str, name: str, model: str | None) -> LinkResult:
    """Link the device to the code's owner and spend the code, or raise ``InvalidCode``."""
    now = utcnow()
    code = codes.normalise(text)
    row = None
    if code is not None:
        row = single_statement.first(_BY_CODE_HASH, {"code_hash": codes.code_hash(code)})
    if row is None or row.used_at is not None or row.expires_at <= now or not _claim(row):
        db.session.rollback()  # a lost claim's transaction ends before the audit write
        failure_breaker.record_invalid_code(where="redeem", actor="device",
                                            device_uid=device_uid)
        raise InvalidCode()
    owner = db.session.get(User, row.user_id)
    assert owner is not None  # the code's row is deleted with its user

    def mark_spent(device: Device) -> None:
        db.session.execute(update(PairingCode).where(PairingCode.id == row.id)
                           .values(device_id=device.id))

    return link_device(owner=owner, device_uid=device_uid, name=name, model=model,
                       strategy=STRATEGY, actor="device", address=None,
                       detail=f"redeemed a web code issued {row.created_at.isoformat()}",
                       mark_spent=mark_spent)


def _claim(row: Row) -> bool:
    """The single-use gate: True for exactly one caller, even on concurrent redemptions.
    The account's lock comes first, as for every link (``pending_links`` says why), and the
    time is read after it: the lock may have waited for a withdrawal."""
    devices.lock_links_of(row.user_id)
    now = utcnow()
    result = db.session.execute(
        update(PairingCode)
        .where(PairingCode.id == row.id, PairingCode.used_at.is_(None),
               PairingCode.expires_at > now)
        .values(used_at=now)
        .execution_options(synchronize_session=False))
    return result.rowcount == 1


def purge(now: datetime) -> None:
    """Forget codes that expired more than ``RETENTION`` ago (committed by the caller)."""
    db.session.execute(delete(PairingCode).where(PairingCode.expires_at < now - RETENTION))
