"""Writing audit rows. The caller commits, so the row lands with the change it describes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import has_request_context
from flask_login import current_user
from sqlalchemy import insert

from tsd_server import single_statement
from tsd_server.clock import utcnow
from tsd_server.extensions import db
from tsd_server.models.audit import AuditEvent

if TYPE_CHECKING:
    from tsd_server.client_address import ClientAddress
    from tsd_server.models import Device

MAX_DETAIL = 2000


def request_actor() -> tuple[str, int | None]:
    """Who this request acts as, for an audit row: ``("user:<id>", id)`` when logged in,
    else ``("anonymous", None)``."""
    if current_user.is_authenticated:
        return f"user:{current_user.id}", current_user.id
    return "anonymous", None


def record(
    event: str,
    *,
    actor: str,
    outcome: str = "ok",
    user_id: int | None = None,
    device: Device | None = None,
    device_uid: str | None = None,
    strategy: str | None = None,
    address: ClientAddress | None = None,
    detail: str | None = None,
) -> AuditEvent:
    """Add an audit row to the session. ``address`` defaults to the current request's record."""
    row = AuditEvent(**_fields(event, actor=actor, outcome=outcome, user_id=user_id,
                               device=device, device_uid=device_uid, strategy=strategy,
                               address=address, detail=detail))
    db.session.add(row)
    return row


def record_many(event: str, *, actor: str, rows: list[dict[str, Any]], outcome: str = "ok",
                detail: str | None = None) -> None:
    """Rows of one event that differ only in ``user_id``, ``device_id``, ``device_uid``,
    ``strategy`` and ``detail`` (``rows``), in one multi-row INSERT in the session's
    transaction: an incident revoke writes one per device and per withdrawn link, and an
    ORM object each cost more than the revoke's own work. The caller commits."""
    if not rows:
        return
    address = _request_address()
    common = _fields(event, actor=actor, outcome=outcome, user_id=None, device=None,
                     device_uid=None, strategy=None, address=address, detail=None)
    db.session.execute(_INSERT, [
        {**common, **row, "detail": _detail(row.get("detail", detail), address)}
        for row in rows])


def record_now(
    event: str,
    *,
    actor: str,
    outcome: str = "ok",
    user_id: int | None = None,
    device_uid: str | None = None,
    strategy: str | None = None,
    address: ClientAddress | None = None,
    detail: str | None = None,
) -> None:
    """Write the row ``record`` would add, committed at once as one statement of its own.

    For a request whose only write is its audit row (a refused code): one round trip instead
    of a transaction. Never call it while the session holds uncommitted writes
    (see ``single_statement``).
    """
    single_statement.rowcount(_INSERT, _fields(
        event, actor=actor, outcome=outcome, user_id=user_id, device=None,
        device_uid=device_uid, strategy=strategy, address=address, detail=detail))


# Built once: the row's values come as parameters, so each call skips building a statement.
_INSERT = insert(AuditEvent)


def _fields(event: str, *, actor: str, outcome: str, user_id: int | None,
            device: Device | None, device_uid: str | None, strategy: str | None,
            address: ClientAddress | None, detail: str | None) -> dict[str, Any]:
    """The row's columns; ``address`` defaults to the current request's record."""
    if address is None:
        address = _request_address()
    return {
        "at": utcnow(),
        "event": event,
        "actor": actor,
        "outcome": outcome,
        "user_id": user_id if user_id is not None else (device.owner_id if device else None),
        "device_id": device.id if device is not None else None,
        "device_uid": device_uid or (device.device_uid if device is not None else None),
        "strategy": strategy,
        "client_ip": address.client_ip if address else None,
        "peer_ip": address.peer_ip if address else None,
        "forwarded_for": list(address.forwarded_for) if address else None,
        "household": address.household if address else None,
        "detail": _detail(detail, address),
    }


def _request_address() -> ClientAddress | None:
    """The current request's client-address record; None outside a request."""
    if not has_request_context():
        return None
    from tsd_server.client_address import for_request

    return for_request()


def _detail(detail: str | None, address: ClientAddress | None) -> str | None:
    """The caller's detail, bounded. When the proxy's headers contradicted each other, the
    row's client_ip is empty and forwarded_for holds only X-Forwarded-For's claim, so the
    competing claim is added here: an operator sees both (``contradictory_forwarded_headers:
    X-Real-IP names 8.8.4.4``)."""
    if address is not None and address.contradiction is not None:
        claim = f"{address.ineligibility_reason}: {address.contradiction}"
        detail = f"{detail}; {claim}" if detail else claim
    return detail[:MAX_DETAIL] if detail else None
