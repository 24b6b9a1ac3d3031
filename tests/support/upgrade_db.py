"""A database built at an old revision, with rows the way an old release wrote them.

Shared by the upgrade tests (tests/test_upgrade_path.py, tests/test_upgrade_data.py):
``old_app`` is an app on an empty database of each backend the run selected (a fresh
PostgreSQL database, dropped afterwards); the tests migrate it step by step themselves.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime

import pytest
from sqlalchemy import text
from werkzeug.security import generate_password_hash

from tests.conftest import BACKENDS
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
