"""tsd-server: links 3D-printer agents to user accounts, with discovery that fails closed."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from flask import Flask, request
from flask.sessions import SecureCookieSessionInterface

from tsd_server.config import load_config

MIGRATIONS = str(Path(__file__).parent / "migrations")


class SessionInterface(SecureCookieSessionInterface):
    """Session cookies are Secure whenever the request came over https (or always, by
    setting), and then named ``__Host-session``.

    A browser takes a ``__Host-`` cookie only from this very host, over https, for every
    path and with no Domain. A plain ``session`` cookie could be planted by a sibling
    subdomain (``Domain=example.org``) or by a man in the middle of a plain-http visit, for
    ``Path=/link``; browsers send the longer path first, and the first cookie of a name is
    the one read, so the person's approvals on /link would run in the planter's session
    and link the person's printer into the planter's account. Over plain http (development,
    a LAN) the name stays ``session``: a browser refuses a ``__Host-`` cookie there.
    """

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure

    def get_cookie_name(self, app: Flask) -> str:
        name = super().get_cookie_name(app)
        if (self.get_cookie_secure(app) and self.get_cookie_path(app) == "/"
                and not self.get_cookie_domain(app)):
            return HOST_ONLY_PREFIX + name
        return name


HOST_ONLY_PREFIX = "__Host-"


def configured_app(config: dict[str, Any] | None = None) -> Flask:
    """A Flask app with its settings loaded and checked, and nothing else: what create_app
    builds on, and what gunicorn's master reads the settings from (gunicorn.conf.py)."""
    instance_path = os.environ.get("TSD_INSTANCE_PATH") or None
    if instance_path:
        # Flask insists on an absolute path; "TSD_INSTANCE_PATH=instance" means ./instance.
        instance_path = os.path.abspath(instance_path)
    app = Flask(__name__, instance_path=instance_path, instance_relative_config=True)
    load_config(app, config)
    os.makedirs(app.instance_path, exist_ok=True)
    return app


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = configured_app(config)
    app.session_interface = SessionInterface()
    logging.basicConfig(level=app.config.get("LOG_LEVEL", "INFO"))

    _init_extensions(app)
    _register_blueprints(app)

    from tsd_server import request_guard, security_headers, static_versions
    from tsd_server.api.errors import register_error_handlers
    from tsd_server.api.request_body import refuse_non_json_bodies

    register_error_handlers(app)
    security_headers.register(app)
    static_versions.register(app)
    request_guard.register(app)
    app.before_request(refuse_non_json_bodies)

    from tsd_server.cli import register_commands

    register_commands(app)

    from tsd_server.client_address import ProxySettings
    from tsd_server.proxy_fix import TrustedProxyFix

    settings = ProxySettings.from_config(app.config)
    app.extensions["tsd.proxy_settings"] = settings
    app.wsgi_app = TrustedProxyFix(app.wsgi_app, app.config, settings)  # type: ignore[method-assign]
    return app


def _init_extensions(app: Flask) -> None:
    from tsd_server import (
        models,  # noqa: F401 - registers the tables
        single_statement,
    )
    from tsd_server.extensions import csrf, db, limiter, login_manager, migrate

    single_statement.configure(app)
    db.init_app(app)
    from tsd_server.database_timeout import bound_requests
    from tsd_server.db_pool import ping_when_idle
    from tsd_server.idle_transactions import end_idle_transactions

    with app.app_context():
        for engine in db.engines.values():
            ping_when_idle(engine)
            end_idle_transactions(engine)
        bound_requests(list(db.engines.values()), app.config["DATABASE_TIMEOUT"])
    migrate.init_app(app, db, directory=MIGRATIONS, render_as_batch=True)
    csrf.init_app(app)
    limiter.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Log in to continue."
    login_manager.session_protection = "basic"

    from tsd_server.auth.accounts import session_user

    login_manager.user_loader(session_user)

    @login_manager.unauthorized_handler
    def unauthorized():
        from flask import redirect, url_for

        from tsd_server.api.errors import ApiError, is_api_request

        if is_api_request():
            raise ApiError(401, "login_required", "Log in first (session cookie required).")
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def _register_blueprints(app: Flask) -> None:
    from tsd_server.api import devices, system
    from tsd_server.auth import views as auth_views
    from tsd_server.web import dashboard

    for blueprint in (system.bp, devices.bp, auth_views.bp, dashboard.bp):
        app.register_blueprint(blueprint)

    from tsd_server.discovery import pairing
    from tsd_server.web import add_printer

    for blueprint in (add_printer.bp, *pairing.shared_blueprints()):
        app.register_blueprint(blueprint)

    from tsd_server.admin import views as admin_views
    from tsd_server.api import discovery_status, openapi

    app.register_blueprint(discovery_status.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(admin_views.bp)
    from tsd_server.admin import diagnostics as admin_diagnostics

    app.register_blueprint(admin_diagnostics.bp)

    from tsd_server.discovery import registry

    registry.init_app(app)
