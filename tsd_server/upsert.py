"""INSERT, or UPDATE the row that is already there, in one statement on SQLite and on
PostgreSQL (``INSERT ... ON CONFLICT DO UPDATE``).

One statement, so concurrent writers cannot both insert, and nothing can delete the row
between a check and a write: the kill switch's flags, the household breaker's rows and the
wrong-code counts all rely on that.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import ColumnElement
from sqlalchemy.dialects import postgresql, sqlite

from tsd_server.extensions import db


def upsert(model: Any, values: Mapping[str, Any], keys: list[str], *,
           changes: Mapping[str, Any] | None = None,
           only_if: ColumnElement[bool] | None = None) -> bool:
    """Insert ``values``; on a conflict over ``keys``, update the row with ``changes``
    (by default the inserted values of every other column), only where ``only_if`` holds.
    Returns whether a row was written. The row stays locked until the transaction ends,
    on PostgreSQL even when ``only_if`` kept it from being written."""
    dialect = postgresql if db.session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(model).values(**values)
    if changes is None:
        changes = {key: statement.excluded[key] for key in values if key not in keys}
    statement = statement.on_conflict_do_update(index_elements=keys, set_=dict(changes),
                                                where=only_if)
    return db.session.execute(statement).rowcount > 0
