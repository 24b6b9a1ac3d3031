"""The incident, replayable: households of people and printers (the scenarios (a) to (e)
that run in them are in tests/support/ip_match_scenarios.py).

A ``World`` is a set of households (loopback addresses 127.0.0.2, 127.0.0.3, ... in LAN
mode with prefix 32), each with printers (``Printer``: the device agent's announce) and
people (``Person``: a logged-in browser). How their requests reach the app is the
``Endpoint``: in-process through the Flask test client with the environ a proxy layout
would produce, or end-to-end over real sockets bound to the household's source address,
through real nginx and gunicorn. The scenarios are written once and run both ways.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')

HOUSEHOLDS = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"]
PROXY = "127.0.0.1"
# The outer of two proxies in scenario (e): the address every client seems to have.
OUTER_PROXY = "127.0.0.50"

LAN_HOUSEHOLDS = {"IP_MATCH_ALLOW_PRIVATE": True, "IP_MATCH_PRIVATE_PREFIX_V4": 32}
# Behind one proxy at 127.0.0.1 (what docs/deploying-behind-a-proxy.md tells people to set).
BEHIND_PROXY = {"PROXY_FIX_X_FOR": 1, "PROXY_FIX_X_PROTO": 1, "TRUSTED_PROXIES": "127.0.0.1/32",
                **LAN_HOUSEHOLDS}
# No proxy: clients connect to the server directly.
DIRECT = {"PROXY_FIX_X_FOR": 0, "TRUSTED_PROXIES": "", **LAN_HOUSEHOLDS}


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict = field(default_factory=dict)

    @property
    def json(self) -> dict:
        assert isinstance(self.body, dict), f"not JSON ({self.status}): {str(self.body)[:300]}"
        return self.body


class Endpoint:
    """One client (own cookie jar) at one household address."""

    def request(self, method: str, path: str, *, json: Any = None, data: Any = None,
                headers: dict | None = None, forged_for: str | None = None) -> Reply:
        raise NotImplementedError


# --- in-process: the environ each proxy layout would hand the app ------------------------

Layout = Callable[[str, "str | None"], dict]


def layout_direct(ip: str, forged_for: str | None) -> dict:
    environ = {"REMOTE_ADDR": ip}
    if forged_for:
        environ["HTTP_X_FORWARDED_FOR"] = forged_for
    return environ


def layout_proxy(ip: str, forged_for: str | None) -> dict:
    """nginx with ``proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for``."""
    return {"REMOTE_ADDR": PROXY,
            "HTTP_X_FORWARDED_FOR": f"{forged_for}, {ip}" if forged_for else ip}


def layout_proxy_without_header(ip: str, forged_for: str | None) -> dict:
    """nginx that does not set X-Forwarded-For (passes a client's own header through)."""
    environ = {"REMOTE_ADDR": PROXY}
    if forged_for:
        environ["HTTP_X_FORWARDED_FOR"] = forged_for
    return environ


def layout_two_proxies(ip: str, forged_for: str | None) -> dict:
    """Outer proxy at OUTER_PROXY, inner at 127.0.0.1; both append to X-Forwarded-For."""
    hops = [hop for hop in (forged_for, ip, OUTER_PROXY) if hop]
    return {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": ", ".join(hops)}


class InProcessEndpoint(Endpoint):
    def __init__(self, app, ip: str, layout: Layout) -> None:
        self.client = app.test_client()
        self.ip = ip
        self.layout = layout

    def request(self, method, path, *, json=None, data=None, headers=None, forged_for=None):
        response = self.client.open(path, method=method, json=json, data=data,
                                    headers=headers or {},
                                    environ_base=self.layout(self.ip, forged_for))
        body = response.get_json(silent=True)
        return Reply(response.status_code,
                     body if body is not None else response.get_data(as_text=True),
                     dict(response.headers))


class HttpEndpoint(Endpoint):
    """Real HTTP from the household's source address (e.g. through nginx)."""

    def __init__(self, base_url: str, ip: str) -> None:
        from tests.support.servers import http_session

        self.base_url = base_url
        self.session = http_session(ip)

    def request(self, method, path, *, json=None, data=None, headers=None, forged_for=None):
        headers = dict(headers or {})
        if forged_for:
            headers["X-Forwarded-For"] = forged_for
        response = self.session.request(method, self.base_url + path, json=json, data=data,
                                        headers=headers, allow_redirects=False, timeout=15)
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        return Reply(response.status_code, body, dict(response.headers))


# --- the actors ----------------------------------------------------------------------

class Printer:
    """A device agent: announces with its own device_id and device_secret."""

    def __init__(self, endpoint: Endpoint, home: str, name: str) -> None:
        self.endpoint = endpoint
        self.home = home
        self.name = name
        self.device_id = f"tsd-{secrets.token_hex(8)}"
        self.secret = secrets.token_urlsafe(32)
        self.model = "Mk4"
        self.access_token: str | None = None

    def announce(self, forged_for: str | None = None) -> Reply:
        reply = self.endpoint.request("POST", "/api/v1/discovery/announce", json={
            "device_id": self.device_id, "device_secret": self.secret, "name": self.name,
            "model": self.model, "agent_version": "test"}, forged_for=forged_for)
        if reply.status == 200 and reply.json.get("access_token"):
            self.access_token = reply.json["access_token"]
        return reply


class Person:
    """Someone logged in from a browser at ``home``."""

    def __init__(self, endpoint: Endpoint, home: str, user_id: int, email: str,
                 password: str, display_name: str) -> None:
        self.endpoint = endpoint
        self.home = home
        self.user_id = user_id
        self.display_name = display_name
        page = endpoint.request("GET", "/login")
        token = CSRF_META.search(page.body).group(1)
        reply = endpoint.request("POST", "/login", data={
            "email": email, "password": password, "csrf_token": token})
        assert reply.status == 302, f"login failed: {reply.status} {str(reply.body)[:300]}"
        self.csrf = CSRF_META.search(endpoint.request("GET", "/").body).group(1)

    def nearby(self, forged_for: str | None = None) -> Reply:
        return self.endpoint.request("GET", "/api/v1/discovery/nearby", forged_for=forged_for)

    def link(self, device_id: str, forged_for: str | None = None) -> Reply:
        return self.endpoint.request("POST", f"/api/v1/discovery/nearby/{device_id}/link",
                                     headers={"X-CSRFToken": self.csrf}, forged_for=forged_for)

    def confirm(self, offer_id: str, code: str, forged_for: str | None = None) -> Reply:
        return self.endpoint.request("POST", f"/api/v1/discovery/offers/{offer_id}/confirm",
                                     json={"code": code}, headers={"X-CSRFToken": self.csrf},
                                     forged_for=forged_for)

    def client_address(self, forged_for: str | None = None) -> Reply:
        return self.endpoint.request("GET", "/api/v1/client-address", forged_for=forged_for)


def listed(reply: Reply) -> list[str]:
    assert reply.status == 200, f"nearby failed: {reply.status} {reply.body}"
    return sorted(device["device_id"] for device in reply.json["devices"])


def refused_with(reply: Reply, reason: str) -> bool:
    return (reply.status == 403 and reply.json.get("error") == "ip_match_ineligible"
            and reply.json.get("reason") == reason)


@dataclass
class World:
    app: Any
    endpoint: Callable[[str], Endpoint]
    printers: list[Printer] = field(default_factory=list)
    people: list[Person] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.make_user = fast_user_factory(self.app)

    def printer(self, home: str, name: str | None = None) -> Printer:
        printer = Printer(self.endpoint(home), home, name or f"Printer at {home}")
        self.printers.append(printer)
        return printer

    def person(self, home: str) -> Person:
        number = len(self.people) + 1
        name = f"Person {number} of {home}"
        user_id, email, password = self.make_user(display_name=name)
        person = Person(self.endpoint(home), home, user_id, email, password, name)
        self.people.append(person)
        return person

    def links(self) -> list[tuple[int, str]]:
        """(owner id, device_id) of every device ip_match linked."""
        from tsd_server.extensions import db
        from tsd_server.models import Device

        with self.app.app_context():
            rows = db.session.execute(select(Device.owner_id, Device.device_uid)).all()
            db.session.remove()
        return [(owner, uid) for owner, uid in rows]

    def cross_household_links(self) -> list[tuple[int, str]]:
        """Links whose account and printer live in different households (must be none)."""
        home_of_person = {person.user_id: person.home for person in self.people}
        home_of_printer = {printer.device_id: printer.home for printer in self.printers}
        return [(owner, uid) for owner, uid in self.links()
                if home_of_person.get(owner) != home_of_printer.get(uid)]

    def audit_events(self, event: str) -> list[Any]:
        from tsd_server.extensions import db
        from tsd_server.models import AuditEvent

        with self.app.app_context():
            rows = list(db.session.scalars(select(AuditEvent).where(AuditEvent.event == event)))
            db.session.remove()
        return rows


def fast_user_factory(app) -> Callable:
    """Accounts with a cheap password hash: these tests log in dozens of people, and the
    real scrypt cost (tested in test_accounts.py) would make them slow for nothing."""
    from werkzeug.security import generate_password_hash

    from tsd_server.extensions import db
    from tsd_server.models import User

    password = "correct horse battery"
    cheap = generate_password_hash(password, method="pbkdf2:sha256:1000")

    def factory(display_name: str) -> tuple[int, str, str]:
        email = f"{secrets.token_hex(6)}@example.org"
        with app.app_context():
            user = User(email=email, display_name=display_name, password_hash=cheap)
            db.session.add(user)
            db.session.commit()
            user_id = user.id
            db.session.remove()
        return user_id, email, password

    return factory


def link_and_confirm(person: Person, printer: Printer) -> str:
    """The honest path: pick the printer, read its code, type it, printer gets its token."""
    offer = person.link(printer.device_id)
    assert offer.status == 200 and offer.json["status"] == "awaiting_confirmation", offer.body
    shown = printer.announce()
    assert shown.status == 200 and shown.json["status"] == "confirm", shown.body
    assert shown.json["confirmation"]["account"] == person.display_name
    confirmed = person.confirm(offer.json["offer_id"], shown.json["confirmation"]["code"])
    assert confirmed.status == 200 and confirmed.json == {"status": "confirmed"}, confirmed.body
    linked = printer.announce()
    assert linked.status == 200 and linked.json["status"] == "linked", linked.body
    assert linked.json["access_token"].startswith("tsd_at_")
    return linked.json["access_token"]


def parallel_wrong_codes(app, person: Person, offer_id: str, code: str, address: str,
                         count: int = 8) -> list[int]:
    """``count`` wrong codes for one offer at the same moment, each from a browser holding
    ``person``'s session cookie; the status of each answer."""
    cookie = person.endpoint.client.get_cookie("session").value
    results: list[int] = []

    def guess(n: int) -> None:
        browser = app.test_client()
        browser.set_cookie("session", cookie)
        reply = browser.post(f"/api/v1/discovery/offers/{offer_id}/confirm",
                             json={"code": f"{(int(code) + 1 + n) % 1_000_000:06d}"},
                             headers={"X-CSRFToken": person.csrf},
                             environ_base={"REMOTE_ADDR": address})
        results.append(reply.status_code)

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def db_value(app, statement) -> Any:
    """One scalar read in an app context of its own, outside any request."""
    from tsd_server.extensions import db

    with app.app_context():
        value = db.session.scalar(statement)
        db.session.remove()
    return value


def offer_row(app, offer_id: str) -> Any:
    """The ip_match offer row with this public id, or None once it ended."""
    from tsd_server.models.ip_match import Offer

    return db_value(app, select(Offer).where(Offer.public_id == offer_id))


def pending_offer(world: World, home: str) -> tuple[Printer, Person, str, str]:
    """A printer announcing at ``home``, a person there who picked it, and the code shown."""
    printer, person = world.printer(home), world.person(home)
    printer.announce()
    offer = person.link(printer.device_id)
    assert offer.status == 200, offer.body
    shown = printer.announce().json
    return printer, person, offer.json["offer_id"], shown["confirmation"]["code"]
