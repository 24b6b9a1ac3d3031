"""Security headers on every page: the app's URL map is walked, so a new page is covered.

Clickjacking the "Approve" button would hand a stranger a printer (X-Frame-Options DENY and
frame-ancestors 'none'); pages show one-time codes (no caching anywhere); no inline script
or style may run (a CSP without 'unsafe-inline'), and nothing is loaded from elsewhere
(self-hosted boxes may be offline, and a CDN would see every page).
"""

from __future__ import annotations

import re

import pytest

from tests.support.ip_match_world import InProcessEndpoint, World, layout_direct
from tests.support.pairing import (
    FRESH_SCAN,
    LOOSE_LIMITS,
    authorize,
    decide,
    enter_code,
    issue_code,
    poll,
    redeem,
    started,
    switch,
)

SAFE_REFERRER_POLICIES = {"no-referrer", "same-origin", "strict-origin",
                          "strict-origin-when-cross-origin"}
# Pages every build must have: the walk below must find at least these (not pass vacuously).
EXPECTED_PAGES = {"/", "/login", "/register", "/printers/add", "/printers/add/code",
                  "/printers/add/qr", "/printers/nearby", "/link", "/link/confirm",
                  "/link/qr/<token>", "/admin/kill-switches", "/admin/audit",
                  "/admin/incident", "/admin/diagnostics"}
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)
EVENT_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.I)
STYLE_ATTRIBUTE = re.compile(r"<[^>]+\sstyle\s*=", re.I)
EXTERNAL_RESOURCE = re.compile(
    r"""<(?:script|link|img|iframe)[^>]+(?:src|href)=["']?(?:https?:)?//""", re.I)


@pytest.fixture
def app_config():
    return dict(LOOSE_LIMITS)


def csp_directives(header: str) -> dict[str, list[str]]:
    directives = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0].lower()] = words[1:]
    return directives


def check_headers(response, path: str) -> None:
    headers = response.headers
    csp = csp_directives(headers.get("Content-Security-Policy", ""))
    assert csp, f"{path}: no Content-Security-Policy"
    assert csp.get("default-src") == ["'self'"], path
    for directive in ("script-src", "style-src"):
        sources = csp.get(directive, csp["default-src"])
        assert "'unsafe-inline'" not in sources and "'unsafe-eval'" not in sources, path
        assert all(source in ("'self'",) for source in sources), f"{path}: {directive} {sources}"
    assert csp.get("frame-ancestors") == ["'none'"], path
    assert csp.get("form-action") == ["'self'"], path
    assert csp.get("object-src") == ["'none'"], path
    assert csp.get("base-uri") == ["'none'"], path
    assert headers.get("X-Frame-Options") == "DENY", path
    assert headers.get("X-Content-Type-Options") == "nosniff", path
    assert headers.get("Referrer-Policy") in SAFE_REFERRER_POLICIES, path


def check_not_cached(headers, path: str) -> None:
    """``no-store``, and ``Pragma: no-cache`` for HTTP/1.0 caches: RFC 6749 §5.1 asks both
    of an answer carrying a token."""
    assert headers.get("Cache-Control") == "no-store", path
    assert headers.get("Pragma") == "no-cache", path


def check_page(response, path: str) -> None:
    check_headers(response, path)
    check_not_cached(response.headers, path)
    if response.status_code in (301, 302, 303):
        return
    assert response.mimetype == "text/html", f"{path}: {response.mimetype}"
    html = response.get_data(as_text=True)
    assert not INLINE_SCRIPT.search(html), f"{path}: inline <script>"
    assert not EVENT_HANDLER.search(html), f"{path}: inline event handler"
    assert not STYLE_ATTRIBUTE.search(html), f"{path}: style attribute"
    assert "<style" not in html.lower(), f"{path}: <style> element"
    assert not EXTERNAL_RESOURCE.search(html), f"{path}: loads something from elsewhere"


def html_get_rules(app):
    """Every GET route that is not JSON, a static file or the health check."""
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or rule.endpoint == "static":
            continue
        if rule.rule.startswith("/api/") or rule.rule == "/healthz":
            continue
        yield rule


@pytest.fixture
def world(app, make_user, login, link_device, client):
    """An admin with a printer and a QR link waiting, so pages show real content."""
    uid, email, password = make_user(is_admin=True)
    device_pk, _ = link_device(uid)
    started = authorize(client).get_json()
    token = started["verification_uri_complete"].rsplit("/", 1)[1]
    return {"session": login(email, password, REMOTE_ADDR="1.1.1.1"),
            "args": {"device_pk": device_pk, "token": token, "offer_id": "no-such-offer",
                     "device_id": "printer-0001"}}


def url_for_rule(rule, args: dict) -> str:
    path = rule.rule
    for name in rule.arguments:
        path = re.sub(rf"<(?:[a-z]+:)?{name}>", str(args[name]), path)
    return path


def test_every_html_page_has_the_headers(app, world, client):
    rules = list(html_get_rules(app))
    assert EXPECTED_PAGES <= {rule.rule for rule in rules}
    for rule in rules:
        path = url_for_rule(rule, world["args"])
        for who, response in (("admin", world["session"].get(path)), ("anonymous",
                                                                      client.get(path))):
            assert response.status_code < 500, f"{path} as {who}: {response.status_code}"
            check_page(response, f"{path} as {who}")


def test_pages_of_switched_off_strategies_have_the_headers(app, world):
    switch(app, "all", False)
    refused = 0
    for rule in html_get_rules(app):
        response = world["session"].get(url_for_rule(rule, world["args"]))
        refused += response.status_code == 503
        check_page(response, f"{rule.rule} (all off)")
    assert refused >= 5  # the strategies' own pages answered 503, as HTML with headers


def test_error_pages_have_the_headers(app, world, client):
    for response in (client.get("/no/such/page"), client.post("/login", data={}),
                     client.get("/printers/add/../../etc/passwd")):
        check_page(response, response.request.path)


def test_a_missing_static_file_is_an_error_page_and_not_cached(app, world):
    """Under /static/ a missing file is still the static endpoint, but its answer is the
    HTML error page, with the session's CSRF token in it."""
    missing = world["session"].get("/static/no-such-file")
    assert missing.status_code == 404 and 'name="csrf-token"' in missing.get_data(as_text=True)
    check_page(missing, "/static/no-such-file")


def test_pages_that_show_codes_are_not_cached(app, world):
    session = world["session"]
    code_page = session.form_post("/printers/add/code", {})
    assert code_page.status_code == 200 and "data-pairing-code" in code_page.get_data(
        as_text=True)
    check_page(code_page, "POST /printers/add/code")
    # The question a QR link asks first (its link holds a one-time value), then a scan.
    asked = session.get(f"/link/qr/{world['args']['token']}")
    assert asked.status_code == 200 and "Did you just scan" in asked.get_data(as_text=True)
    check_page(asked, "/link/qr/<token> (asked first)")
    qr_page = session.get(f"/link/qr/{world['args']['token']}", headers=FRESH_SCAN)
    assert qr_page.status_code == 200 and "Approve" in qr_page.get_data(as_text=True)
    check_page(qr_page, "/link/qr/<token>")
    confirm = session.get("/link/confirm")
    assert confirm.status_code == 200
    check_page(confirm, "/link/confirm")


def test_json_answers_are_not_cached_and_static_files_may_be(app, world, client):
    started = authorize(client, device_id="printer-0009")
    assert started.status_code == 200
    check_headers(started, "/api/v1/device/authorize")
    check_not_cached(started.headers, "/api/v1/device/authorize")
    stylesheet = client.get("/static/style.css")
    assert stylesheet.status_code == 200
    check_headers(stylesheet, "/static/style.css")
    assert "no-store" not in stylesheet.headers.get("Cache-Control", "")


def test_answers_carrying_an_access_token_are_not_cached(app, world, client, clock):
    """The three answers that hand a printer its token: the device flow's, a redeemed web
    code's and ip_match's "linked" announce."""
    session = world["session"]
    flow = started(client, device_id="printer-0010")
    enter_code(session, flow["user_code"])
    decide(session, "approve")
    clock.advance(seconds=10)
    token = poll(client, flow["device_code"])
    assert token.status_code == 200 and "access_token" in token.get_json()
    check_not_cached(token.headers, "POST /api/v1/device/token")
    redeemed = redeem(client, issue_code(session)["code"], device_id="printer-0011")
    assert redeemed.status_code == 201
    check_not_cached(redeemed.headers, "POST /api/v1/pairing/redeem")
    nearby = World(app, lambda home: InProcessEndpoint(app, home, layout_direct))
    printer, person = nearby.printer("8.8.4.4"), nearby.person("8.8.4.4")
    printer.announce()
    offer = person.link(printer.device_id).json["offer_id"]
    person.confirm(offer, printer.announce().json["confirmation"]["code"])
    linked = printer.announce()
    assert linked.json["status"] == "linked" and "access_token" in linked.json
    check_not_cached(linked.headers, "POST /api/v1/discovery/announce")
