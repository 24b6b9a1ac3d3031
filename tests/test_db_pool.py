"""Pooled connections are pinged before use only after sitting idle (tsd_server/db_pool.py).

Pre-pinging every checkout costs a round trip per request; never pinging would hand out a
connection that died in the pool (database restarted) and fail the request.
"""

from __future__ import annotations

import psycopg2
import pytest
from sqlalchemy import text

from tests.support import db_backends
from tsd_server import db_pool
from tsd_server.extensions import db


@pytest.fixture
def pings(app, monkeypatch):
    """Every ping the pool sends, counted on the dialect (a library method, not ours)."""
    with app.app_context():
        dialect = db.engine.dialect
    sent: list[object] = []
    original = type(dialect).do_ping

    def counting(self, dbapi_connection):
        sent.append(dbapi_connection)
        return original(self, dbapi_connection)

    monkeypatch.setattr(type(dialect), "do_ping", counting)
    return sent


def test_a_connection_handed_back_moments_ago_is_not_pinged(app, client, pings, monkeypatch):
    monkeypatch.setattr(db_pool, "IDLE_BEFORE_PING", 3600.0)
    for _ in range(3):
        assert client.get("/healthz").status_code == 200
    assert pings == []


def test_a_connection_idle_long_enough_is_pinged_at_checkout(app, client, pings, monkeypatch):
    assert client.get("/healthz").status_code == 200  # a connection now sits in the pool
    monkeypatch.setattr(db_pool, "IDLE_BEFORE_PING", 0.0)
    assert client.get("/healthz").status_code == 200
    assert len(pings) == 1


def _terminate_pooled_connection(app) -> None:
    with app.app_context():
        pid = db.session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        db.session.remove()  # back to the pool, where it is about to die
    role = db_backends.find_postgres()
    admin = psycopg2.connect(host=db_backends.PG_HOST, port=db_backends.PG_PORT, user=role,
                             dbname="postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", (pid,))
    finally:
        admin.close()


def test_a_connection_that_died_in_the_pool_is_replaced_after_idling(app, client,
                                                                      monkeypatch):
    if not app.config["DATABASE_URL"].startswith("postgresql"):
        pytest.skip("PostgreSQL only: a SQLite connection cannot be killed from outside")
    _terminate_pooled_connection(app)
    monkeypatch.setattr(db_pool, "IDLE_BEFORE_PING", 0.0)
    assert client.get("/healthz").status_code == 200


def test_without_the_ping_the_dead_connection_would_fail_the_request(app, client,
                                                                       monkeypatch):
    """The control for the test above: the ping is what saves the request."""
    if not app.config["DATABASE_URL"].startswith("postgresql"):
        pytest.skip("PostgreSQL only: a SQLite connection cannot be killed from outside")
    _terminate_pooled_connection(app)
    monkeypatch.setattr(db_pool, "IDLE_BEFORE_PING", 3600.0)
    assert client.get("/healthz").status_code == 503
    assert client.get("/healthz").status_code == 200  # the pool recovers on its own


def test_a_link_holds_at_most_one_connection_of_each_pool(app, client, make_user, login):
    """docs/production.md sizes max_connections for two per worker: one of the session's
    pool, one of the autocommit pool. Linking reads the kill switch afresh while the
    session holds its connection; read from the session's pool, that was a third, and a
    server sized by the docs refused linking ("too many connections"), reported as every
    strategy switched off."""
    from tests.support.pairing import LOOSE_LIMITS, issue_code, redeem

    app.config.update(LOOSE_LIMITS)
    _, email, password = make_user()
    code = issue_code(login(email, password))["code"]
    assert redeem(client, code).status_code == 201
    with app.app_context():
        opened = {name or "session": engine.pool.checkedin() + engine.pool.checkedout()
                  for name, engine in db.engines.items()}
    assert max(opened.values()) == 1, opened
