"""A worker cut off between its statements does not hold the kill switch for hours
(tsd_server/idle_transactions.py): PostgreSQL ends its idle transaction, and the lock with
it. PostgreSQL only: SQLite has no server to end anything."""

from __future__ import annotations

import time
from contextlib import closing

import psycopg2
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.support.apps import another_app
from tsd_server import idle_transactions
from tsd_server.discovery import kill_switch
from tsd_server.extensions import db


@pytest.fixture
def postgres(database):
    if not database.startswith("postgresql"):
        pytest.skip("PostgreSQL only: the timeout is a PostgreSQL session setting")
    return database


def switch_lock_holders(url: str) -> list[tuple]:
    """Sessions holding the kill switch's advisory lock, seen from a connection of its own."""
    # psycopg2's "with" ends the transaction, not the connection: closing() ends that too.
    with closing(psycopg2.connect(url.replace("postgresql+psycopg2", "postgresql"))) as \
            connection, connection.cursor() as cursor:
        cursor.execute("SELECT pid, mode FROM pg_locks WHERE locktype = 'advisory' "
                       "AND granted AND objid = %s", (kill_switch.SWITCH_LOCK_KEY,))
        return cursor.fetchall()


def test_every_connection_of_both_pools_keeps_the_timeout(postgres):
    """Also after its first use: the pool rolls a connection back when it comes back, and
    a rollback undoes a SET made in the transaction it ends."""
    with another_app(postgres) as application, application.app_context():
        for name, engine in db.engines.items():
            for use in ("first", "after a rollback"):
                with engine.connect() as connection:
                    shown = connection.execute(
                        text("SHOW idle_in_transaction_session_timeout")).scalar()
                assert shown == idle_transactions.IDLE_TRANSACTION_TIMEOUT, (name, use)


def test_a_link_left_idle_while_holding_the_switch_lets_a_switch_off_through(
        postgres, monkeypatch):
    """The link's transaction holds the lock shared, then its worker stops talking; the
    switch-off must not wait for a client that never comes back."""
    monkeypatch.setattr(idle_transactions, "IDLE_TRANSACTION_TIMEOUT", "1s")
    with another_app(postgres) as stuck, stuck.app_context():
        kill_switch.hold_enabled("pairing_code")  # as a link does just before its COMMIT
        assert len(switch_lock_holders(postgres)) == 1
        time.sleep(1.5)  # the worker cut off: no statement, no COMMIT
        assert switch_lock_holders(postgres) == []
        with pytest.raises(DBAPIError):
            db.session.execute(text("SELECT 1"))  # its session was ended: nothing linked
        db.session.rollback()
    with another_app(postgres) as admin, admin.test_request_context():
        kill_switch.set_flag("pairing_code", enabled=False, reason="partition", actor="test")
        kill_switch.set_flag("pairing_code", enabled=True, reason=None, actor="test")
