"""Run an operator's transaction again when PostgreSQL ends it as a deadlock's victim.

Some operator actions lock rows in orders that cannot all agree: deleting an account
locks the account's row before its printers (a request writing a row that refers to the
account must wait for the deletion, not hold a lock the DELETE needs), while an incident
revoke locks many accounts' printers before its audit rows take a share of their owners'
rows. Run on the same account at the same moment, each waits for the other; PostgreSQL
finds the cycle after ``deadlock_timeout`` (1 s by default) and rolls one back whole.

Nothing of the victim is left, and each action re-reads what it acts on, so it is run
again (logged), at most ``ATTEMPTS`` times in all. Any other error is raised at once: a
refused statement is not a race, and repeating it would only repeat it. SQLite, with one
writer at a time, cannot deadlock.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from sqlalchemy.exc import DBAPIError

from .extensions import db

log = logging.getLogger(__name__)

DEADLOCK_DETECTED = "40P01"  # SQLSTATE
ATTEMPTS = 3

P = ParamSpec("P")
T = TypeVar("T")


def is_deadlock(error: DBAPIError) -> bool:
    return getattr(error.orig, "pgcode", None) == DEADLOCK_DETECTED


def retried_on_deadlock(action: Callable[P, T]) -> Callable[P, T]:
    """``action``, run again after a rollback when PostgreSQL chose it as a deadlock's
    victim. It must be one transaction from its start (it may commit before the work it
    retries, as an incident revoke waiting for links in progress does)."""

    @functools.wraps(action)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return action(*args, **kwargs)
            except DBAPIError as error:
                if not is_deadlock(error) or attempt == ATTEMPTS:
                    raise
                db.session.rollback()
                log.warning("%s was rolled back as a deadlock's victim; running it again "
                            "(attempt %d of %d)", action.__qualname__, attempt + 1, ATTEMPTS)
        raise AssertionError("unreachable")

    return run
