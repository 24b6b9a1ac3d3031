"""The registry of discovery strategies: registered once, looked up by name."""

from __future__ import annotations

from flask import Flask, request

from tsd_server.discovery import kill_switch
from tsd_server.discovery.strategy import DiscoveryStrategy

_strategies: dict[str, DiscoveryStrategy] = {}


def register(strategy: DiscoveryStrategy) -> DiscoveryStrategy:
    if strategy.name in _strategies and _strategies[strategy.name] is not strategy:
        raise ValueError(f"strategy {strategy.name!r} registered twice")
    _strategies[strategy.name] = strategy
    return strategy


def get(name: str) -> DiscoveryStrategy:
    return _strategies[name]


def names() -> list[str]:
    return list(_strategies)


def all_strategies() -> list[DiscoveryStrategy]:
    return list(_strategies.values())


def _load_builtin() -> None:
    from tsd_server.discovery.strategies import ip_match, pairing_code, qr_code

    for strategy in (ip_match.STRATEGY, pairing_code.STRATEGY, qr_code.STRATEGY):
        register(strategy)


def init_app(app: Flask) -> None:
    """Register each strategy's blueprints, every route behind that strategy's kill switch."""
    if not _strategies:
        _load_builtin()
    owner_of_blueprint: dict[str, str] = {}
    for strategy in all_strategies():
        for blueprint in strategy.blueprints():
            app.register_blueprint(blueprint)
            owner_of_blueprint[blueprint.name] = strategy.name

    @app.before_request
    def refuse_disabled_strategy() -> None:
        name = owner_of_blueprint.get(request.blueprint or "")
        if name is not None:
            kill_switch.require_enabled(name)
