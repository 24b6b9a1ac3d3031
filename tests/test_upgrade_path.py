"""Upgrading from the first release's schema keeps every row, and the app works on the result.

Each test builds its own database at revision 0001 (the oldest schema), writes rows with
plain SQL the way that release would have stored them, then runs the real migrations.
Both backends: SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime

import pytest
from flask_migrate import downgrade, stamp, upgrade
from sqlalchemy import inspect, text
from werkzeug.security import generate_password_hash

from tests.conftest import BACKENDS, UserSession
from tests.support import db_backends
from tests.support.skips import skip_loudly

OLDEST = "0001"
PASSWORD = "old release password"
TOKEN = "tsd_at_" + "u" * 43  # the shape tsd_server.auth.tokens issues
LINKED_AT = datetime(2026, 1, 2, 3, 4, 5)  # stored naive UTC, as UTCDateTime does


@pytest.fixture(params=BACKENDS)
def fresh_url(request, tmp_path):
    """An empty database (no tables at all) on each backend the run selected."""
    chosen = request.config.getoption("--db")
    if chosen not in ("both", request.param):
        pytest.skip(f"--db {chosen}")
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'upgrade.sqlite3'}"
        return
    server = db_backends.find_postgres()
    if server is None:
        skip_loudly("PostgreSQL is NOT reachable at 127.0.0.1:5432: upgrade test SKIPPED",
                    "TSD_TEST_REQUIRE_POSTGRES")
    name = f"tsd_upgrade_{secrets.token_hex(4)}"
    url = db_backends.create_postgres_database(server, name)
    try:
        yield url
    finally:
        db_backends.drop_postgres_database(server, name)


@pytest.fixture
def old_app(fresh_url, tmp_path, monkeypatch):
    from tsd_server import create_app
    from tsd_server.extensions import db

    monkeypatch.setenv("TSD_INSTANCE_PATH", str(tmp_path / "instance"))
    application = create_app({"TESTING": True, "SECRET_KEY": "upgrade-" + secrets.token_hex(8),
                              "DATABASE_URL": fresh_url, "RATELIMIT_STORAGE_URI": "memory://"})
    yield application
    with application.app_context():
        db.session.remove()
        db.engine.dispose()


def insert_first_release_rows(db) -> dict:
    """Rows as release 0001 wrote them: a user, a linked and a revoked device, audit rows."""
    from tsd_server.auth.tokens import token_hash, token_hint

    password_hash = generate_password_hash(PASSWORD)
    with db.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO users (id, email, display_name, password_hash, is_admin, created_at) "
            "VALUES (1, 'old@example.org', 'Old Timer', :hash, :false, :at), "
            "(2, 'admin@example.org', 'Admin', :hash, :true, :at)"),
            {"hash": password_hash, "false": False, "true": True, "at": LINKED_AT})
        conn.execute(text(
            "INSERT INTO devices (id, owner_id, device_uid, name, model, linked_via, linked_at, "
            "linked_from_ip, token_hash, token_hint, revoked_at, needs_relink, last_seen_at) "
            "VALUES (1, 1, 'printer-old-0001', 'Workshop Mk3', 'Mk3', 'pairing_code', :at, "
            "'8.8.8.8', :hash, :hint, NULL, :false, NULL), "
            "(2, 1, 'printer-old-0002', 'Revoked one', NULL, 'ip_match', :at, '1.1.1.1', NULL, "
            "NULL, :at, :true, :at)"),
            {"at": LINKED_AT, "hash": token_hash(TOKEN), "hint": token_hint(TOKEN),
             "false": False, "true": True})
        conn.execute(text(
            "INSERT INTO audit_events (id, at, event, actor, user_id, device_id, device_uid, "
            "strategy, client_ip, peer_ip, forwarded_for, household, outcome, detail) VALUES "
            "(1, :at, 'link', 'user:1', 1, 1, 'printer-old-0001', 'pairing_code', '8.8.8.8', "
            "'10.0.0.2', :chain, '8.8.8.8/32', 'ok', NULL), "
            "(2, :at, 'revocation', 'cli', 1, 2, 'printer-old-0002', 'ip_match', NULL, NULL, "
            "NULL, NULL, 'ok', 'incident 2026-01')"),
            {"at": LINKED_AT, "chain": json.dumps(["8.8.8.8"])})
        if db.engine.dialect.name == "postgresql":
            # Rows given explicit ids leave the sequences behind; the old release used them.
            for table in ("users", "devices", "audit_events"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                  f"(SELECT MAX(id) FROM {table}))"))
    return snapshot(db)


def snapshot(db) -> dict:
    """Every column of the first release's tables, as plain values."""
    tables = {"users": "id, email, display_name, password_hash, is_admin, created_at",
              "devices": "id, owner_id, device_uid, name, model, linked_via, linked_at, "
                         "linked_from_ip, token_hash, token_hint, revoked_at, needs_relink, "
                         "last_seen_at",
              "audit_events": "id, at, event, actor, user_id, device_id, device_uid, strategy, "
                              "client_ip, peer_ip, household, outcome, detail"}
    with db.engine.connect() as conn:
        return {table: [tuple(row) for row in conn.execute(
            text(f"SELECT {columns} FROM {table} ORDER BY id"))]
            for table, columns in tables.items()}


def current_revision(db) -> str | None:
    with db.engine.connect() as conn:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def head_revision(app) -> str:
    from alembic.script import ScriptDirectory

    config = app.extensions["migrate"].migrate.get_config()
    return ScriptDirectory.from_config(config).get_current_head()


def test_upgrade_from_first_release_keeps_data_and_the_app_works(old_app):
    from tsd_server.extensions import db
    from tsd_server.models import AuditEvent, Device, User

    with old_app.app_context():
        upgrade(revision=OLDEST)
        assert current_revision(db) == OLDEST
        before = insert_first_release_rows(db)
        upgrade()
        assert current_revision(db) == head_revision(old_app)
        assert snapshot(db) == before

        # Through the models too: aware UTC times, JSON chains, booleans as booleans.
        user = db.session.get(User, 1)
        assert user.email == "old@example.org" and user.check_password(PASSWORD)
        device = db.session.get(Device, 1)
        assert device.linked_at == LINKED_AT.replace(tzinfo=UTC) and device.is_active
        assert db.session.get(Device, 2).needs_relink is True
        assert db.session.get(AuditEvent, 1).forwarded_for == ["8.8.8.8"]
        db.session.remove()

    browser = UserSession(old_app.test_client(), "old@example.org", PASSWORD,
                          {"REMOTE_ADDR": "8.8.8.8"})
    listed = browser.get("/api/v1/devices").get_json()["devices"]
    assert {d["id"] for d in listed} >= {"printer-old-0001"}
    me = old_app.test_client().get("/api/v1/device/me",
                                   headers={"Authorization": f"Bearer {TOKEN}"})
    assert me.status_code == 200, me.get_json()
    assert me.get_json()["device"]["id"] == "printer-old-0001"
    assert me.get_json()["owner"]["display_name"] == "Old Timer"

    # New rows after old ones: ids continue, nothing collides with the upgraded data.
    from tsd_server.auth.accounts import create_user

    with old_app.app_context():
        assert create_user("new@example.org", "a new password").id == 3


def schema_differences(db) -> list:
    """What the database's schema lacks or has beyond the models (types compared too)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, db.metadata)


def test_upgraded_schema_matches_the_models(old_app):
    """No drift: upgrading from 0001 gives exactly the tables and columns the code expects."""
    from tsd_server.extensions import db

    with old_app.app_context():
        upgrade(revision=OLDEST)
        insert_first_release_rows(db)
        upgrade()
        assert schema_differences(db) == []


# Made by 0003 and 0004, in an order that drops referencing tables first.
TABLES_OF_0003_AND_0004 = ("ip_match_offers", "ip_match_household_accounts",
                           "ip_match_household_blocks", "ip_match_announcements",
                           "device_authorizations", "pairing_codes")


def test_a_database_of_the_first_commit_upgrades(old_app):
    """The first commit (f764fba) shipped 0003 and 0004 as empty placeholders: its databases
    are stamped 0004 without those tables, and 0007 failed on them (no such table)."""
    from tsd_server.extensions import db

    with old_app.app_context():
        upgrade(revision="0002")
        stamp(revision="0004")
        before = insert_first_release_rows(db)
        upgrade()
        assert current_revision(db) == head_revision(old_app)
        assert snapshot(db) == before
        assert schema_differences(db) == []


def test_a_database_with_some_of_those_tables_is_refused_by_name(old_app, capfd):
    """No release left part of 0003's tables behind: guessing would fail later, unclearly."""
    from tsd_server.extensions import db

    with old_app.app_context():
        upgrade(revision="0004")
        with db.engine.begin() as conn:
            conn.execute(text("DROP TABLE ip_match_offers"))
        with pytest.raises(SystemExit):  # flask db upgrade exits 1 with the message
            upgrade()
        assert current_revision(db) == "0004"
    refused = capfd.readouterr().err
    assert "0003's tables are only partly there (missing: ip_match_offers)" in refused


def test_a_database_of_the_first_commit_left_at_0006_by_that_failure_upgrades(old_app):
    """SQLite does not roll DDL back: the failed upgrade left such a database at 0006, with
    0005's and 0006's changes and still without the tables of 0003 and 0004."""
    from tsd_server.extensions import db

    with old_app.app_context():
        upgrade(revision="0006")
        with db.engine.begin() as conn:
            for table in TABLES_OF_0003_AND_0004:
                conn.execute(text(f"DROP TABLE {table}"))
        before = insert_first_release_rows(db)
        upgrade()
        assert current_revision(db) == head_revision(old_app)
        assert snapshot(db) == before
        assert schema_differences(db) == []


def test_downgrade_to_base_and_upgrade_again(old_app):
    from tsd_server.auth.accounts import create_user, find_user
    from tsd_server.extensions import db

    with old_app.app_context():
        upgrade()
        head_tables = set(inspect(db.engine).get_table_names())
        downgrade(revision="base")
        assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
        upgrade()
        assert set(inspect(db.engine).get_table_names()) == head_tables
        assert current_revision(db) == head_revision(old_app)
        create_user("again@example.org", "round trip password")
        assert find_user("again@example.org").check_password("round trip password")
        db.session.remove()


def test_each_step_downgrades_and_upgrades(old_app):
    """Every migration's downgrade undoes its upgrade, one step at a time, with data present."""
    from alembic.script import ScriptDirectory

    from tsd_server.extensions import db

    with old_app.app_context():
        config = old_app.extensions["migrate"].migrate.get_config()
        revisions = [r.revision for r in ScriptDirectory.from_config(config).walk_revisions()]
        revisions.reverse()  # oldest first
        assert revisions[0] == OLDEST
        upgrade(revision=OLDEST)
        before = insert_first_release_rows(db)
        for revision in revisions[1:]:
            tables_before = set(inspect(db.engine).get_table_names())
            upgrade(revision=revision)
            downgrade(revision="-1")
            inspector = inspect(db.engine)
            assert set(inspector.get_table_names()) == tables_before, revision
            upgrade(revision=revision)
        assert snapshot(db) == before


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

