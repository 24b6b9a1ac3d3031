"""A second writer that commits the same printer between a link's read and its insert."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event
from sqlalchemy.orm import Session

TWIN_TOKEN = "tsd_at_twin"


@contextmanager
def twin_committed_before_the_insert(owner_id: int, device_uid: str) -> Iterator[list[bool]]:
    """What two links at once would do without the owner's lock: just before the link
    flushes its new Device, another connection commits a row for the same printer. Yields
    a list that holds True once the twin was written. On SQLite this works only while the
    linking transaction has written nothing yet (SQLite has one writer at a time)."""
    from tsd_server.auth.tokens import token_hash
    from tsd_server.clock import utcnow
    from tsd_server.extensions import db
    from tsd_server.models import Device

    def insert_twin(session, _context, _instances) -> None:
        if inserted or not any(isinstance(o, Device) for o in session.new):
            return
        inserted.append(True)
        with db.engine.connect() as conn:
            conn.execute(Device.__table__.insert().values(
                owner_id=owner_id, device_uid=device_uid, name="Twin", linked_via="qr_code",
                linked_at=utcnow(), token_hash=token_hash(TWIN_TOKEN)))
            conn.commit()

    inserted: list[bool] = []
    event.listen(Session, "before_flush", insert_twin)
    try:
        yield inserted
    finally:
        event.remove(Session, "before_flush", insert_twin)
