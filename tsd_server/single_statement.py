"""One statement on its own: no transaction around it, so one database round trip.

The ORM session wraps every request's database work in a transaction. On PostgreSQL that is
``BEGIN``, the statements, then ``ROLLBACK`` or ``COMMIT``: two round trips besides the
statements. A request whose whole database work is one statement gains nothing from them.
A single statement is atomic by itself. Examples are a device call reading its row, a poll
time, or the audit row of a refused code. Such statements run here, on a connection in
autocommit mode, from a pool of its own (the ``single_statement`` bind). Switching a pooled
connection in and out of autocommit costs a round trip each time (docs/performance.md).

Rules for callers:

- Use this only when the statement is all the work, or the rest of the request does not
  depend on it atomically. What a write here does is committed at once, whatever the
  session does afterwards.
- Never call it while the session holds uncommitted writes. On SQLite the session's write
  lock would block this connection until ``busy_timeout``.
"""

from __future__ import annotations

import copy
from typing import Any

from flask import Flask
from sqlalchemy import Executable, Row

from tsd_server.extensions import db

BIND = "single_statement"


def configure(app: Flask) -> None:
    """Add the autocommit bind: same database and engine options, a pool of its own.

    Flask-SQLAlchemy gives SQLALCHEMY_ENGINE_OPTIONS to the default bind only, so they are
    copied here: device calls must connect as the operator set it (TLS in connect_args,
    say), not with libpq's defaults.
    """
    binds = dict(app.config.get("SQLALCHEMY_BINDS") or {})
    binds[BIND] = {**copy.deepcopy(app.config["SQLALCHEMY_ENGINE_OPTIONS"]),
                   "url": app.config["SQLALCHEMY_DATABASE_URI"],
                   "isolation_level": "AUTOCOMMIT"}
    app.config["SQLALCHEMY_BINDS"] = binds


def all_rows(statement: Executable, parameters: dict[str, Any] | None = None) -> list[Row]:
    """Every row of a read (fetched before the connection goes back to the pool)."""
    with db.engines[BIND].connect() as connection:
        return list(connection.execute(statement, parameters).all())


def first(statement: Executable, parameters: dict[str, Any] | None = None) -> Row | None:
    """The first row of a read (or of a write's RETURNING), or None."""
    with db.engines[BIND].connect() as connection:
        return connection.execute(statement, parameters).first()


def rowcount(statement: Executable, parameters: dict[str, Any] | None = None) -> int:
    """Rows a write changed (for conditional writes: did it apply?)."""
    with db.engines[BIND].connect() as connection:
        return connection.execute(statement, parameters).rowcount
