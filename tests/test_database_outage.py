"""The database out of reach: requests that need it answer 503 ``database_unavailable`` with
Retry-After (an error page on web routes), logged once a minute, never a 500 with a
traceback per request. A statement the database refuses (a bug) is still a 500.

Unreachable means a SQLite file in a folder that does not exist and a PostgreSQL port
nothing listens on (db_backends.UNREACHABLE_URLS, as in tests/test_healthz.py); a
connection that dies between two requests is a real PostgreSQL backend terminated under
the app. Also here: a bare ``postgresql://`` URL gets psycopg2 (tsd_server/database_url.py).
"""

from __future__ import annotations

import logging
import re

import psycopg2
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from tests.support.apps import another_app
from tests.support.db_backends import UNREACHABLE_URLS
from tsd_server import create_app, db_pool

CSRF_FIELD = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
WELL_FORMED_TOKEN = "tsd_at_" + "A" * 43  # passes the format check, so the database is asked


def unavailable(response) -> None:
    assert response.status_code == 503, (response.status_code, response.get_data(as_text=True))
    assert response.headers["Retry-After"] == "5"


@pytest.fixture
def unreachable_app(request, tmp_path, monkeypatch):
    monkeypatch.setenv("TSD_INSTANCE_PATH", str(tmp_path / "instance"))
    return create_app({"TESTING": True, "SECRET_KEY": "k" * 32, "DATABASE_URL": request.param,
                       "RATELIMIT_STORAGE_URI": "memory://"})


@pytest.mark.parametrize("unreachable_app", UNREACHABLE_URLS.values(),
                         ids=UNREACHABLE_URLS.keys(), indirect=True)
def test_api_and_pages_answer_503_and_the_outage_is_logged_once(unreachable_app, caplog):
    client = unreachable_app.test_client()
    token = CSRF_FIELD.search(client.get("/login").get_data(as_text=True)).group(1)
    with caplog.at_level(logging.ERROR, logger="tsd_server.api.errors"):
        for _ in range(3):
            me = client.get("/api/v1/device/me",
                            headers={"Authorization": f"Bearer {WELL_FORMED_TOKEN}"})
            unavailable(me)
            assert me.get_json() == {
                "error": "database_unavailable",
                "message": "The server's database cannot be reached right now. Try again in "
                           "a few seconds."}
        page = client.post("/login", data={"email": "ada@example.org",
                                           "password": "correct horse battery",
                                           "csrf_token": token})
    unavailable(page)
    assert page.mimetype == "text/html"
    assert "Temporarily unavailable" in page.get_data(as_text=True)
    outage_lines = [r for r in caplog.records if r.name == "tsd_server.api.errors"]
    assert len(outage_lines) == 1, [r.getMessage() for r in outage_lines]
    assert "database unavailable on GET /api/v1/device/me" in outage_lines[0].getMessage()
    assert outage_lines[0].exc_info is not None  # the cause, once, for the operator


def test_a_statement_the_database_refuses_is_still_a_500(app):
    """Only an unreachable or retry-later database is a 503: a constraint broken by a
    bug must not be dressed up as an outage the client should simply retry."""

    def broken():
        raise IntegrityError("INSERT INTO devices ...", {}, Exception("duplicate key"))

    app.add_url_rule("/api/v1/test-broken", view_func=broken)
    response = app.test_client().get("/api/v1/test-broken")
    assert response.status_code == 500
    assert response.get_json()["error"] == "internal_error"
    assert "Retry-After" not in response.headers


def test_a_logged_in_request_that_breaks_a_constraint_is_still_a_500(app, make_user, login):
    """A request whose account was deleted while it ran ends as logged out
    (tests/test_session_race.py); one whose account is still there and breaks a constraint
    is a bug, and stays a 500 that keeps the session."""

    def broken():
        raise IntegrityError("INSERT INTO pairing_codes ...", {}, Exception("foreign key"))

    app.add_url_rule("/api/v1/test-broken", view_func=broken)
    _, email, password = make_user("ada@example.org")
    client = login(email, password)
    response = client.get("/api/v1/test-broken")
    assert response.status_code == 500
    assert response.get_json()["error"] == "internal_error"
    assert client.get("/api/v1/devices").status_code == 200  # still logged in


def test_a_statement_that_cannot_run_is_a_500_on_both_databases(app):
    """SQLite reports a missing column as an OperationalError too, the class of a database
    out of reach: a skipped ``db upgrade`` must not pass for an outage to wait out."""
    from sqlalchemy import text

    from tsd_server.extensions import db

    def missing_column():
        db.session.execute(text("SELECT no_such_column FROM users"))

    app.add_url_rule("/api/v1/test-missing-column", view_func=missing_column)
    response = app.test_client().get("/api/v1/test-missing-column")
    assert response.status_code == 500, response.get_json()
    assert response.get_json()["error"] == "internal_error"


def test_a_connection_that_died_between_requests_costs_one_503(app, make_user, link_device,
                                                               monkeypatch):
    """PostgreSQL restarted, or a firewall dropped the connection, while it sat in the pool
    for less than db_pool's idle threshold: it is not pinged, so one request meets it dead.
    That request answers 503 (the agent's next call works), and the pool opens a new one."""
    if not app.config["DATABASE_URL"].startswith("postgresql"):
        pytest.skip("terminating a server backend: PostgreSQL only")
    monkeypatch.setattr(db_pool, "IDLE_BEFORE_PING", 3600.0)  # never pinged in this test
    user_id, _, _ = make_user()
    _, token = link_device(user_id)
    client = app.test_client()
    bearer = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/device/me", headers=bearer).status_code == 200

    url = make_url(app.config["DATABASE_URL"])
    with psycopg2.connect(host=url.host, port=url.port, user=url.username,
                          dbname=url.database) as admin:
        with admin.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            assert cursor.rowcount >= 1
    admin.close()

    died = client.get("/api/v1/device/me", headers=bearer)
    unavailable(died)
    assert died.get_json()["error"] == "database_unavailable"
    assert client.get("/api/v1/device/me", headers=bearer).status_code == 200


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_a_url_without_a_driver_gets_psycopg2(database, scheme):
    """SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which is not installed:
    the server would not start on the URL most people write."""
    if not database.startswith("postgresql"):
        pytest.skip("a PostgreSQL URL")
    bare = make_url(database).set(drivername=scheme).render_as_string(hide_password=False)
    with another_app(bare) as application:
        from tsd_server.extensions import db

        with application.app_context():
            assert db.engine.dialect.driver == "psycopg2"
        assert application.test_client().get("/healthz").status_code == 200
