"""More app instances on the test database: how several server processes are simulated."""

from __future__ import annotations

import secrets
from contextlib import contextmanager


@contextmanager
def another_app(database: str, **config):
    """A second create_app() on the same database (its own engine, session and caches)."""
    from tsd_server import create_app
    from tsd_server.extensions import db

    application = create_app({"TESTING": True, "SECRET_KEY": "test-" + secrets.token_hex(8),
                              "DATABASE_URL": database, "RATELIMIT_STORAGE_URI": "memory://",
                              **config})
    try:
        yield application
    finally:
        with application.app_context():
            db.session.remove()
            for engine in db.engines.values():
                engine.dispose()


@contextmanager
def flags_table_renamed(application):
    """The kill-switch flag store made unreadable (on either backend), and restored after."""
    from sqlalchemy import text

    from tsd_server.extensions import db

    with application.app_context():
        db.session.execute(text("ALTER TABLE strategy_flags RENAME TO strategy_flags_away"))
        db.session.commit()
    try:
        yield
    finally:
        with application.app_context():
            db.session.rollback()
            db.session.execute(text("ALTER TABLE strategy_flags_away RENAME TO strategy_flags"))
            db.session.commit()
