"""Reading the test database from outside a request."""

from __future__ import annotations


def count_rows(app, model) -> int:
    """How many rows ``model``'s table holds now (read in a session of its own)."""
    from sqlalchemy import func, select

    from tsd_server.extensions import db

    with app.app_context():
        number = db.session.scalar(select(func.count()).select_from(model))
        db.session.remove()
    return number
