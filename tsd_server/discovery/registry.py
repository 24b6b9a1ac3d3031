"""The registry of discovery strategies: registered once, looked up by name.

Views never import a strategy module to ask whether it is on: they ask the kill switch by
name, and every route a strategy serves is guarded here, so a switched-off strategy answers
503 ``strategy_disabled`` on all of its routes (JSON under /api, elsewhere a page that names
the way in the person's words and links to the ways still on: ``web.way_off``).
"""

from __future__ import annotations

import logging

from flask import Flask, request
from flask.typing import ResponseReturnValue

from tsd_server.api.errors import is_api_request
from tsd_server.config import ConfigurationError
from tsd_server.discovery import flag_store, kill_switch
from tsd_server.discovery.strategy import DiscoveryStrategy

log = logging.getLogger(__name__)

_strategies: dict[str, DiscoveryStrategy] = {}

# app.extensions key: {blueprint name: strategy name} for the guarded blueprints.
GUARDED_KEY = "tsd.strategy_blueprints"


def register(strategy: DiscoveryStrategy) -> DiscoveryStrategy:
    if strategy.name in _strategies and _strategies[strategy.name] is not strategy:
        raise ValueError(f"strategy {strategy.name!r} registered twice")
    if strategy.name == kill_switch.ALL:
        raise ValueError(f"{kill_switch.ALL!r} is reserved for the kill switch")
    _strategies[strategy.name] = strategy
    return strategy


def get(name: str) -> DiscoveryStrategy:
    return _strategies[name]


def names() -> list[str]:
    return list(_strategies)


def all_strategies() -> list[DiscoveryStrategy]:
    return list(_strategies.values())


def with_states(
    *, fresh: bool = False
) -> list[tuple[DiscoveryStrategy, kill_switch.StrategyState]]:
    """Every strategy with its effective state, in registration order (for pages)."""
    return [(strategy, kill_switch.state(strategy.name, fresh=fresh))
            for strategy in all_strategies()]


def enabled_strategies() -> list[DiscoveryStrategy]:
    return [strategy for strategy, current in with_states() if current.enabled]


def _load_builtin() -> None:
    from tsd_server.discovery.strategies import ip_match, pairing_code, qr_code

    for strategy in (ip_match.STRATEGY, pairing_code.STRATEGY, qr_code.STRATEGY):
        register(strategy)


def guard_blueprint(app: Flask, blueprint_name: str, strategy_name: str) -> None:
    """Put every route of a registered blueprint (and its children) behind a kill switch."""
    app.extensions.setdefault(GUARDED_KEY, {})[blueprint_name] = strategy_name


def init_app(app: Flask) -> None:
    """Register each strategy's blueprints, every route behind that strategy's kill switch."""
    from tsd_server.web.way_off import way_off_page

    if not _strategies:
        _load_builtin()
    for strategy in all_strategies():
        for blueprint in strategy.blueprints():
            app.register_blueprint(blueprint)
            guard_blueprint(app, blueprint.name, strategy.name)
    _check_settings(app)

    @app.before_request
    def refuse_disabled_strategy():
        guarded = app.extensions.get(GUARDED_KEY, {})
        # request.blueprints lists the current blueprint and its parents (nested blueprints).
        for blueprint_name in request.blueprints:
            name = guarded.get(blueprint_name)
            if name is None:
                continue
            current = kill_switch.state(name)
            if current.enabled:
                return None
            if is_api_request():
                raise kill_switch.StrategyDisabled(name, current)
            return way_off_page(name, current)
        return None

    @app.errorhandler(kill_switch.StrategyDisabled)
    def strategy_disabled(error: kill_switch.StrategyDisabled) -> ResponseReturnValue:
        """Switched off between the guard's read and a service's fresh one: on a page, the
        same refusal as the guard's, in the person's words (not the JSON's strategy name)."""
        if is_api_request():
            return error.response()
        return way_off_page(error.extra.get("strategy") or [], error.state)


def _check_settings(app: Flask) -> None:
    """Log the deployment's switch-offs; refuse a cache time that breaks the 1 s promise."""
    with app.app_context():
        setting = kill_switch.deployment_setting()
        ttl = flag_store.cache_seconds()
    if setting.problem:
        log.error("%s: EVERY discovery strategy is switched off until it is corrected",
                  setting.problem)
    elif setting.disabled:
        log.warning("discovery switched off by deployment settings: %s",
                    ", ".join(sorted(setting.disabled)))
    if ttl > flag_store.MAX_CACHE_SECONDS:
        raise ConfigurationError(
            f"TSD_KILL_SWITCH_CACHE_SECONDS must be from 0 to {flag_store.MAX_CACHE_SECONDS:g} "
            f"(seconds, e.g. 0.5), not {ttl:g}: a toggle must reach every process within "
            "one second.")
