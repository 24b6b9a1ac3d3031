"""The app on a real socket for the browser, a simulated printer, and a hostile web site.

``LiveApp`` serves one ``create_app()`` with Werkzeug's threaded server on a free loopback
port, in a thread of the test process, so a test can also look into the same database
(``live.db()``). Chromium connects from 127.0.0.1, so ip_match runs in LAN mode with /32
households and the simulated printer announces from the same address: one household.

``Printer`` is a device agent speaking the HTTP API (announce from ip_match_world, plus
the pairing and device-flow calls). ``OtherSite`` serves pages from another origin (a
cross-site 127.0.0.2, or the same site on another port) for forged form posts and
double-click games.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from tests.support import db_backends, ip_match_world
from tests.support.pairing import LOOSE_LIMITS
from tests.support.servers import free_port

PASSWORD = "correct horse battery"
SETTINGS = {
    **ip_match_world.LAN_HOUSEHOLDS,
    # One browser at 127.0.0.1 plays every person of every test: raise the per-household
    # caps and the code limits. Rate limits stay on (RATELIMIT_ENABLED=False would stick to
    # the process-wide limiter for every later test); each module's server starts with
    # fresh counters, and the fixed ones (20 log-ins per 10 minutes) are not reached.
    **LOOSE_LIMITS,
    "IP_MATCH_MAX_ACCOUNTS_PER_HOUSEHOLD": 1000,
    "IP_MATCH_MAX_DEVICES_PER_HOUSEHOLD": 1000,
    # Waiting pages refresh every poll interval: short, so the journeys stay quick.
    "IP_MATCH_POLL_INTERVAL": 2,
    # A toggle is seen by the next request (no cache), so no test waits for it.
    "KILL_SWITCH_CACHE_SECONDS": 0,
}


class QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


@contextmanager
def serving(wsgi_app: Any, host: str = "127.0.0.1") -> Iterator[str]:
    """``wsgi_app`` on a free port of ``host`` in a daemon thread; yields its base URL."""
    port = free_port(host)
    server = make_server(host, port, wsgi_app, threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


class LiveApp:
    def __init__(self, app: Any, base_url: str) -> None:
        self.app = app
        self.base_url = base_url

    def url(self, path: str) -> str:
        return self.base_url + path

    @contextmanager
    def db(self) -> Iterator[Any]:
        """The app's database session, inside an app context of the served app."""
        from tsd_server.extensions import db

        with self.app.app_context():
            try:
                yield db.session
            finally:
                db.session.remove()

    def make_user(self, *, is_admin: bool = False, display_name: str | None = None
                  ) -> tuple[int, str]:
        from tsd_server.auth.accounts import create_user

        email = f"{'admin' if is_admin else 'user'}-{secrets.token_hex(4)}@example.org"
        with self.app.app_context():
            user = create_user(email, PASSWORD, is_admin=is_admin,
                               display_name=display_name or email.split("@")[0])
            return user.id, email

    def devices_of(self, user_id: int) -> list[Any]:
        """The user's device rows, detached (name, device_uid, linked_via, token_hash...)."""
        from sqlalchemy import select

        from tsd_server.models import Device

        with self.db() as session:
            rows = list(session.scalars(select(Device).where(Device.owner_id == user_id)
                                        .order_by(Device.id)))
            for row in rows:
                session.expunge(row)
            return rows

    def linked_printer(self, user_id: int, name: str = "Target") -> Printer:
        """A printer linked to the user (by pairing_code, as if just now), holding its token."""
        from tsd_server.discovery.link_service import link_device
        from tsd_server.extensions import db
        from tsd_server.models import User

        printer = Printer(self.base_url, name)
        with self.app.test_request_context():
            printer.access_token = link_device(
                owner=db.session.get(User, user_id), device_uid=printer.device_id,
                name=printer.name, model=None, strategy="pairing_code",
                actor=f"user:{user_id}", address=None).access_token
        return printer

    def switch(self, strategy: str, *, enabled: bool, reason: str = "browser test") -> None:
        from tsd_server.discovery import kill_switch

        with self.app.test_request_context():
            kill_switch.set_flag(strategy, enabled=enabled, reason=reason, actor="cli")

    def reset(self) -> None:
        """Every strategy on, no announcements left over: a known start for each test."""
        from sqlalchemy import delete

        from tsd_server.models import StrategyFlag
        from tsd_server.models.ip_match import Announcement, Offer

        with self.db() as session:
            for model in (StrategyFlag, Offer, Announcement):
                session.execute(delete(model))
            session.commit()


@contextmanager
def live_app(database: str, **settings: Any) -> Iterator[LiveApp]:
    from tsd_server import create_app
    from tsd_server.extensions import db

    app = create_app({"SECRET_KEY": secrets.token_hex(32), "DATABASE_URL": database,
                      "RATELIMIT_STORAGE_URI": "memory://", **SETTINGS, **settings})
    with app.app_context():
        db_backends.empty_all_tables(db)
    try:
        with serving(app) as base_url:
            yield LiveApp(app, base_url)
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


class Printer(ip_match_world.Printer):
    """A simulated printer at 127.0.0.1 (or another loopback ``source``: another household,
    LAN mode's households being /32): every way it can ask to be linked, over HTTP."""

    def __init__(self, base_url: str, name: str = "Prusa in the lab", model: str = "MK4",
                 source: str = "127.0.0.1") -> None:
        super().__init__(ip_match_world.HttpEndpoint(base_url, source), source, name)
        self.model = model

    def call(self, method: str, path: str, **kwargs: Any) -> ip_match_world.Reply:
        return self.endpoint.request(method, path, **kwargs)

    def redeem(self, code: str) -> ip_match_world.Reply:
        """Type a code the web showed into the printer."""
        reply = self.call("POST", "/api/v1/pairing/redeem", json={
            "code": code, "device_id": self.device_id, "name": self.name, "model": self.model})
        if reply.status == 201:
            self.access_token = reply.json["access_token"]
        return reply

    def authorize(self) -> dict:
        """Ask to be linked (RFC 8628): the user code and QR link the printer would show."""
        reply = self.call("POST", "/api/v1/device/authorize", json={
            "device_id": self.device_id, "name": self.name, "model": self.model})
        assert reply.status == 200, reply.body
        return reply.json

    def poll(self, device_code: str) -> ip_match_world.Reply:
        reply = self.call("POST", "/api/v1/device/token", json={
            "device_code": device_code,
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code"})
        if reply.status == 200:
            self.access_token = reply.json["access_token"]
        return reply

    def me(self) -> ip_match_world.Reply:
        assert self.access_token, "not linked"
        return self.call("GET", "/api/v1/device/me",
                         headers={"Authorization": f"Bearer {self.access_token}"})


class OtherSite:
    """Another web site: serves whatever HTML the test puts at a path."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}

    @Request.application
    def __call__(self, request: Request) -> Response:
        html = self.pages.get(request.path)
        if html is None:
            return Response("not found", status=404)
        return Response(html, mimetype="text/html")


def forged_form_page(action: str, fields: dict[str, str]) -> str:
    """A page that posts a form to ``action`` as soon as it loads, as a hostile site would."""
    inputs = "".join(f'<input type="hidden" name="{name}" value="{value}">'
                     for name, value in fields.items())
    return (f'<!doctype html><title>You won a printer</title>'
            f'<form id="f" method="post" action="{action}">{inputs}</form>'
            f'<script>document.getElementById("f").submit();</script>')


def double_click_game(x: float, y: float, url: str) -> str:
    """A "Double-click me" button centred on (x, y) whose first press opens ``url``, so the
    second click lands on whatever that page draws there (double-clickjacking)."""
    return ('<!doctype html><title>Are you human?</title>'
            f'<button id="b" style="position:absolute;left:{x - 60}px;top:{y - 20}px;'
            'width:120px;height:40px">Double-click me</button>'
            '<script>document.getElementById("b").addEventListener("mousedown", function () '
            f'{{ location.href = {url!r}; }});</script>')
