"""The kill switch: is a strategy on? Two layers, and unreadable means off.

1. Deployment settings (``TSD_DISCOVERY_DISABLED``: "all" or a comma list) are read at
   start-up and nothing at runtime can override them.
2. Runtime flags live in the database (``strategy_flags``), so a toggle made through any
   process -- CLI, admin page, or the automatic breakers -- reaches every process. Each
   process caches what it read for at most ``KILL_SWITCH_CACHE_SECONDS`` (default 0.5 s),
   which bounds how long a toggle takes to be honoured everywhere.

If the flag store cannot be read, every strategy counts as disabled: failing open here
would turn an outage of the database into the incident this server exists to prevent.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from tsd_server import audit
from tsd_server.api.errors import ApiError
from tsd_server.clock import utcnow
from tsd_server.config import comma_list
from tsd_server.extensions import db
from tsd_server.models import StrategyFlag

log = logging.getLogger(__name__)

ALL = "all"
DEFAULT_CACHE_SECONDS = 0.5


@dataclass(frozen=True)
class StrategyState:
    enabled: bool
    # deployment | runtime | flag_store_unreadable | None when enabled
    disabled_by: str | None = None
    reason: str | None = None
    changed_by: str | None = None

    def to_json(self) -> dict:
        return {"enabled": self.enabled, "disabled_by": self.disabled_by, "reason": self.reason}


class StrategyDisabled(ApiError):
    def __init__(self, name: str, state: StrategyState) -> None:
        super().__init__(503, "strategy_disabled",
                         f"Linking by {name} is switched off on this server.",
                         strategy=name, disabled_by=state.disabled_by)


def known_names() -> list[str]:
    from tsd_server.discovery import registry

    return registry.names()


def deployment_disabled() -> set[str]:
    """Strategies switched off by deployment settings ("all" expands to every strategy)."""
    names = set(comma_list(current_app.config["DISCOVERY_DISABLED"]))
    return set(known_names()) if ALL in names else names


def _read_flags() -> dict[str, StrategyFlag] | None:
    try:
        rows = db.session.scalars(select(StrategyFlag)).all()
    except SQLAlchemyError:
        log.exception("kill switch: flag store unreadable; treating every strategy as disabled")
        db.session.rollback()
        return None
    for row in rows:
        db.session.expunge(row)
    return {row.strategy: row for row in rows}


def _flags(fresh: bool) -> dict[str, StrategyFlag] | None:
    cache = current_app.extensions.setdefault("tsd.kill_switch_cache", {})
    ttl = float(current_app.config.get("KILL_SWITCH_CACHE_SECONDS", DEFAULT_CACHE_SECONDS))
    now = time.monotonic()
    if not fresh and cache.get("until", 0.0) > now:
        return cache["flags"]
    flags = _read_flags()
    cache.update(flags=flags, until=now + ttl if flags is not None else 0.0)
    return flags


def state(name: str, *, fresh: bool = False) -> StrategyState:
    """The effective state of one strategy. ``fresh`` bypasses the per-process cache."""
    if name in deployment_disabled():
        return StrategyState(False, "deployment",
                             "Switched off by the deployment settings (TSD_DISCOVERY_DISABLED).")
    flags = _flags(fresh)
    if flags is None:
        return StrategyState(False, "flag_store_unreadable",
                             "The kill-switch flags cannot be read, so discovery is off.")
    for key in (ALL, name):
        flag = flags.get(key)
        if flag is not None and not flag.enabled:
            return StrategyState(False, "runtime", flag.reason, flag.changed_by)
    return StrategyState(True)


def is_enabled(name: str, *, fresh: bool = False) -> bool:
    return state(name, fresh=fresh).enabled


def require_enabled(name: str, *, fresh: bool = False) -> None:
    current = state(name, fresh=fresh)
    if not current.enabled:
        raise StrategyDisabled(name, current)


def all_states(*, fresh: bool = False) -> dict[str, StrategyState]:
    return {name: state(name, fresh=fresh) for name in known_names()}


def set_flag(target: str, *, enabled: bool, reason: str, actor: str) -> StrategyFlag:
    """Toggle a runtime flag (a strategy or "all"), audited in the same transaction.

    Switching "all" on clears every per-strategy switch-off too, so one command undoes an
    emergency stop; deployment-level switch-offs stay in force regardless.
    """
    if target != ALL and target not in known_names():
        raise ValueError(f"unknown strategy {target!r}; expected one of "
                         f"{', '.join([*known_names(), ALL])}")
    now = utcnow()
    targets = [ALL, *known_names()] if (target == ALL and enabled) else [target]
    flag = None
    for key in targets:
        row = db.session.get(StrategyFlag, key)
        if row is None:
            row = StrategyFlag(strategy=key)
            db.session.add(row)
        row.enabled = enabled
        row.reason = reason
        row.changed_by = actor
        row.changed_at = now
        if key == target:
            flag = row
    audit.record("flag_toggle", actor=actor, strategy=target,
                 outcome="enabled" if enabled else "disabled", detail=reason)
    db.session.commit()
    current_app.extensions.pop("tsd.kill_switch_cache", None)
    assert flag is not None
    return flag
