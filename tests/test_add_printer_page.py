"""The "Add printer" page and the pages it leads to for pairing codes and QR codes."""

from __future__ import annotations

import html as html_lib
import re

import pytest

from tests.support import device_flow_fixtures
from tests.support.pairing import CODE_FORMAT, redeem, switch

app_config = device_flow_fixtures.app_config  # the pairing limits out of the way
owner = device_flow_fixtures.owner


@pytest.fixture
def session(owner):
    """A logged-in browser session, from 1.1.1.1."""
    return owner[1]


def ways(html: str) -> list[str]:
    """The strategies offered, in page order (pairing_code offers two ways)."""
    return list(dict.fromkeys(re.findall(r'data-strategy="([a-z_]+)"', html)))


def off(html: str) -> list[str]:
    return re.findall(r'data-strategy-off="([a-z_]+)"', html)


def test_lists_every_enabled_way_with_its_title_summary_and_start_link(app, session):
    from tsd_server.discovery import registry

    html = html_lib.unescape(session.get("/printers/add").get_data(as_text=True))
    assert ways(html) == registry.names()
    for strategy in registry.all_strategies():
        for way in strategy.add_printer_ways():
            assert way.title in html and way.summary in html
    assert re.findall(r'data-way="([a-z_]+)"', html) == [
        "ip_match", "pairing_code_show", "pairing_code_enter", "qr_code"]
    for href in ("/printers/nearby", "/printers/add/code", "/link", "/printers/add/qr"):
        assert f'href="{href}"' in html
    assert off(html) == []


def test_hides_what_is_off_and_says_why(app, session):
    switch(app, "pairing_code", False)
    html = session.get("/printers/add").get_data(as_text=True)
    assert "pairing_code" not in ways(html)
    assert off(html) == ["pairing_code"]
    assert 'href="/printers/add/code"' not in html and 'href="/link"' not in html
    assert "Switched off by an administrator." in html


def test_deployment_switch_off_is_explained(app, session):
    app.config["DISCOVERY_DISABLED"] = "qr_code"
    html = session.get("/printers/add").get_data(as_text=True)
    assert off(html) == ["qr_code"]
    assert "deployment settings" in html


def test_everything_off_says_so(app, session):
    switch(app, "all", False)
    html = session.get("/printers/add").get_data(as_text=True)
    assert ways(html) == [] and "No way of linking printers is available" in html


def test_a_strategy_without_a_start_page_is_listed_without_a_link(app, session, monkeypatch):
    from tsd_server.discovery import registry

    strategy = registry.get("qr_code")
    monkeypatch.setattr(type(strategy), "add_printer_endpoint", None)
    html = session.get("/printers/add").get_data(as_text=True)
    assert "qr_code" in ways(html) and 'href="/printers/add/qr"' not in html
    monkeypatch.setattr(type(strategy), "add_printer_endpoint", "no_such.endpoint")
    assert session.get("/printers/add").status_code == 200


def test_needs_login(app, client):
    response = client.get("/printers/add")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_dashboard_links_to_add_printer(app, session):
    assert 'href="/printers/add"' in session.get("/").get_data(as_text=True)


def test_code_page_shows_a_usable_code_with_its_expiry_without_javascript(
        app, session, client, clock):
    assert session.get("/printers/add/code").status_code == 200
    page = session.form_post("/printers/add/code", {})
    html = page.get_data(as_text=True)
    code = re.search(r"data-pairing-code>([A-Z-]+)<", html).group(1)
    assert CODE_FORMAT.fullmatch(code)
    assert "12:10:00 UTC" in html and "in 10 minutes" in html  # works without JS
    assert 'data-expires-in="600"' in html
    assert re.search(r'<script src="/static/pairing_countdown.js[^"]*" defer>', html)
    assert "<script>" not in html  # nothing inline: the CSP forbids it
    assert redeem(client, code).status_code == 201


@pytest.mark.parametrize(("ttl", "said"), [
    (60, "(in 1 minute)"), (90, "(in 1 minute 30 seconds)"), (600, "(in 10 minutes)"),
    (121, "(in 2 minutes 1 second)")])
def test_code_page_says_how_long_the_code_lasts_in_words(app, session, ttl, said):
    app.config["PAIRING_CODE_TTL"] = ttl
    html = session.form_post("/printers/add/code", {}).get_data(as_text=True)
    assert said in re.sub(r"\s+", " ", html)
    assert "1 minutes" not in html and "1 seconds" not in html
    # The words are in their own element: the countdown hides them once the code expired.
    assert re.search(r"<span data-expires-in-words>\s*\(in [^<]*\)</span>", html)


def test_code_page_warns_that_the_code_is_for_your_own_printer_only(app, session):
    for html in (session.get("/printers/add/code").get_data(as_text=True),
                 session.form_post("/printers/add/code", {}).get_data(as_text=True)):
        text = re.sub(r"\s+", " ", html_lib.unescape(html))
        assert "Type this code only into your own printer, in front of you." in text
        assert "Never read it out or send it to anyone" in text


def test_code_page_needs_csrf(app, session):
    response = session.client.post("/printers/add/code", data={},
                                   environ_base=session.environ_base)
    assert response.status_code == 400


def test_countdown_script_is_served(app, client):
    response = client.get("/static/pairing_countdown.js")
    assert response.status_code == 200 and b"data-expires-in" in response.data


def test_qr_help_page(app, session):
    html = session.get("/printers/add/qr").get_data(as_text=True)
    assert "Scan the QR code" in html and "in front of you" in html
