"""The kill switch: is a strategy on? Two layers, and unreadable means off.

1. Deployment settings (``TSD_DISCOVERY_DISABLED``: "all" or a comma list) are read at
   start-up and nothing at runtime can override them. A name in that setting that is not a
   strategy (a typo such as "ip-match") switches *every* strategy off: the operator meant to
   switch something off, and guessing what would fail open.
2. Runtime flags live in the database (``strategy_flags``), so a toggle made through any
   process -- CLI, admin page, or the automatic breakers -- reaches every process within a
   second: ``flag_store`` reads them, and caches what it read for at most
   ``KILL_SWITCH_CACHE_SECONDS``.

If the flag store cannot be read, every strategy counts as disabled: failing open here
would turn an outage of the database into the incident this server exists to prevent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from flask import current_app
from sqlalchemy import false, func, select, update
from sqlalchemy.exc import SQLAlchemyError

from tsd_server import audit, database_timeout, pending_links
from tsd_server.api.errors import DATABASE_RETRY_AFTER, ApiError
from tsd_server.clock import utcnow
from tsd_server.discovery import flag_store
from tsd_server.extensions import db
from tsd_server.models import StrategyFlag
from tsd_server.upsert import upsert

log = logging.getLogger(__name__)

ALL = "all"
MAX_REASON = 500
# PostgreSQL's advisory lock that orders a change of a switch against the commit of a link
# (or a link waiting to happen): taken exclusively by set_flag, shared by hold_enabled.
SWITCH_LOCK_KEY = 0x74736B73
# How long a request may wait to take that lock exclusively (admin page, breaker), whatever
# TSD_DATABASE_TIMEOUT says: longer than a link's transaction may sit idle
# (idle_transactions.py), so a worker cut off mid-link cannot make a switch-off fail.
SWITCH_LOCK_WAIT_SECONDS = 15

# Why a strategy is off (``StrategyState.disabled_by``).
DEPLOYMENT = "deployment"
RUNTIME = "runtime"
FLAG_STORE_UNREADABLE = "flag_store_unreadable"
UNREADABLE_RETRY_AFTER = DATABASE_RETRY_AFTER  # seconds: the store is the database
UNKNOWN_STRATEGY = "unknown_strategy"

# What the public (status API, 503 answers, pages) is told; the operator's own reason text
# may name people or addresses, so it is shown only to admins and on the command line.
PUBLIC_REASONS = {
    DEPLOYMENT: "Switched off in this server's deployment settings.",
    RUNTIME: "Switched off by an administrator.",
    FLAG_STORE_UNREADABLE: "The server cannot read its discovery settings, so this is off.",
    UNKNOWN_STRATEGY: "No such way of linking on this server.",
}


@dataclass(frozen=True)
class StrategyState:
    enabled: bool
    # deployment | runtime | flag_store_unreadable | unknown_strategy; None when enabled
    disabled_by: str | None = None
    # The operator-facing explanation (may be the free text an admin typed).
    reason: str | None = None
    changed_by: str | None = None
    changed_at: datetime | None = None

    @property
    def public_reason(self) -> str | None:
        if self.enabled:
            return None
        if self.disabled_by == RUNTIME and self.changed_by == "auto":
            return "Switched off automatically after unusual activity."
        return PUBLIC_REASONS.get(self.disabled_by or "", "Switched off.")

    def to_json(self) -> dict:
        """Safe for anyone: the layer that holds it off and a generic explanation."""
        return {"enabled": self.enabled, "disabled_by": self.disabled_by,
                "reason": self.public_reason}


@dataclass(frozen=True)
class DeploymentSetting:
    """``TSD_DISCOVERY_DISABLED`` parsed: the names it holds off, or the problem with it."""

    disabled: frozenset[str]
    problem: str | None = None


class StrategyDisabled(ApiError):
    """503 ``strategy_disabled``. Off because the switches cannot be read (the database is
    out of reach), it is temporary and refused before anything was done: Retry-After says
    when to ask again, so a printer waits it out instead of giving up."""

    def __init__(self, name: str | list[str], state: StrategyState,
                 message: str | None = None) -> None:
        super().__init__(503, "strategy_disabled",
                         message or f"Linking by {name} is switched off on this server.",
                         strategy=name, disabled_by=state.disabled_by)
        self.state = state
        if state.disabled_by == FLAG_STORE_UNREADABLE:
            self.headers["Retry-After"] = str(UNREADABLE_RETRY_AFTER)


def known_names() -> list[str]:
    from tsd_server.discovery import registry

    return registry.names()


def deployment_setting() -> DeploymentSetting:
    """Parse ``DISCOVERY_DISABLED``; anything unrecognised holds every strategy off."""
    raw = current_app.config.get("DISCOVERY_DISABLED")
    known = set(known_names())
    if raw is None or raw is False or raw == "":
        return DeploymentSetting(frozenset())
    if raw is True:  # TSD_DISCOVERY_DISABLED=true parses as JSON true
        return DeploymentSetting(frozenset(known))
    if isinstance(raw, str):
        parts = raw.split(",")
    elif isinstance(raw, (list, tuple, set, frozenset)):
        parts = [str(part) for part in raw]
    else:
        return DeploymentSetting(frozenset(known),
                                 f"TSD_DISCOVERY_DISABLED has an unusable value {raw!r}")
    names = {part.strip().lower() for part in parts if part.strip()}
    if ALL in names:
        return DeploymentSetting(frozenset(known))
    unknown = sorted(names - known)
    if unknown:
        return DeploymentSetting(frozenset(known),
                                 f"TSD_DISCOVERY_DISABLED names unknown strategies "
                                 f"{', '.join(unknown)} (known: {', '.join(sorted(known))}, all)")
    return DeploymentSetting(frozenset(names))


def state(name: str, *, fresh: bool = False) -> StrategyState:
    """The effective state of one strategy. ``fresh`` bypasses the per-process cache."""
    return _state_from(name, lambda: flag_store.runtime_flags(fresh=fresh))


def _state_from(
    name: str, read_flags: Callable[[], dict[str, flag_store.FlagSnapshot] | None],
) -> StrategyState:
    if name not in known_names():
        return StrategyState(False, UNKNOWN_STRATEGY, f"{name!r} is not a strategy.")
    setting = deployment_setting()
    if name in setting.disabled:
        reason = "Switched off by the deployment settings (TSD_DISCOVERY_DISABLED)."
        if setting.problem:
            reason = f"{setting.problem}; every strategy is off until that is corrected."
        return StrategyState(False, DEPLOYMENT, reason)
    flags = read_flags()
    if flags is None:
        return StrategyState(False, FLAG_STORE_UNREADABLE,
                             "The kill-switch flags cannot be read, so discovery is off.")
    for key in (ALL, name):
        flag = flags.get(key)
        if flag is not None and not flag.enabled:
            return StrategyState(False, RUNTIME, flag.reason, flag.changed_by, flag.changed_at)
    return StrategyState(True)


def hold_enabled(name: str) -> None:
    """Raise ``StrategyDisabled``, rolled back, unless ``name`` is on, read in the caller's
    transaction just before it commits a link, or a link waiting to happen (a web code, an
    approval, an ip_match offer).

    A request reads the switch first on a connection of its own, and a switch-off may
    commit after that read; its withdrawal of waiting links (``set_flag``) would then miss
    what the request commits, which would complete once the strategy is switched on again.
    So this reads again holding the switches' lock shared (PostgreSQL's advisory lock),
    which a change of a switch takes exclusively before it writes: either the switch-off
    waits for this commit, and its withdrawal then finds what was made, or this waits for
    the switch-off, and reads it. On SQLite the caller's writes already keep every other
    writer out until it commits."""
    _lock_switches(shared=True)
    current = _state_in_this_transaction(name)
    if not current.enabled:
        db.session.rollback()
        raise StrategyDisabled(name, current)


def _state_in_this_transaction(name: str) -> StrategyState:
    """``name``'s state read in the caller's transaction, past every cache (the caller holds
    the switches' lock)."""
    rows = db.session.execute(select(StrategyFlag.__table__).where(
        StrategyFlag.strategy.in_((ALL, name)))).mappings().all()
    return _state_from(name, lambda: {row["strategy"]: flag_store.snapshot(row)
                                      for row in rows})


def wait_for_links_in_progress() -> None:
    """Return once every link, approval, web code or offer being committed has committed:
    each holds the switches' lock shared (``hold_enabled``) until then, so this takes it
    exclusively, and commits at once. Held any longer, it would deadlock with a link that
    has claimed a row the caller waits for next (an incident revoke's withdrawal). The
    caller has nothing pending; a revoke calls it before it reads the time."""
    _lock_switches(shared=False)
    db.session.commit()


def _lock_switches(*, shared: bool) -> None:
    """Until the transaction ends. PostgreSQL: the switches' advisory lock. SQLite has one
    writer at a time: a caller sharing the lock has written already, and one taking it
    exclusively starts its write transaction here, with a write that changes nothing."""
    if db.session.get_bind().dialect.name != "postgresql":
        if not shared:
            db.session.execute(update(StrategyFlag).where(false())
                               .values(enabled=StrategyFlag.enabled))
        return
    if not shared:
        database_timeout.extend_for_this_transaction(SWITCH_LOCK_WAIT_SECONDS)
    lock = func.pg_advisory_xact_lock_shared if shared else func.pg_advisory_xact_lock
    db.session.execute(select(lock(SWITCH_LOCK_KEY)))


def is_enabled(name: str, *, fresh: bool = False) -> bool:
    return state(name, fresh=fresh).enabled


def require_enabled(name: str, *, fresh: bool = False) -> None:
    current = state(name, fresh=fresh)
    if not current.enabled:
        raise StrategyDisabled(name, current)


def all_states(*, fresh: bool = False) -> dict[str, StrategyState]:
    return {name: state(name, fresh=fresh) for name in known_names()}


def last_switched_on(name: str) -> datetime | None:
    """When the strategy (or "all") was last switched on at runtime: the automatic breakers
    forgive what they counted before it, so an admin's switch-on is not undone by the very
    wave it follows."""
    return db.session.scalar(select(func.max(StrategyFlag.changed_at)).where(
        StrategyFlag.strategy.in_((name, ALL)), StrategyFlag.enabled.is_(True)))


def set_flag(target: str, *, enabled: bool, reason: str | None, actor: str,
             only_if_on: bool = False) -> StrategyFlag | None:
    """Toggle a runtime flag (a strategy or "all"), audited in the same transaction.

    ``only_if_on`` (a breaker's trip): when the strategy is off already, read holding the
    switches' lock, nothing is written and the caller's pending work (its trip's audit row)
    is rolled back; None. Two requests tripping a breaker at once trip it once.

    Switching "all" on also clears every per-strategy switch-off, so one command undoes an
    emergency stop (the audit row's detail names what it cleared); deployment-level
    switch-offs stay in force regardless. Switching off needs a reason, and then withdraws
    the links waiting to happen through the strategy (``pending_links``).

    The flag row is written with one INSERT ... ON CONFLICT DO UPDATE, so two processes
    creating the same row at once cannot collide (the later write wins, both are audited)
    and whatever the caller has pending (a breaker's own audit row) is committed with it,
    never rolled back by a retry.
    """
    if target != ALL and target not in known_names():
        raise ValueError(f"unknown strategy {target!r}; expected one of "
                         f"{', '.join([*known_names(), ALL])}")
    if only_if_on and target == ALL:  # "all" is no strategy: it would read as off
        raise ValueError("only_if_on takes one strategy, not all")
    reason = (reason or "").strip() or None
    if not enabled and reason is None:
        raise ValueError("a reason is required to switch a strategy off")
    if reason is not None and len(reason) > MAX_REASON:
        raise ValueError(f"the reason is longer than {MAX_REASON} characters")
    # Links being committed finish first (hold_enabled), and the time is read after them:
    # every link that got through has a time before this one, so a window ending at the
    # switch-off's time misses none of them (docs/incident-response.md).
    _lock_switches(shared=False)
    if only_if_on and not _state_in_this_transaction(target).enabled:
        db.session.rollback()
        return None
    now = utcnow()
    values = {"enabled": enabled, "reason": reason, "changed_by": actor, "changed_at": now}
    # One statement: another process may be writing the same flag's row.
    upsert(StrategyFlag, {"strategy": target, **values}, ["strategy"])
    cleared: list[str] = []
    if target == ALL and enabled:
        cleared = list(db.session.scalars(select(StrategyFlag.strategy).where(
            StrategyFlag.strategy != ALL, StrategyFlag.enabled.is_(False))))
        if cleared:
            db.session.execute(update(StrategyFlag).where(
                StrategyFlag.strategy.in_(cleared)).values(**values))
    detail = reason
    if cleared:
        detail = f"{reason or ''} (also cleared: {', '.join(sorted(cleared))})".strip()
    audit.record("flag_toggle", actor=actor, strategy=target,
                 outcome="enabled" if enabled else "disabled", detail=detail)
    db.session.commit()
    flag_store.forget_cached_flags()
    if not enabled:
        _withdraw_waiting_links(target, actor=actor, reason=reason)
    flag = db.session.get(StrategyFlag, target, populate_existing=True)
    assert flag is not None
    return flag


def _withdraw_waiting_links(target: str, *, actor: str, reason: str | None) -> None:
    """After the switch-off is committed, in a transaction of its own: a link in progress
    holding one of these rows must not delay the switch-off, nor roll it back if this waits
    too long. Nothing can link or be prepared in between: each re-reads the switch before
    it commits (``hold_enabled``), and what committed before the switch-off is found here.
    On failure the links stay refused while the switch is off, and switching off again
    retries."""
    strategies = set(known_names()) if target == ALL else {target}
    try:
        pending_links.withdraw_strategies(strategies, actor=actor,
                                          why=f"{target} switched off: {reason}")
        db.session.commit()
    except SQLAlchemyError:
        db.session.rollback()
        log.exception("%s is switched off, but withdrawing the links waiting to happen "
                      "through it failed; switch it off again to retry", target)
