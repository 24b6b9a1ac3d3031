"""Kill-switch flag rows written by hand, for tests of the checks behind the switch.

``kill_switch.set_flag`` also withdraws the links waiting to happen through the strategy
(``pending_links``). A test of the re-check at the moment of linking needs a link still
waiting while the strategy is off, as a stale cache or a flag row written by another
process would leave it: these write the row without the withdrawal.
"""

from __future__ import annotations

from tsd_server.clock import utcnow


def switched_off_by_hand(app, strategy: str, *, stale_cache: bool = False) -> None:
    """The flag row written off. With ``stale_cache`` this process keeps a cached "on" for
    a minute, like a process that has not yet seen the switch-off: its route guards let
    requests through, and only fresh reads see the switch."""
    from tsd_server.discovery import flag_store, kill_switch
    from tsd_server.extensions import db
    from tsd_server.models import StrategyFlag

    with app.test_request_context():
        if stale_cache:
            app.config["KILL_SWITCH_CACHE_SECONDS"] = 60
            kill_switch.state(strategy)  # fill the cache with "on"
        db.session.add(StrategyFlag(strategy=strategy, enabled=False, reason="test",
                                    changed_by="cli", changed_at=utcnow()))
        db.session.commit()
        if not stale_cache:
            flag_store.forget_cached_flags()


def flag_removed_by_hand(app, strategy: str) -> None:
    from tsd_server.discovery import flag_store
    from tsd_server.extensions import db
    from tsd_server.models import StrategyFlag

    with app.test_request_context():
        db.session.delete(db.session.get(StrategyFlag, strategy))
        db.session.commit()
        flag_store.forget_cached_flags()
