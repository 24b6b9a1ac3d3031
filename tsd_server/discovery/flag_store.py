"""The kill switch's runtime layer: the flags in the database, and this process's cache.

It says what the flags are, or None when they cannot be read; ``kill_switch`` turns None
into "every strategy off", so an outage of the database never fails open. Flags are read
on a connection of their own, so a failed read never rolls back (or poisons) the caller's
transaction. Each process trusts what it read for at most ``KILL_SWITCH_CACHE_SECONDS``
(default 0.5 s), which bounds how long a toggle made through any process takes to be
honoured everywhere (the promise is 1 s).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from tsd_server import single_statement
from tsd_server.config import ConfigurationError
from tsd_server.models import StrategyFlag

log = logging.getLogger(__name__)

DEFAULT_CACHE_SECONDS = 0.5
# More would break the promise that a toggle reaches every process within a second.
MAX_CACHE_SECONDS = 1.0
CACHE_KEY = "tsd.kill_switch_cache"


@dataclass(frozen=True)
class FlagSnapshot:
    """One runtime flag row as read, detached from any session."""

    strategy: str
    enabled: bool
    reason: str | None
    changed_by: str
    changed_at: datetime | None


_EVERY_FLAG = select(StrategyFlag.__table__)


def _read_flags() -> dict[str, FlagSnapshot] | None:
    """Every runtime flag, read outside the request's transaction on the autocommit bind
    (whose connection nothing else holds at this point: a worker needs no third one);
    None when the store is unreadable."""
    try:
        rows = single_statement.all_rows(_EVERY_FLAG)
    except SQLAlchemyError:
        return None
    return {row.strategy: snapshot(row._mapping) for row in rows}


def snapshot(row: Mapping[str, Any]) -> FlagSnapshot:
    return FlagSnapshot(strategy=row["strategy"], enabled=bool(row["enabled"]),
                        reason=row["reason"], changed_by=row["changed_by"],
                        changed_at=row["changed_at"])


_log_lock = threading.Lock()


def _note_readability(cache: dict, readable: bool) -> None:
    """Log when the store becomes unreadable or recovers, not on every request."""
    with _log_lock:
        was_failing = cache.get("failing", False)
        if not readable and not was_failing:
            log.error("kill switch: flag store unreadable; every strategy is DISABLED until "
                      "it can be read again")
        elif readable and was_failing:
            log.warning("kill switch: flag store readable again")
        cache["failing"] = not readable


def runtime_flags(*, fresh: bool = True) -> dict[str, FlagSnapshot] | None:
    """The runtime flags, from this process's cache unless stale or ``fresh`` is asked for;
    None when unreadable.

    A failed read is cached too (it means "all off" either way), so a database outage costs
    one failed query per TTL rather than one per request.
    """
    cache = current_app.extensions.setdefault(CACHE_KEY, {})
    entry = cache.get("entry")
    now = time.monotonic()
    if not fresh and entry is not None and entry[0] > now:
        return entry[1]
    flags = _read_flags()
    _note_readability(cache, flags is not None)
    cache["entry"] = (now + cache_seconds(), flags)
    return flags


def cache_seconds() -> float:
    """How long a process trusts what it read.

    Checked at start-up (registry.init_app), so a bad value stops the server, not requests;
    there, more than ``MAX_CACHE_SECONDS`` is refused too (it breaks the 1 s promise).
    """
    value = current_app.config.get("KILL_SWITCH_CACHE_SECONDS", DEFAULT_CACHE_SECONDS)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not 0.0 <= seconds < 3600 or isinstance(value, bool):
        raise ConfigurationError(
            f"TSD_KILL_SWITCH_CACHE_SECONDS must be a number of seconds (0 to 1), not {value!r}.")
    return seconds


def forget_cached_flags() -> None:
    current_app.extensions.pop(CACHE_KEY, None)
