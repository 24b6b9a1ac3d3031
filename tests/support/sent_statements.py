"""What a request sends to the database: each statement's verb per engine, and BEGINs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event
from sqlalchemy.orm import Session

SESSION, SINGLE = "session", "single_statement"
# The kill switch's flag read: on the autocommit bind, cached per process for real time.
IGNORED = "strategy_flags"


@contextmanager
def sent_statements(app, *, commits: bool = False) -> Iterator[dict[str, list[str]]]:
    """Record each statement's first word (SELECT, INSERT...) per engine while inside.

    ``session`` is the ORM session's engine, with "BEGIN" where a session transaction
    starts (and "COMMIT" where one commits, with ``commits``); ``single_statement`` is the
    autocommit bind (no transactions on the wire).
    """
    from tsd_server import single_statement
    from tsd_server.extensions import db

    with app.app_context():
        engines = {SESSION: db.engine, SINGLE: db.engines[single_statement.BIND]}
    sent: dict[str, list[str]] = {name: [] for name in engines}

    def recorder(name):
        def record(conn, cursor, text, parameters, context, executemany):
            if IGNORED not in text:
                sent[name].append(text.split(None, 1)[0].upper())
        return record

    def begin(session, transaction, connection):
        sent[SESSION].append("BEGIN")

    listeners = [(engine, "before_cursor_execute", recorder(name))
                 for name, engine in engines.items()]
    listeners.append((Session, "after_begin", begin))
    if commits:
        listeners.append((Session, "after_commit", lambda session: sent[SESSION].append("COMMIT")))
    for listener in listeners:
        event.listen(*listener)
    try:
        yield sent
    finally:
        for listener in listeners:
            event.remove(*listener)
