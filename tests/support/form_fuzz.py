"""Generated requests for every page route: the routes and the fields their views read,
what a request carries and how it is sent, and the hypothesis strategies that draw one.

tests/test_fuzz_forms.py sends these and checks what they did; the generating lives here so
that the test file holds its checks (what a refusal may change, the known-valid submissions)
and nothing else. Nothing here knows the test's world but the real values it hands over
(``RealValues``).
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, timedelta, timezone
from typing import Any, Protocol
from unittest import mock
from urllib.parse import quote, urlencode

from flask import Flask
from flask_wtf import FlaskForm
from hypothesis import strategies as st
from werkzeug.test import TestResponse
from wtforms.fields.core import UnboundField

from tsd_server.admin.access import refuse_non_admins

SKIPPED_PREFIXES = (
    "/static/",  # files of the package: no input but their name, and no state to change
    "/api/",  # JSON: tests/test_schemathesis.py fuzzes every /api/ route against its
    # OpenAPI document, and tests/test_openapi.py keeps every /api/ route in that document
)
IGNORED_METHODS = {"HEAD", "OPTIONS"}  # Flask answers them from the GET view or by itself


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


class RealValues(Protocol):
    """What the generator takes from the test's world so that some requests get deep."""

    all_fields: list[str]  # every field of every page, also sent where it does not belong
    url_values: dict[str, list[str]]  # URL parameter: real objects' ids
    field_values: list[str]  # real emails, codes, strategy names, ...


@st.composite
def page_requests(draw: st.DrawFn, route: Route, world: RealValues) -> Fuzzed:
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
