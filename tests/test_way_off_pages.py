"""The page a person reaches on a way of linking that is switched off: 503, naming the way
in their words (never a strategy's name or the operator's reason), with links to the ways
still on, and none when all are off. tests/browser/test_switched_off_ways.py presses the
ways in chromium.
"""

from __future__ import annotations

import re
from html import unescape

import pytest

from tests.support import device_flow_fixtures
from tests.support.apps import another_app
from tests.support.pairing import (
    FRESH_SCAN,
    enter_code,
    qr_path,
    started,
    switch,
)
from tsd_server.discovery import kill_switch

# The way's start page of "Add a printer", by way.
PAGES = {"ip_match": "/printers/nearby", "pairing_code_show": "/printers/add/code",
         "pairing_code_enter": "/link", "qr_code": "/printers/add/qr"}
NEAR_YOU = "Linking printers near you is switched off right now"
SHOW_CODE = "Getting a code to type into the printer is switched off right now"
ENTER_CODE = "Typing in the code a printer shows is switched off right now"
QR = "Linking with the printer's QR code is switched off right now"
NONE_WORK = "No way of linking a printer works on this server right now."
INTERNAL_NAMES = ("ip_match", "pairing_code", "qr_code", "Strategy disabled")


app_config = device_flow_fixtures.app_config  # the pairing limits out of the way
owner = device_flow_fixtures.owner


@pytest.fixture
def session(owner):
    """A logged-in browser session, from 1.1.1.1."""
    return owner[1]


def refusal(response) -> tuple[str, dict[str, str]]:
    """The page's heading and the ways it links to ({way: href})."""
    assert response.status_code == 503, response.status_code
    html = unescape(response.get_data(as_text=True))
    heading = re.search(r"<h1>(.*?)</h1>", html, re.S).group(1)
    ways = dict(re.findall(r'data-way-on="([a-z_]+)">\s*<h3><a href="([^"]+)"', html))
    visible = re.sub(r"<[^>]+>", " ", html)
    assert not [name for name in INTERNAL_NAMES if name in visible]
    assert "Back to my printers" in visible
    return heading, ways


def on_except(*off: str) -> dict[str, str]:
    return {way: page for way, page in PAGES.items() if not way.startswith(off)}


@pytest.mark.parametrize(("strategy", "path", "heading"), [
    ("ip_match", "/printers/nearby", NEAR_YOU),
    ("pairing_code", "/printers/add/code", SHOW_CODE),
    ("pairing_code", "/link", ENTER_CODE),
    ("qr_code", "/printers/add/qr", QR),
])
def test_each_way_off_names_itself_and_links_to_the_ways_on(app, session, strategy, path,
                                                             heading):
    switch(app, strategy, False)
    shown, ways = refusal(session.get(path))
    assert shown == heading
    assert ways == on_except(strategy)
    for page in ways.values():  # each of them works
        assert session.get(page).status_code == 200


def test_a_form_of_a_way_that_is_off_names_that_way(app, session):
    switch(app, "pairing_code", False)
    assert refusal(session.form_post("/printers/add/code", {}))[0] == SHOW_CODE
    assert refusal(session.form_post("/link", {"code": "WDJB-MJHT"}))[0] == ENTER_CODE


def test_a_qr_link_opened_while_qr_codes_are_off(app, client, session):
    answer = started(client)
    switch(app, "qr_code", False)
    shown, ways = refusal(session.get(qr_path(answer), headers=FRESH_SCAN))
    assert (shown, ways) == (QR, on_except("qr_code"))


def test_with_every_way_off_it_says_so_and_links_to_none(app, session):
    switch(app, "all", False)
    for path in PAGES.values():
        response = session.get(path)
        assert refusal(response)[1] == {}
        assert NONE_WORK in response.get_data(as_text=True)


def test_switched_off_in_deployment_says_so_and_not_the_operators_words(app, session):
    app.config["DISCOVERY_DISABLED"] = "ip_match"
    response = session.get("/printers/nearby")
    assert refusal(response) == (NEAR_YOU, on_except("ip_match"))
    assert "Switched off in this server's deployment settings." in unescape(
        response.get_data(as_text=True))

    app.config["DISCOVERY_DISABLED"] = ""
    with app.test_request_context():
        kill_switch.set_flag("qr_code", enabled=False, reason="operator-note-7f3 ticket 12",
                             actor="cli")
    page = session.get("/printers/add/qr").get_data(as_text=True)
    assert "Linking with the printer's QR code is switched off" in unescape(page), page
    assert "operator-note-7f3" not in page


@pytest.mark.parametrize(("via", "heading"), [("pairing_code", ENTER_CODE), ("qr_code", QR)])
def test_the_approval_page_names_the_way_the_person_came_by(app, client, session, via,
                                                            heading):
    answer = started(client)
    if via == "pairing_code":
        assert enter_code(session, answer["user_code"]).status_code == 302
    else:
        assert session.get(qr_path(answer), headers=FRESH_SCAN).status_code == 200
    switch(app, via, False)
    shown, ways = refusal(session.get("/link/confirm"))
    assert (shown, ways) == (heading, on_except(via))


def test_switched_off_by_another_process_after_the_guard_read_it(app, database, session):
    """This process's guard still has "on" cached; the service's fresh read says off: the
    same page, not the JSON error's words."""
    app.config["KILL_SWITCH_CACHE_SECONDS"] = 60  # past start-up's check: a long race
    assert session.get("/printers/add/code").status_code == 200  # "on", cached here
    with another_app(database) as other, other.test_request_context():
        from tsd_server.discovery import kill_switch

        kill_switch.set_flag("pairing_code", enabled=False, reason="test", actor="cli")
    shown, ways = refusal(session.form_post("/printers/add/code", {}))
    assert (shown, ways) == (SHOW_CODE, on_except("pairing_code"))
