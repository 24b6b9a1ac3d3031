"""The OpenAPI document at /api/v1/openapi.json stays true to the app's URL map."""

from __future__ import annotations

import configparser
import fnmatch
import json
import re
from pathlib import Path

import pytest
import schemathesis

from tsd_server.api import openapi
from tsd_server.printable_text import has_control_characters

ROOT = Path(__file__).resolve().parent.parent
API_PREFIX = "/api/v1/"
IGNORED_METHODS = {"HEAD", "OPTIONS"}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
CONVERTER = re.compile(r"<(?:[a-z_]+(?:\([^)]*\))?:)?([A-Za-z_][A-Za-z0-9_]*)>")
# Every character of the Basic Multilingual Plane but the surrogates (no text on their
# own), and two beyond it: what a free-text field's pattern is checked against.
CHARACTERS = [chr(code) for code in range(0x10000) if not 0xD800 <= code <= 0xDFFF] + [
    "\U0001f600", "\U000e0001"]


@pytest.fixture(scope="module")
def document() -> dict:
    return json.loads(openapi.DOCUMENT.read_text())


def served_operations(app) -> set[tuple[str, str]]:
    """(OpenAPI path, method) for every /api/v1 rule of the app."""
    return {
        (CONVERTER.sub(r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules() if rule.rule.startswith(API_PREFIX)
        for method in rule.methods - IGNORED_METHODS
    }


def documented_operations(document: dict) -> set[tuple[str, str]]:
    return {(path, method) for path, item in document["paths"].items()
            for method in item if method in HTTP_METHODS}


def test_every_api_route_is_documented_and_nothing_else(app, document):
    served, documented = served_operations(app), documented_operations(document)
    assert served - documented == set(), "routes missing from tsd_server/api/openapi.json"
    assert documented - served == set(), "documented routes the app does not have"
    assert len(served) >= 15


def test_path_parameters_are_the_rule_arguments(app, document):
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(API_PREFIX):
            continue
        path = CONVERTER.sub(r"{\1}", rule.rule)
        for method in rule.methods - IGNORED_METHODS:
            operation = document["paths"][path][method.lower()]
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == set(rule.arguments), (path, method)


def test_the_document_is_valid_openapi_3_1(document):
    schema = schemathesis.openapi.from_dict(document)
    schema.validate()  # raises on anything the OpenAPI 3.1 meta-schema refuses
    assert document["openapi"].startswith("3.1.")


def test_every_operation_documents_errors_in_the_shared_shape(document):
    """Each non-2xx answer is JSON {"error","message"} naming the codes it can carry."""
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation.get("security") is not None, (path, method)
            for status, response in operation["responses"].items():
                if status.startswith("2"):
                    continue
                schema = response["content"]["application/json"]["schema"]
                assert schema["allOf"][0] == {"$ref": "#/components/schemas/Error"}
                assert schema["allOf"][1]["properties"]["error"]["enum"], (path, status)


def test_user_calls_need_the_cookie_and_csrf_on_writes_device_me_the_bearer(document):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            schemes = {name for requirement in operation["security"] for name in requirement}
            if "sessionCookie" in schemes and method != "get":
                assert "csrfToken" in schemes, (path, method)
                assert "csrf_failed" in operation["responses"]["400"]["content"][
                    "application/json"]["schema"]["allOf"][1]["properties"]["error"]["enum"]
            if "sessionCookie" in schemes:
                assert "401" in operation["responses"], (path, method)
    assert document["paths"]["/api/v1/device/me"]["get"]["security"] == [{"deviceBearer": []}]


def test_served_document_is_the_packaged_file(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_data() == openapi.DOCUMENT.read_bytes()


def test_a_broken_document_stops_start_up(tmp_path, monkeypatch):
    broken = tmp_path / "openapi.json"
    broken.write_text('{"openapi": "3.0.0", "paths": {}}')
    monkeypatch.setattr(openapi, "DOCUMENT", broken)
    with pytest.raises(ValueError, match="not an OpenAPI 3.1"):
        openapi.load()


def test_the_document_is_in_the_package_data():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    patterns = config["options.package_data"]["tsd_server"].split()
    relative = openapi.DOCUMENT.relative_to(ROOT / "tsd_server").as_posix()
    assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns)


def free_text_patterns(document: dict) -> dict[str, str]:
    """The pattern of every free-text field (a name, a model), by schema and property:
    those patterns are a character class refused throughout."""
    return {f"{name}.{prop}": value["pattern"]
            for name, schema in document["components"]["schemas"].items()
            for prop, value in schema.get("properties", {}).items()
            if value.get("pattern", "").startswith("^[^")}


def test_free_text_patterns_refuse_what_the_server_refuses(document):
    """The document is a file written by hand, so nothing derives its patterns from
    printable_text.CONTROL_CHARACTERS, which every JSON text field is checked against:
    this keeps them equal, character by character (a client or a fuzzer that trusts the
    document would otherwise send names the server refuses)."""
    patterns = free_text_patterns(document)
    assert len(patterns) >= 7, patterns
    for field, pattern in patterns.items():
        compiled = re.compile(pattern)
        disagree = [f"U+{ord(character):04X}" for character in CHARACTERS
                    if bool(compiled.fullmatch(f"a{character}b"))
                    == has_control_characters(character)]
        assert not disagree, (field, disagree[:20])


@pytest.mark.parametrize("character", ["\x1b", "\x7f", "\x85", "\x9b", "\u2028", "\u202e",
                                       "\u2067", "\u200f", "\u00a0", "é", "\U0001f600"])
def test_the_server_takes_the_names_the_document_allows(app, client, document, character):
    name = f"Voron{character}2.4"
    pattern = document["components"]["schemas"]["AuthorizeRequest"]["properties"]["name"][
        "pattern"]
    answer = client.post("/api/v1/device/authorize", json={"device_id": "printer-0002",
                                                           "name": name},
                         environ_base={"REMOTE_ADDR": "8.8.8.8"})
    assert answer.status_code in (200, 400), answer.get_json()
    assert (answer.status_code == 200) == bool(re.fullmatch(pattern, name)), answer.get_json()


def test_writes_without_a_session_are_refused_as_the_document_says(client, document):
    """The CSRF check runs before the login check: a user's write without any session
    cookie is 400 ``csrf_failed``, never 401, and the document says so where it
    describes the 401."""
    arguments = {"device_id": "printer-0001", "offer_id": "x" * 32, "device_pk": "1"}
    writes = [(path, method, operation) for path, item in document["paths"].items()
              for method, operation in item.items()
              if any("csrfToken" in requirement for requirement in operation["security"])]
    assert len(writes) >= 4
    for path, method, operation in writes:
        reply = client.open(path.format(**arguments), method=method.upper(),
                            headers={"X-CSRFToken": "anything"},
                            environ_base={"REMOTE_ADDR": "8.8.8.8"})
        assert (reply.status_code, reply.get_json()["error"]) == (400, "csrf_failed"), path
        refused = operation["responses"]["400"]
        assert "csrf_failed" in refused["content"]["application/json"]["schema"]["allOf"][1][
            "properties"]["error"]["enum"]
        assert "no session cookie" in refused["description"], path
        assert "csrf_failed" in operation["responses"]["401"]["description"], path
