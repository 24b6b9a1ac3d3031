"""Model rules that must hold the same on SQLite and PostgreSQL: foreign keys (with their
ON DELETE actions) are enforced, and time columns are always timezone-aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, StatementError

from tsd_server import audit
from tsd_server.extensions import db
from tsd_server.models import AuditEvent, Device, User


def test_foreign_keys_are_enforced(app, clock):
    with app.app_context():
        db.session.add(Device(owner_id=999_999, device_uid="printer-0001", name="x",
                              linked_via="pairing_code", linked_at=clock.now))
        with pytest.raises(IntegrityError):
            db.session.commit()
        db.session.rollback()


def test_deleting_an_account_deletes_its_devices_and_keeps_the_audit_trail(
        app, make_user, link_device):
    user_id, _, _ = make_user()
    pk, _ = link_device(user_id)
    with app.app_context():
        assert db.session.scalars(select(AuditEvent.device_id)).all() == [pk]
        db.session.delete(db.session.get(User, user_id))
        db.session.commit()
        db.session.expire_all()
        assert db.session.get(Device, pk) is None
        [row] = db.session.scalars(select(AuditEvent)).all()
        assert (row.event, row.user_id, row.device_id) == ("link", None, None)
        assert row.device_uid == "printer-0001"  # still says which device it was


def test_times_are_aware_utc_whatever_offset_they_were_given(app, make_user):
    user_id, _, _ = make_user()
    berlin = datetime(2026, 7, 1, 14, 30, tzinfo=timezone(timedelta(hours=2)))
    with app.app_context():
        row = audit.record("probe", actor="cli", user_id=user_id)
        row.at = berlin
        db.session.commit()
        db.session.expire_all()
        stored = db.session.get(AuditEvent, row.id).at
        assert stored == berlin and stored.tzinfo == UTC
        assert stored.hour == 12
        assert db.session.get(User, user_id).created_at.tzinfo == UTC


def test_naive_times_are_refused(app, make_user):
    user_id, _, _ = make_user()
    with app.app_context():
        row = audit.record("probe", actor="cli", user_id=user_id)
        row.at = datetime(2026, 7, 1, 12, 0)
        with pytest.raises(StatementError, match="naive datetime"):
            db.session.commit()
        db.session.rollback()


def test_created_at_follows_the_clock(app, clock, make_user):
    user_id, _, _ = make_user()
    with app.app_context():
        assert db.session.get(User, user_id).created_at == clock.now
