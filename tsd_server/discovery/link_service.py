"""The link service: the only code that creates a Device and issues its access token.

Every strategy ends here. The kill switch is read again, bypassing the per-process cache,
at the moment of linking, so an offer or code handed out before a switch-off cannot
complete after it. The device, its token hash and the audit row are committed together.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from tsd_server import audit
from tsd_server.auth.tokens import new_access_token, token_hash, token_hint
from tsd_server.client_address import ClientAddress
from tsd_server.clock import utcnow
from tsd_server.discovery import kill_switch
from tsd_server.extensions import db
from tsd_server.models import Device, User


@dataclass(frozen=True)
class LinkResult:
    device: Device
    # Shown once to the device, never stored.
    access_token: str


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
) -> LinkResult:
    """Link (or re-link) a device to ``owner`` and commit, or raise ``StrategyDisabled``.

    ``address`` is where the linking request came from (recorded on the device and in the
    audit row). A device the owner already has under the same ``device_uid`` is re-linked
    in place: its old token stops working and an incident's "needs re-link" is cleared.
    On refusal, the caller's pending changes are rolled back and the attempt is audited.
    """
    current = kill_switch.state(strategy, fresh=True)
    if not current.enabled:
        db.session.rollback()
        audit.record("link_failed", actor=actor, outcome="strategy_disabled",
                     user_id=owner.id, device_uid=device_uid, strategy=strategy,
                     address=address, detail=current.reason)
        db.session.commit()
        raise kill_switch.StrategyDisabled(strategy, current)

    device = db.session.scalar(
        select(Device).where(Device.owner_id == owner.id, Device.device_uid == device_uid)
        .order_by(Device.id.desc()).limit(1)
    )
    relink = device is not None
    if device is None:
        device = Device(owner_id=owner.id, device_uid=device_uid)
        db.session.add(device)
    token = new_access_token()
    device.name = name
    device.model = model
    device.linked_via = strategy
    device.linked_at = utcnow()
    device.linked_from_ip = address.client_ip if address else None
    device.token_hash = token_hash(token)
    device.token_hint = token_hint(token)
    device.revoked_at = None
    device.needs_relink = False
    db.session.flush()
    audit.record("link", actor=actor, user_id=owner.id, device=device, strategy=strategy,
                 address=address, detail=detail or ("re-linked" if relink else None))
    db.session.commit()
    return LinkResult(device=device, access_token=token)
