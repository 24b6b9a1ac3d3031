"""What single migrations do to the rows they find: merged duplicates (0006), ids never
given out twice (0008, 0011, 0012, 0014), requests closed or left without a household
(0011, 0012). Each test builds its own database on each backend (tests/support/upgrade_db.py)
and migrates it step by step.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import text

from tests.support import upgrade_db
from tests.support.upgrade_db import (
    LINKED_AT,
    OLDEST,
    TOKEN,
    insert_first_release_rows,
    snapshot,
)

fresh_url = upgrade_db.fresh_url
old_app = upgrade_db.old_app


def test_upgrade_0006_merges_duplicate_printers_into_their_newest_row(old_app):
    """Rows a concurrent double link could leave before 0006: the newest of each printer
    stays, references follow it, and a removed row's working token stops working."""
    from sqlalchemy.exc import IntegrityError

    from tsd_server.auth.tokens import token_hash, token_hint
    from tsd_server.extensions import db

    newer = "tsd_at_" + "n" * 43
    with old_app.app_context():
        upgrade(revision=OLDEST)
        insert_first_release_rows(db)  # devices 1 (token TOKEN) and 2 (revoked) of user 1
        upgrade(revision="0005")
        with db.engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO devices (id, owner_id, device_uid, name, model, linked_via, "
                "linked_at, linked_from_ip, token_hash, token_hint, revoked_at, needs_relink) "
                "VALUES (3, 1, 'printer-old-0001', 'Workshop Mk3', 'Mk3', 'qr_code', :at, "
                "'8.8.8.8', :hash, :hint, NULL, :false), "
                "(4, 1, 'printer-old-0002', 'Revoked one', NULL, 'ip_match', :at, NULL, NULL, "
                "NULL, :at, :true), "
                "(5, 2, 'printer-old-0001', 'Admin printer', NULL, 'qr_code', :at, NULL, NULL, "
                "NULL, NULL, :false)"),
                {"at": LINKED_AT, "hash": token_hash(newer), "hint": token_hint(newer),
                 "false": False, "true": True})
        upgrade()
        with db.engine.connect() as conn:
            devices = conn.execute(text(
                "SELECT id, owner_id, device_uid FROM devices ORDER BY id")).all()
            audit = conn.execute(text(
                "SELECT id, event, device_id, device_uid, user_id, actor, detail "
                "FROM audit_events ORDER BY id")).all()
        assert [tuple(d) for d in devices] == \
            [(3, 1, "printer-old-0001"), (4, 1, "printer-old-0002"), (5, 2, "printer-old-0001")]
        # The old rows' audit trail follows the printer to its kept row.
        assert [(a.id, a.device_id) for a in audit[:2]] == [(1, 3), (2, 4)]
        # Device 1's token worked, so its removal is a revocation; device 2's had none.
        revocations = audit[2:]
        assert [(a.event, a.device_id, a.device_uid, a.user_id, a.actor) for a in revocations] \
            == [("revocation", 3, "printer-old-0001", 1, "cli")]
        assert "duplicate row 1" in revocations[0].detail
        with pytest.raises(IntegrityError), db.engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO devices (owner_id, device_uid, name, linked_via, linked_at, "
                "needs_relink) VALUES (1, 'printer-old-0001', 'Again', 'qr_code', :at, :false)"),
                {"at": LINKED_AT, "false": False})

    client = old_app.test_client()
    me_old = client.get("/api/v1/device/me", headers={"Authorization": f"Bearer {TOKEN}"})
    me_new = client.get("/api/v1/device/me", headers={"Authorization": f"Bearer {newer}"})
    assert (me_old.status_code, me_new.status_code) == (401, 200)


def add_request(uid: str) -> int:
    """A device authorization with only the columns 0007 has (the model's later ones, from
    0011, may not be there yet); its id."""
    from datetime import timedelta

    from sqlalchemy import insert

    from tsd_server.extensions import db
    from tsd_server.models import DeviceAuthorization

    now = datetime.now(UTC)
    added = db.session.execute(insert(DeviceAuthorization).values(
        device_code_hash=secrets.token_hex(32), device_uid=uid, name=uid,
        requested_at=now, poll_interval=5, expires_at=now + timedelta(minutes=15)))
    db.session.commit()
    return added.inserted_primary_key[0]


def test_upgrade_0008_keeps_rows_and_gives_no_id_out_twice(old_app):
    """Before 0008, SQLite gave a deleted newest row's id to the next row: a purged request
    or an ended offer could pass its id to a stranger's. After the upgrade (rows kept), an
    id deleted is never given out again, on either backend. (What was deleted before the
    upgrade, SQLite has no record of; the approval tag and the offers' public ids cover
    that.)"""
    from sqlalchemy import delete, select

    from tsd_server.extensions import db
    from tsd_server.models import DeviceAuthorization

    with old_app.app_context():
        upgrade(revision="0007")
        kept_id = add_request("kept-printer")
        upgrade()
        purged_id = add_request("purged-printer")
        db.session.execute(delete(DeviceAuthorization).where(DeviceAuthorization.id == purged_id))
        db.session.commit()
        assert add_request("newer-printer") > purged_id > kept_id
        assert db.session.scalar(select(DeviceAuthorization.device_uid)
                                 .where(DeviceAuthorization.id == kept_id)) == "kept-printer"
        if db.engine.dialect.name == "sqlite":
            for table in ("device_authorizations", "ip_match_offers"):
                created = db.session.scalar(text(
                    "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :name"),
                    {"name": table})
                assert "AUTOINCREMENT" in created, table
        db.session.remove()


def test_upgrade_0014_keeps_every_row_and_gives_no_account_or_printer_id_out_twice(old_app):
    """Before 0014, SQLite gave a deleted newest account's id to the next sign-up, and a
    copy of the old account's cookie logged in as it. SQLite rebuilds users and devices for
    it: every row, and every row that refers to them, must survive the rebuild."""
    from sqlalchemy import delete, func, select

    from tsd_server.auth.accounts import create_user
    from tsd_server.extensions import db
    from tsd_server.models import AuditEvent, Device, User

    with old_app.app_context():
        upgrade(revision="0013")
        before = insert_first_release_rows(db)
        upgrade()
        assert snapshot(db) == before
        with db.engine.connect() as conn:
            if db.engine.dialect.name == "sqlite":
                assert conn.execute(text("PRAGMA foreign_key_check")).all() == []
                for table in ("users", "devices"):
                    created = conn.execute(text(
                        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :name"),
                        {"name": table}).scalar()
                    assert "AUTOINCREMENT" in created, table
        leaving = create_user("leaving@example.org", "a leaving password").id
        db.session.execute(delete(User).where(User.id == leaving))
        db.session.commit()
        assert create_user("next@example.org", "the next password").id > leaving
        assert db.session.scalar(select(func.count()).select_from(Device)) == 2
        assert db.session.scalar(select(func.count()).select_from(AuditEvent)) == 2
        db.session.remove()


@pytest.mark.parametrize("before, after", [("0010", "0011"), ("0011", "0012")])
def test_migrations_after_0008_give_no_purged_id_out_again(old_app, before, after):
    """0011 rebuilds device_authorizations on SQLite (a foreign key), and 0012 adds and
    drops a column in place; a rebuilt table's AUTOINCREMENT counter would restart at the
    highest id left, so the id of a newest request purged before the upgrade would be
    given out again. Neither migration's upgrade nor its downgrade does that."""
    from sqlalchemy import delete

    from tsd_server.extensions import db
    from tsd_server.models import DeviceAuthorization

    with old_app.app_context():
        upgrade(revision=before)
        add_request("kept-printer")
        purged = add_request("purged-printer")
        db.session.execute(delete(DeviceAuthorization).where(DeviceAuthorization.id == purged))
        db.session.commit()
        upgrade(revision=after)
        newer = add_request("newer-printer")
        assert newer > purged
        db.session.execute(delete(DeviceAuthorization).where(DeviceAuthorization.id == newer))
        db.session.commit()
        downgrade(revision=before)
        assert add_request("after-downgrade") > newer
        db.session.remove()


def test_requests_from_before_0012_have_no_household(old_app):
    from sqlalchemy import select

    from tsd_server.extensions import db
    from tsd_server.models import DeviceAuthorization

    with old_app.app_context():
        upgrade(revision="0011")
        kept = add_request("kept-printer")
        upgrade(revision="0012")
        assert db.session.scalar(select(DeviceAuthorization.requested_household)
                                 .where(DeviceAuthorization.id == kept)) is None
        db.session.remove()


def test_upgrade_0011_closes_requests_whose_qr_link_was_opened(old_app):
    """Who opened a QR link before 0011 is not recorded: such a waiting request is closed to
    everyone (its code must not hand it to whoever types it); one not reached yet goes to
    the first account that reaches it."""
    from sqlalchemy import select, update

    from tsd_server.discovery.pairing import approvals
    from tsd_server.extensions import db
    from tsd_server.models import DeviceAuthorization

    with old_app.app_context():
        upgrade(revision="0010")
        opened, untouched = add_request("scanned-printer"), add_request("waiting-printer")
        db.session.execute(update(DeviceAuthorization).where(DeviceAuthorization.id == opened)
                           .values(qr_opened_at=datetime.now(UTC)))
        db.session.commit()
        upgrade(revision="0011")
        # The columns 0011 has (the model's later ones are not there yet).
        rows = {row.id: row for row in db.session.execute(select(
            DeviceAuthorization.id, DeviceAuthorization.bound_to_id,
            DeviceAuthorization.bound_at))}
        assert rows[opened].bound_at is not None and rows[opened].bound_to_id is None
        assert not approvals.is_free_or_held_by(rows[opened], 1)
        assert approvals.is_free_or_held_by(rows[untouched], 1)
        db.session.remove()
