"""Generated input on every page and form: never a 500, and a refused request changes nothing.

tests/test_schemathesis.py fuzzes the JSON API from its OpenAPI document. Pages have no such
document, so this file walks ``app.url_map`` instead: every rule outside /api/ and /static/
(a new page or form is fuzzed without touching this file), every method it allows, sent by
an ordinary user and by an admin, each with a valid CSRF token (without one every post is a
400 before its view, which would prove nothing). A generated request carries

* the fields of the WTForms forms its view names, and the names its module reads from
  ``request.args`` / ``request.form`` itself (``?page=``, ``decision``, ``?peer=``), each
  left out, sent once or repeated, with hostile values: huge, empty, odd Unicode (lone
  surrogates, NUL), numbers at int64 edges, ISO-time look-alikes, and real values of the
  test's world (emails, codes, strategy names), so that some requests get deep;
* random extra parameters, in the query string and in the body of a post;
* on a post, the body as a urlencoded form, a multipart form (some fields as file parts)
  or a JSON object: whatever a client can send to a form;
* hostile or real URL parameters for rules with converters.

Checks: no answer is a 5xx; a refused request (a 4xx, a form that did not validate, or a
redirect whose message says nothing was done) leaves every table exactly as it was, except
the rows its route writes on refusal by design (``REFUSAL_WRITES``). So that this is not
vacuous, a share of the requests must reach their view (none of an ordinary user's may
reach an admin-only view), and every form's known-valid submission (``VALID``), sent the
same way, must succeed. Derandomized: CI runs the same examples every time;
TSD_FUZZ_FORMS_EXAMPLES raises their number for a deeper run by hand.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, timedelta, timezone
from typing import Any
from unittest import mock
from urllib.parse import quote, urlencode

import pytest
from flask import Flask
from flask_wtf import FlaskForm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update
from werkzeug.test import TestResponse
from wtforms.fields.core import UnboundField

from tests.support.ip_match_fixtures import UNLIMITED
from tests.support.ip_match_world import (
    InProcessEndpoint,
    Printer,
    fast_user_factory,
    layout_direct,
)
from tests.support.pairing import LOOSE_LIMITS, shown_request, started
from tsd_server.admin.access import refuse_non_admins
from tsd_server.discovery import registry
from tsd_server.extensions import db, limiter
from tsd_server.models import (
    Device,
    DeviceAuthorization,
    Offer,
    PairingCode,
    StrategyFlag,
    User,
)

# 12 examples per route keeps a database's run near a minute; 200 for a deeper run by hand.
EXAMPLES = int(os.environ.get("TSD_FUZZ_FORMS_EXAMPLES", "12"))
ROLES = ("user", "admin")
HOME = "8.8.8.8"  # public: ip_match takes it as a household, so its views get past that check
# Of the requests a role may make to a route (429s aside), at least this share must reach
# the view: NUL characters, bodies over the size limit and JSON bodies are refused earlier.
REACH_SHARE = 0.25

SKIPPED_PREFIXES = (
    "/static/",  # files of the package: no input but their name, and no state to change
    "/api/",  # JSON: tests/test_schemathesis.py fuzzes every /api/ route against its
    # OpenAPI document, and tests/test_openapi.py keeps every /api/ route in that document
)
IGNORED_METHODS = {"HEAD", "OPTIONS"}  # Flask answers them from the GET view or by itself


@pytest.fixture
def app_config() -> dict:
    return {**LOOSE_LIMITS, **UNLIMITED}


# --- the routes and their fields ------------------------------------------------------

@functools.cache
def page_routes() -> tuple[tuple[str, str, str], ...]:
    """(rule, method, endpoint) of every page route, read from a throwaway app's URL map (the
    parameters of a test are needed before any test's app exists)."""
    from tsd_server import create_app

    with tempfile.TemporaryDirectory() as folder, \
            mock.patch.dict(os.environ, {"TSD_INSTANCE_PATH": folder}):
        app = create_app({"TESTING": True, "SECRET_KEY": "collect-" + "x" * 32,
                          "DATABASE_URL": "sqlite://"})
        return tuple(sorted(
            (rule.rule, method, rule.endpoint) for rule in app.url_map.iter_rules()
            if not rule.rule.startswith(SKIPPED_PREFIXES)
            for method in rule.methods - IGNORED_METHODS))


# ``request.args.get("page")``, ``request.form["decision"]``: names a module reads itself.
READS = re.compile(r"""request\.(?:args|form|values)(?:\.get(?:list)?\(|\[)\s*["'](\w+)["']""")
URL_ARGUMENT = re.compile(r"<(?:[^<>:]+:)?(\w+)>")


def declared_fields(form: type[FlaskForm]) -> set[str]:
    return {name for name in dir(form) if isinstance(getattr(form, name, None), UnboundField)}


def fields_of(app: Flask, endpoint: str) -> list[str]:
    """The names a view reads: its forms' fields and what its module takes from the request."""
    view = inspect.unwrap(app.view_functions[endpoint])
    forms = [value for name in view.__code__.co_names
             if isinstance(value := view.__globals__.get(name), type)
             and issubclass(value, FlaskForm)]
    names = set().union(*map(declared_fields, forms))
    names |= set(READS.findall(inspect.getsource(inspect.getmodule(view))))
    return sorted(names - {"csrf_token"})


def admin_only(app: Flask, endpoint: str) -> bool:
    """Whether the view's blueprint lets admins alone through (``refuse_non_admins``)."""
    blueprint = endpoint.rpartition(".")[0]
    return refuse_non_admins in app.before_request_funcs.get(blueprint, [])


@dataclass(frozen=True)
class Route:
    rule: str
    method: str
    endpoint: str
    fields: tuple[str, ...]
    admin_only: bool

    @classmethod
    def of(cls, app: Flask, rule: str, method: str, endpoint: str) -> Route:
        return cls(rule, method, endpoint, tuple(fields_of(app, endpoint)),
                   admin_only(app, endpoint))

    def path(self, arguments: dict[str, str]) -> str:
        return URL_ARGUMENT.sub(lambda match: quote(arguments[match.group(1)], safe="",
                                                    errors="surrogatepass"), self.rule)

    def arguments(self) -> list[str]:
        return URL_ARGUMENT.findall(self.rule)


# --- what a request carries -----------------------------------------------------------

@dataclass(frozen=True)
class Part:
    name: str
    value: Any  # text; in a JSON body also a number, a boolean, None or a list
    filename: str | None = None  # in a multipart body: sent as a file part


@dataclass(frozen=True)
class Fuzzed:
    path: str
    query: tuple[tuple[str, str], ...] = ()
    body: tuple[Part, ...] = ()
    encoding: str = "urlencoded"  # of the body of a post: urlencoded, multipart or json


def encoded(pairs: list[tuple[str, Any]]) -> str:
    """Percent-encoded like a browser would, lone surrogates as the bytes a careless client
    would send (the server sees invalid UTF-8)."""
    return urlencode([(name, str(value)) for name, value in pairs], errors="surrogatepass")


def utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


MULTIPART_BOUNDARY = "tsd-fuzz-boundary-7MA4YWxkTrZu0gW"


def multipart(parts: list[Part]) -> bytes:
    """A multipart/form-data body; names are escaped as browsers do (HTML's form encoding)."""
    chunks = []
    for part in parts:
        name = part.name.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
        disposition = f'form-data; name="{name}"'
        if part.filename is not None:
            disposition += f'; filename="{part.filename}"'
        chunks.append(utf8(f"--{MULTIPART_BOUNDARY}\r\nContent-Disposition: {disposition}"
                           "\r\n\r\n") + utf8(str(part.value)) + b"\r\n")
    return b"".join(chunks) + utf8(f"--{MULTIPART_BOUNDARY}--\r\n")


def json_object(parts: list[Part]) -> bytes:
    """A JSON object, written by hand so that a repeated field is a repeated key."""
    members = [f"{json.dumps(part.name)}: {json.dumps(part.value)}" for part in parts]
    return utf8("{" + ", ".join(members) + "}")


def send(session: Any, method: str, request: Fuzzed) -> TestResponse:
    """One request in ``session``'s browser, with its CSRF token (first, so that a generated
    ``csrf_token`` after it is the one that does not count)."""
    options: dict[str, Any] = {"method": method, "query_string": encoded(list(request.query)),
                               "environ_base": session.environ_base}
    if method != "GET":
        token = Part("csrf_token", session.csrf)
        parts = [token, *request.body]
        if request.encoding == "json":
            options.update(data=json_object(list(request.body)),
                           content_type="application/json",
                           headers={"X-CSRFToken": session.csrf})
        elif request.encoding == "multipart":
            options.update(data=multipart(parts), content_type="multipart/form-data; "
                                                               f"boundary={MULTIPART_BOUNDARY}")
        else:
            options.update(data=encoded([(part.name, part.value) for part in parts]),
                           content_type="application/x-www-form-urlencoded")
    return session.client.open(request.path, **options)


# --- hostile values -------------------------------------------------------------------

# Every code point, lone surrogates and NUL included.
ANY_CHARACTER = st.characters(codec=None, exclude_categories=())
ODD_TEXT = ("", " ", "\x00", "a\x00b", "\ud800", "x\udfffy", "\ud83d\ude00", "\U0001f600",
            "\u202e\u0644\u0627", "\ufeff", "\u200b", "İ", "ß", "e\u0301", "\u2028", "\r\n",
            "\t", "\x1b[31m", "<script>alert(1)</script>", "' OR '1'='1", "../../etc/passwd",
            "%00", "%ff", "{{7*7}}", "null", "[]")
INT_EDGES = (*(str(number) for number in (0, -1, 2**31 - 1, 2**31, -2**31 - 1, 2**63 - 1,
                                          2**63, -2**63, -2**63 - 1, 2**64)),
             "9" * 5000, "1e309", "NaN", "-0", "0x10", "٣", "²", "１２")
ISO_LOOKALIKES = ("2026-06-01T12:00:00Z", "0001-01-01T00:00:00+01:00",
                  "9999-12-31T23:59:59-01:00", "9999-12-31T23:59:59.999999+00:00",
                  "0001-01-01", "9999-12-31", "2026-13-01", "2026-02-30T00:00",
                  "2026-06-01T24:00", "2026-06-01T12:00:00+24:00", "2026-W23-1",
                  "20260601T1200Z", "2026-06-01 12:00", "2026-06-01T12:00:00,5",
                  "２０２６-06-01", "2026-06-01T12:00:00Z\u200b", "+2026-06-01", "-0001-01-01",
                  "1970-01-01T00:00:00+23:59:59.999999", "2026-06-01T12:00:00[Europe/Paris]",
                  "2026-06-01T12:00:00.1234567Z", "now")
ZONES = st.sampled_from([None, UTC, timezone(timedelta(hours=14)),
                         timezone(-timedelta(hours=23, minutes=59, seconds=59))])
ISO_TIMES = st.sampled_from(ISO_LOOKALIKES) | st.builds(
    lambda moment, separator, spec: moment.isoformat(sep=separator, timespec=spec),
    st.datetimes(timezones=ZONES), st.sampled_from("T "),
    st.sampled_from(["auto", "minutes", "microseconds"]))
# 70,000 two-byte characters are over the body limit (64 KiB): a post of one is a 413.
HUGE = st.builds(lambda text, times: text * times,
                 st.sampled_from(["x", "İ", "\ud800", "9", " ", "a\x00"]),
                 st.sampled_from([81, 255, 4097, 70_000]))


def text_values(real: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(ODD_TEXT), st.sampled_from(INT_EDGES),
                     st.integers(-2**64, 2**64).map(str), ISO_TIMES,
                     st.text(ANY_CHARACTER, max_size=20), HUGE, st.sampled_from(real))


def json_values(real: list[str]) -> st.SearchStrategy[Any]:
    """What a JSON body can hold where a form has text."""
    text = text_values(real)
    return st.one_of(text, st.integers(-2**64, 2**64), st.booleans(), st.none(),
                     st.floats(), st.lists(text, max_size=2),
                     st.dictionaries(st.text(max_size=3), text, max_size=2))


@st.composite
def page_requests(draw: st.DrawFn, route: Route, world: World) -> Fuzzed:
    """A generated request for ``route``."""
    text = text_values(world.field_values)
    names = st.sampled_from(sorted({*world.all_fields, "csrf_token"})) \
        | st.text(ANY_CHARACTER, max_size=8)
    # Mostly a real object's id, or the rule does not even match (a 404 before any view).
    arguments = {name: draw(st.sampled_from(["real", "real", "real", "hostile"]).flatmap(
        lambda kind, name=name: st.sampled_from(world.url_values.get(name, ["1"]))
        if kind == "real" else text), label=f"<{name}>") for name in route.arguments()}
    path = route.path(arguments)
    encoding = "urlencoded" if route.method == "GET" else draw(
        st.sampled_from(["urlencoded", "urlencoded", "multipart", "json"]), label="encoding")
    values = json_values(world.field_values) if encoding == "json" else text
    parts = []
    for name in route.fields:
        # Mostly once; sometimes left out, sometimes repeated (a list in a form).
        for _ in range(draw(st.sampled_from([1, 1, 0, 2, 3]), label=f"times {name}")):
            filename = None
            if encoding == "multipart":
                filename = draw(st.none() | st.sampled_from(["a.txt", "", "..\\x"]))
            parts.append(Part(name, draw(values, label=name), filename))
    query = tuple(draw(st.lists(st.tuples(names, text), max_size=3), label="query"))
    if route.method == "GET":
        return Fuzzed(path, tuple((part.name, part.value) for part in parts) + query)
    extra = draw(st.lists(st.tuples(names, values), max_size=3), label="extra fields")
    return Fuzzed(path, query, tuple(parts) + tuple(Part(*pair) for pair in extra), encoding)


# --- the world: two people, printers, a request waiting, an offer -------------------------

@dataclass
class World:
    app: Flask
    login: Callable[..., Any]
    accounts: dict[str, tuple[str, str]]  # role: (email, password)
    sessions: dict[str, Any]  # role: a logged-in browser (conftest.UserSession)
    user_devices: list[int]
    user_code: str
    qr_token: str
    printer: Printer
    offer_id: str
    all_fields: list[str]
    url_values: dict[str, list[str]]
    field_values: list[str]

    def settle(self, role: str) -> list[str]:
        """The messages the last answer flashed (taken out of the session). A request that
        logged the browser out is followed by a new login, and one that cleared the session's
        CSRF token by fetching the new one."""
        session = self.sessions[role]
        with session.client.session_transaction() as cookie:
            flashed = [message for _, message in cookie.pop("_flashes", [])]
            logged_in, has_token = "_user_id" in cookie, "csrf_token" in cookie
        if not logged_in:
            # The log-in limit counts the test's own log-ins too; they are not under test.
            limiter.reset()
            self.sessions[role] = self.login(*self.accounts[role], REMOTE_ADDR=HOME)
        elif not has_token:
            session.refresh_csrf()
        return flashed

    def submit(self, role: str, method: str, path: str, **fields: str) -> TestResponse:
        """A well-formed request, sent as the generated ones are."""
        if method == "GET":
            request = Fuzzed(path, query=tuple(fields.items()))
        else:
            request = Fuzzed(path, body=tuple(Part(*pair) for pair in fields.items()))
        response = send(self.sessions[role], method, request)
        self.settle(role)
        return response

    def scalar(self, query: Any) -> Any:
        with self.app.app_context():
            value = db.session.scalar(query)
            db.session.remove()
        return value


def make_admin(app: Flask, user_id: int) -> None:
    with app.app_context():
        db.session.execute(update(User).where(User.id == user_id).values(is_admin=True))
        db.session.commit()
        db.session.remove()


@pytest.fixture
def world(app: Flask, login: Callable[..., Any], link_device: Callable[..., Any]) -> World:
    """A user with two printers, an ip_match offer and a device flow's request to answer,
    an admin with one printer, a printer announcing in their household and the request's QR
    link."""
    new_account = fast_user_factory(app)  # a cheap hash: logins here are many
    ids, accounts = {}, {}
    for role in ROLES:
        user_id, email, password = new_account(display_name=f"Fuzzed {role}")
        ids[role], accounts[role] = user_id, (email, password)
    make_admin(app, ids["admin"])
    user_devices = [link_device(ids["user"], f"printer-000{n}")[0] for n in (1, 2)]
    admin_device, _ = link_device(ids["admin"], "printer-0003")
    sessions = {role: login(*accounts[role], REMOTE_ADDR=HOME) for role in ROLES}
    flow = started(app.test_client())
    qr_token = flow["verification_uri_complete"].rsplit("/", 1)[1]
    # The user's session is bound to that request (the code typed), so that answers get as
    # far as comparing the request their page showed.
    assert sessions["user"].form_post("/link", {"code": flow["user_code"]}).status_code == 302
    shown = shown_request(sessions["user"].get("/link/confirm").get_data(as_text=True))
    printer = Printer(InProcessEndpoint(app, HOME, layout_direct), HOME, "Fuzzed printer")
    assert printer.announce().status == 200
    offer = sessions["user"].post(f"/api/v1/discovery/nearby/{printer.device_id}/link")
    assert offer.status_code == 200, offer.get_json()
    offer_id = offer.get_json()["offer_id"]
    all_fields = sorted({name for _, _, endpoint in page_routes()
                         for name in fields_of(app, endpoint)})
    return World(
        app=app, login=login, accounts=accounts, sessions=sessions, user_devices=user_devices,
        user_code=flow["user_code"], qr_token=qr_token, printer=printer, offer_id=offer_id,
        all_fields=all_fields,
        url_values={"device_pk": [str(pk) for pk in (*user_devices, admin_device)],
                    "token": [qr_token], "device_id": [printer.device_id, "printer-0001"],
                    "offer_id": [offer_id]},
        field_values=[accounts["user"][0], accounts["admin"][0], *registry.names(), "all",
                      "enable", "disable", "yes", "y", "approve", "deny", flow["user_code"],
                      shown, "123456", "2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z",
                      printer.device_id, "8.8.8.8", "2001:db8::1"])


# --- what a refusal may write ---------------------------------------------------------

@dataclass(frozen=True)
class Writes:
    """What a route writes, by design, when it refuses a request."""

    events: frozenset[str] = frozenset()  # audit rows of these events
    tables: frozenset[str] = frozenset()  # any change to these tables


# Every ip_match step ("look, pick or confirm") counts the account towards the household's
# breaker, refused or not (docs/ip-match.md, "The anomaly breaker").
SIGHTINGS = "ip_match_household_accounts"
# A 429 of the code and QR limits is audited, at most once a minute (docs/pairing.md).
ANY_REFUSAL = frozenset({"rate_limited"})
REFUSAL_WRITES = {
    # A failed login is audited (auth/views.py), and so is a wrong current password when
    # changing it (docs/security.md).
    "auth.login": Writes(frozenset({"login_failed"})),
    "auth.password": Writes(frozenset({"password_change_failed"})),
    # "Every refusal and every wrong code is in the audit log" (docs/pairing.md).
    "pairing_web.link": Writes(frozenset({"code_invalid"})),
    "qr_web.open_qr_link": Writes(frozenset({"qr_link_invalid", "qr_link_cross_site"})),
    # An answer from a page about another request is audited (docs/security.md).
    "link_web.decide": Writes(frozenset({"device_flow_decision"})),
    # A refused pick is audited, and the page shown again audits what it lists when that
    # changed (docs/ip-match.md, "the audit trail").
    "ip_match_web.link": Writes(frozenset({"link_failed", "ip_match_nearby"}),
                                frozenset({SIGHTINGS})),
    # A wrong code uses up one of the offer's tries; the last voids the offer and counts
    # against the printer (docs/ip-match.md).
    "ip_match_web.confirm": Writes(frozenset({"confirmation", "ip_match_offer_ended"}),
                                   frozenset({SIGHTINGS, "ip_match_offers",
                                              "ip_match_announcements"})),
}

Snapshot = dict[str, Counter[str]]


def snapshot(app: Flask, endpoint: str) -> Snapshot:
    """Every row of every table, but what ``endpoint`` may write when it refuses."""
    allowed = REFUSAL_WRITES.get(endpoint, Writes())
    rows = {}
    with app.app_context(), db.engine.connect() as connection:
        for table in db.metadata.sorted_tables:
            if table.name in allowed.tables:
                continue
            query = select(table)
            if table.name == "audit_events":
                query = query.where(table.c.event.not_in(allowed.events | ANY_REFUSAL))
            rows[table.name] = Counter(repr(tuple(row)) for row in connection.execute(query))
    return rows


def changes(before: Snapshot, after: Snapshot) -> dict[str, dict[str, list[str]]]:
    return {table: {"gone": list((before[table] - after[table]).elements())[:3],
                    "new": list((after[table] - before[table]).elements())[:3]}
            for table in before if before[table] != after[table]}


# Redirects that say nothing was done: the form was fine, but there was nothing to do it to
# ("No account has that email. Nothing was revoked.", "That link offer has ended.").
NOTHING_DONE = re.compile(r"nothing was|has ended", re.IGNORECASE)


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each form validated during a request was valid: one that was not refused."""
    outcomes: list[bool] = []
    original = FlaskForm.validate

    def recorded(self: FlaskForm, *args: Any, **kwargs: Any) -> bool:
        valid = original(self, *args, **kwargs)
        outcomes.append(valid)
        return valid

    monkeypatch.setattr(FlaskForm, "validate", recorded)
    return outcomes


def count_entries(app: Flask, endpoint: str) -> Counter[str]:
    """Counts the requests that get past every check before the view (login, admin, CSRF,
    NUL, body size, switched-off strategies) into it. Flask-Limiter finds a view's limits
    by its name, which the wrapper keeps."""
    entries: Counter[str] = Counter()
    view = app.view_functions[endpoint]

    @functools.wraps(view)
    def counted(*args: Any, **kwargs: Any) -> Any:
        entries["reached"] += 1
        return view(*args, **kwargs)

    app.view_functions[endpoint] = counted
    return entries


# --- the tests ------------------------------------------------------------------------

def route_id(route: tuple[str, str, str]) -> str:
    return f"{route[1]} {route[0]}"


@pytest.mark.parametrize("route", page_routes(), ids=route_id)
def test_generated_input_never_makes_a_500_and_refusals_change_nothing(
        world: World, validations: list[bool], route: tuple[str, str, str]) -> None:
    """The project's rule for input: bad input gets a clear error and changes nothing."""
    app = world.app
    fuzzed = Route.of(app, *route)
    entries = count_entries(app, fuzzed.endpoint)
    tally: Counter[tuple[str, str]] = Counter()

    def one(role: str, request: Fuzzed) -> None:
        before = snapshot(app, fuzzed.endpoint)
        validations.clear()
        reached = entries["reached"]
        response = send(world.sessions[role], fuzzed.method, request)
        form_refused = False in validations
        flashed = world.settle(role)
        where = f"{fuzzed.method} {request.path[:200]} as {role}"
        assert response.status_code < 500, f"{where}: {response.status_code}"
        tally[role, "limited" if response.status_code == 429 else "sent"] += 1
        tally[role, "reached"] += entries["reached"] - reached
        if (response.status_code >= 400 or form_refused
                or any(NOTHING_DONE.search(message) for message in flashed)):
            assert changes(before, snapshot(app, fuzzed.endpoint)) == {}, \
                f"{where} was refused ({response.status_code}, {flashed}) but changed rows"

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def generated(data: st.DataObject) -> None:
        request = data.draw(page_requests(fuzzed, world), label="request")
        for role in ROLES:
            one(role, request)

    generated()
    for role in ROLES:
        sent, reached = tally[role, "sent"], tally[role, "reached"]
        if fuzzed.admin_only and role != "admin":
            assert reached == 0, f"{reached} requests of an ordinary user reached an admin view"
        else:
            assert sent and reached >= REACH_SHARE * sent, \
                f"as {role}, only {reached} of {sent} requests reached the view"


# One known-valid submission per form, sent the way the generated ones are: the fields are
# named right and the CSRF token works, so the refusals above are the input's doing.
VALID: dict[str, Callable[[World], None]] = {}
NEW_PASSWORD = "another horse battery"
WINDOW = {"since": "2000-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z"}


def valid(endpoint: str) -> Callable[[Callable[[World], None]], Callable[[World], None]]:
    def register(check: Callable[[World], None]) -> Callable[[World], None]:
        VALID[endpoint] = check
        return check
    return register


@valid("auth.register")
def _sign_up(world: World) -> None:
    response = world.submit("user", "POST", "/register", email="new@example.org",
                            display_name="New", password=NEW_PASSWORD, confirm=NEW_PASSWORD)
    assert response.status_code == 302
    assert world.scalar(select(func.count()).select_from(User)) == 3


@valid("auth.login")
def _log_in(world: World) -> None:
    email, password = world.accounts["user"]
    response = world.submit("user", "POST", "/login", email=email, password=password)
    assert response.status_code == 302 and response.location == "/"


@valid("auth.password")
def _change_password(world: World) -> None:
    email, password = world.accounts["user"]
    response = world.submit("user", "POST", "/account/password", current=password,
                            password=NEW_PASSWORD, confirm=NEW_PASSWORD)
    assert response.status_code == 302 and response.location == "/"
    world.accounts["user"] = (email, NEW_PASSWORD)


@valid("auth.logout")
def _log_out(world: World) -> None:
    response = world.submit("user", "POST", "/logout")
    assert response.status_code == 302 and response.location == "/login"


@valid("web.rename")
def _rename(world: World) -> None:
    pk = world.user_devices[0]
    response = world.submit("user", "POST", f"/printers/{pk}/rename", name="Renamed")
    assert response.status_code == 302
    assert world.scalar(select(Device.name).where(Device.id == pk)) == "Renamed"


@valid("web.unlink")
def _unlink(world: World) -> None:
    pk = world.user_devices[0]
    assert world.submit("user", "POST", f"/printers/{pk}/unlink").status_code == 302
    assert world.scalar(select(Device.token_hash).where(Device.id == pk)) is None


@valid("web.unlink_all")
def _unlink_all(world: World) -> None:
    assert world.submit("user", "POST", "/printers/unlink-all", confirm="y").status_code == 302
    assert world.scalar(select(func.count()).select_from(Device).where(
        Device.id.in_(world.user_devices), Device.token_hash.is_not(None))) == 0


@valid("pairing_web.create_code")
def _get_a_code(world: World) -> None:
    assert world.submit("user", "POST", "/printers/add/code").status_code == 200
    assert world.scalar(select(func.count()).select_from(PairingCode)) == 1


@valid("pairing_web.link")
def _enter_a_code(world: World) -> None:
    response = world.submit("user", "POST", "/link", code=world.user_code)
    assert response.status_code == 302 and response.location == "/link/confirm"


@valid("link_web.decide")
def _approve(world: World) -> None:
    _enter_a_code(world)
    shown = shown_request(world.sessions["user"].get("/link/confirm").get_data(as_text=True))
    response = world.submit("user", "POST", "/link/confirm", decision="approve",
                            authorization=shown)
    assert response.status_code == 302 and response.location == "/"
    assert world.scalar(select(DeviceAuthorization.status)) == "approved"


@valid("ip_match_web.link")
def _pick_a_printer(world: World) -> None:
    response = world.submit("user", "POST", f"/printers/nearby/{world.printer.device_id}/link")
    assert response.status_code == 302
    assert response.location == f"/printers/nearby/offers/{world.offer_id}"


@valid("ip_match_web.confirm")
def _confirm_the_code(world: World) -> None:
    code = world.printer.announce().json["confirmation"]["code"]
    response = world.submit("user", "POST", f"/printers/nearby/offers/{world.offer_id}/confirm",
                            code=code)
    assert response.status_code == 302
    assert world.scalar(select(Offer.status)) == "confirmed"


@valid("admin.toggle_kill_switch")
def _switch_off(world: World) -> None:
    response = world.submit("admin", "POST", "/admin/kill-switches", target="qr_code",
                            action="disable", reason="fuzzing")
    assert response.status_code == 302
    assert world.scalar(select(StrategyFlag.enabled).where(
        StrategyFlag.strategy == "qr_code")) is False


@valid("admin.incident_revoke")
def _revoke_a_window(world: World) -> None:
    response = world.submit("admin", "POST", "/admin/incident/revoke", strategy="all",
                            confirm="yes", **WINDOW)
    assert response.status_code == 200 and "Revoked 3" in response.get_data(as_text=True)


@valid("admin.incident_revoke_account")
def _revoke_an_account(world: World) -> None:
    response = world.submit("admin", "POST", "/admin/incident/revoke-account",
                            email=world.accounts["user"][0], reason="fuzzing", confirm="yes")
    assert response.status_code == 302
    assert world.scalar(select(func.count()).select_from(Device).where(
        Device.needs_relink.is_(True))) == 2


@valid("admin.audit")
def _filter_the_audit_log(world: World) -> None:
    response = world.submit("admin", "GET", "/admin/audit", event="link", **WINDOW)
    assert response.status_code == 200 and "printer-0003" in response.get_data(as_text=True)


@valid("admin.incident_query")
def _query_a_window(world: World) -> None:
    response = world.submit("admin", "GET", "/admin/incident", strategy="all", **WINDOW)
    assert response.status_code == 200 and "printer-0003" in response.get_data(as_text=True)


@valid("admin_diagnostics.proxy_diagnostics")
def _ask_what_if(world: World) -> None:
    response = world.submit("admin", "GET", "/admin/diagnostics", peer="9.9.9.9",
                            forwarded_for="1.2.3.4")
    assert response.status_code == 200 and "9.9.9.9" in response.get_data(as_text=True)


@valid("qr_web.open_qr_link")
def _open_a_qr_link(world: World) -> None:
    response = world.submit("user", "GET", f"/link/qr/{world.qr_token}")
    assert response.status_code == 200 and 'value="approve"' in response.get_data(as_text=True)


@pytest.mark.parametrize("endpoint", sorted(VALID))
def test_a_known_valid_submission_of_each_form_succeeds(world: World, endpoint: str) -> None:
    VALID[endpoint](world)


def test_every_post_and_query_form_has_a_known_valid_submission(app: Flask) -> None:
    """A new form post, or a page that reads its query string, must show that its fields
    can be filled in right before the refusals above mean anything for it."""
    def reads_its_query(endpoint: str) -> bool:
        return "request.args" in inspect.getsource(inspect.unwrap(app.view_functions[endpoint]))

    needed = {endpoint for _, method, endpoint in page_routes()
              if method == "POST" or reads_its_query(endpoint)}
    assert needed - VALID.keys() == set()
    assert len(page_routes()) >= 30
