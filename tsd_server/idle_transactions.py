"""PostgreSQL ends a transaction that its client leaves idle for longer than a request.

Every link, web code, approval and offer holds the kill switch's lock, shared, until it
commits (``kill_switch.hold_enabled``), and a switch-off takes it exclusively. A worker cut
off from the database between those two moments (a network partition, a paused process)
leaves its transaction open, and PostgreSQL notices a dead client only when TCP does: two
hours by default. Meanwhile ``flask discovery disable`` waits, the strategy stays on, and
every new link on every server queues behind the waiting switch-off.

So each connection sets ``idle_in_transaction_session_timeout``: PostgreSQL ends the
session, rolls its transaction back and frees its locks once it has sat idle that long.
Nothing here keeps a transaction idle for more than milliseconds (the commands' prompts
come before their first statement); an operator's own ``psql`` session is not affected.
"""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.engine import Engine

IDLE_TRANSACTION_TIMEOUT = "10s"


def end_idle_transactions(engine: Engine) -> None:
    """Set the timeout on every new connection of ``engine`` (PostgreSQL only)."""
    if engine.dialect.name != "postgresql":
        return

    def on_connect(dbapi_connection, _record) -> None:
        with dbapi_connection.cursor() as cursor:  # a literal: SET takes no parameters
            cursor.execute(f"SET idle_in_transaction_session_timeout = "
                           f"'{IDLE_TRANSACTION_TIMEOUT}'")
        # A session-level SET is undone by a rollback: keep it. (An autocommit connection
        # has nothing to commit.)
        if not dbapi_connection.autocommit:
            dbapi_connection.commit()

    event.listen(engine, "connect", on_connect)
