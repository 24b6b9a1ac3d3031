"""Check a pooled database connection before use only when it has sat idle a while.

SQLAlchemy's ``pool_pre_ping`` sends ``SELECT 1`` at every checkout: one extra round trip
on every request, a quarter of the database time of a device call (docs/performance.md).
What it guards against is a connection that died while parked in the pool (the database
restarted, a firewall dropped it), and a connection handed back moments ago is not that:
so only connections idle for ``IDLE_BEFORE_PING`` seconds or more are pinged. A failed ping
raises ``DisconnectionError``, which makes the pool discard the connection and open a
fresh one, as pre-ping does.
"""

from __future__ import annotations

import time

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError

IDLE_BEFORE_PING = 1.0  # seconds
CHECKED_IN = "tsd.checked_in_at"


def ping_when_idle(engine: Engine) -> None:
    """Install the check on ``engine``'s pool (call once per engine, instead of pre-ping)."""
    dialect = engine.dialect

    def remember_checkin(dbapi_connection, record) -> None:
        record.info[CHECKED_IN] = time.monotonic()

    def ping_if_idle(dbapi_connection, record, proxy) -> None:
        checked_in = record.info.get(CHECKED_IN)
        if checked_in is None or time.monotonic() - checked_in < IDLE_BEFORE_PING:
            return  # just opened, or in use moments ago
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as error:  # noqa: BLE001 - any failure means the connection is gone
            raise DisconnectionError(f"pooled connection failed its ping: {error}") from error

    event.listen(engine, "checkin", remember_checkin)
    event.listen(engine, "checkout", ping_if_idle)
