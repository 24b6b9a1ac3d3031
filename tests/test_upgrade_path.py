"""Upgrading from the first release's schema keeps every row, and the app works on the result.

Each test builds its own database at revision 0001 (the oldest schema), writes rows with
plain SQL the way that release would have stored them, then runs the real migrations.
Both backends: SQLite and PostgreSQL. What single migrations do to existing rows is in
tests/test_upgrade_data.py.
"""

from __future__ import annotations

from datetime import UTC

import pytest
from flask_migrate import downgrade, stamp, upgrade
from sqlalchemy import inspect, text

from tests.conftest import UserSession
from tests.support import upgrade_db
from tests.support.upgrade_db import (
    LINKED_AT,
    OLDEST,
    PASSWORD,
    TOKEN,
    current_revision,
    head_revision,
    insert_first_release_rows,
    snapshot,
)

fresh_url = upgrade_db.fresh_url
old_app = upgrade_db.old_app


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
