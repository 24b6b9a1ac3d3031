"""The admin proxy diagnostics page: what the server sees for the admin's own request."""

from __future__ import annotations

import html as html_lib
import re

import pytest
from sqlalchemy import func, select

from tsd_server.extensions import db
from tsd_server.models import AuditEvent

PAGE = "/admin/diagnostics"
BEHIND_PROXY = {"PROXY_FIX_X_FOR": 1, "TRUSTED_PROXIES": "10.0.0.5/32"}


@pytest.fixture
def app_config(request):
    return getattr(request, "param", {})


@pytest.fixture
def admin(make_user, login):
    def factory(**environ):
        _, email, password = make_user(is_admin=True)
        return login(email, password, **environ)

    return factory


def field(html: str, name: str) -> str:
    match = re.search(rf'data-field="{name}">([^<]*)<', html)
    assert match, f"no {name} on the page"
    return html_lib.unescape(match.group(1))


def verdicts(html: str) -> list[str]:
    return re.findall(r'data-verdict="([a-z_]+)"', html)


def page(session, **query) -> str:
    response = session.get(PAGE, query_string=query)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def what_if(session, **query) -> str:
    """The page's "Another request" answer for ``query``."""
    return page(session, **query).split("data-example", 1)[1]


def test_only_admins(app, client, make_user, login):
    assert "/login" in client.get(PAGE).headers["Location"]
    _, email, password = make_user()
    assert login(email, password).get(PAGE).status_code == 403


def test_a_direct_public_client_works(app, admin):
    html = page(admin(REMOTE_ADDR="8.8.8.8"))
    assert field(html, "client_ip") == "8.8.8.8" and field(html, "peer_ip") == "8.8.8.8"
    assert field(html, "household") == "8.8.8.8/32" and field(html, "eligible") == "yes"
    assert verdicts(html) == ["works"]
    assert 'data-header="X-Forwarded-For">not sent<' in html
    assert 'data-setting="TSD_PROXY_FIX_X_FOR">0<' in html
    assert 'data-level="OK"' in html


def test_forged_header_without_a_trusted_proxy_is_shown_as_refused(app, admin):
    html = page(admin(REMOTE_ADDR="8.8.8.8", HTTP_X_FORWARDED_FOR="1.1.1.1"))
    assert field(html, "client_ip") == "8.8.8.8"  # not the forged 1.1.1.1
    assert verdicts(html) == ["untrusted_forwarded_header"]
    assert 'data-header="X-Forwarded-For">1.1.1.1<' in html


@pytest.mark.parametrize("app_config", [BEHIND_PROXY], indirect=True)
def test_behind_a_trusted_proxy_the_forwarded_client_is_used(app, admin):
    session = admin(REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR="9.9.9.9, 1.1.1.1")
    html = page(session)
    assert field(html, "client_ip") == "1.1.1.1" and field(html, "peer_ip") == "10.0.0.5"
    assert field(html, "forwarded_for") == "9.9.9.9, 1.1.1.1"
    assert verdicts(html) == ["works"]
    assert 'data-setting="TSD_TRUSTED_PROXIES">10.0.0.5/32<' in html
    # The incident: the proxy stops passing the client's address.
    dropped = admin(REMOTE_ADDR="10.0.0.5")
    assert verdicts(page(dropped)) == ["missing_forwarded_header"]


@pytest.mark.parametrize("app_config", [{"PROXY_FIX_X_FOR": 1}], indirect=True)
def test_findings_of_proxy_check_are_listed(app, admin):
    html = page(admin(REMOTE_ADDR="8.8.8.8"))
    assert 'data-level="ERROR"' in html and "TRUSTED_PROXIES is empty" in html


def test_non_public_address_and_switched_off_strategy(app, admin):
    from tests.support.pairing import switch

    session = admin(REMOTE_ADDR="192.168.1.20")
    assert verdicts(page(session)) == ["non_public_address"]
    switch(app, "ip_match", False)
    html = page(admin(REMOTE_ADDR="8.8.8.8"))
    assert verdicts(html) == ["strategy_disabled"] and "runtime: test" in html


def test_blocked_household_is_reported(app, admin, clock):
    from tsd_server.discovery.ip_match import breaker
    from tsd_server.discovery.ip_match.settings import current

    with app.test_request_context():
        breaker.trip("8.8.8.8/32", 9, current(), clock())
    assert verdicts(page(admin(REMOTE_ADDR="8.8.8.8"))) == ["household_blocked"]
    assert verdicts(page(admin(REMOTE_ADDR="1.1.1.1"))) == ["works"]


def test_looking_is_not_an_ip_match_lookup(app, admin):
    """More admins than the breaker allows look from one household: nothing trips."""
    limit = app.config["IP_MATCH_MAX_ACCOUNTS_PER_HOUSEHOLD"]
    for _ in range(limit + 2):
        assert verdicts(page(admin(REMOTE_ADDR="8.8.8.8"))) == ["works"]
    with app.app_context():
        trips = db.session.scalar(select(func.count()).select_from(AuditEvent)
                                  .where(AuditEvent.event == "breaker_trip"))
    assert trips == 0


def test_what_if_another_request(app, admin):
    session = admin(REMOTE_ADDR="8.8.8.8")
    example = what_if(session, peer="1.1.1.1", forwarded_for="9.9.9.9")
    assert field(example, "client_ip") == "1.1.1.1"
    assert verdicts(example) == ["untrusted_forwarded_header"]
    refused = page(session, peer="1.1.1.1:80")
    assert "must be an IP address" in refused and "data-example" not in refused


@pytest.mark.parametrize("app_config", [{"PROXY_FIX_X_FOR": 1, "TRUSTED_PROXIES": "unix:"}],
                         indirect=True)
def test_what_if_a_request_through_the_unix_socket(app, admin):
    """The shipped production shape (gunicorn on a unix socket, ``unix:`` trusted) can be
    asked about, as with ``flask proxy-check --peer unix:``; a TCP peer is still not nginx."""
    session = admin(REMOTE_ADDR="8.8.8.8")
    for spelling in ("unix:", "UNIX:"):
        example = what_if(session, peer=spelling, forwarded_for="1.1.1.1, 9.9.9.9")
        assert field(example, "client_ip") == "9.9.9.9" and field(example, "peer_ip") == "unix:"
        assert verdicts(example) == ["works"]
    forged = what_if(session, peer="127.0.0.1", forwarded_for="9.9.9.9")
    assert field(forged, "client_ip") == "127.0.0.1"
    assert verdicts(forged) == ["untrusted_forwarded_header"]
    for spelling in ("unix", "unix:/run/tsd-server.sock"):
        refused = page(session, peer=spelling)
        assert "must be an IP address (no port), or unix:" in refused
        assert "data-example" not in refused


@pytest.mark.parametrize("app_config", [BEHIND_PROXY], indirect=True)
def test_a_unix_socket_not_trusted_is_not_believed_in_the_what_if(app, admin):
    """Behind a trusted TCP proxy (10.0.0.5), a request through a unix socket is not
    believed: its header is the client's own, unverified."""
    session = admin(REMOTE_ADDR="8.8.8.8")
    trusted = what_if(session, peer="10.0.0.5", forwarded_for="9.9.9.9")
    assert field(trusted, "client_ip") == "9.9.9.9" and verdicts(trusted) == ["works"]
    example = what_if(session, peer="unix:", forwarded_for="9.9.9.9")
    assert field(example, "client_ip") != "9.9.9.9"
    assert verdicts(example) == ["untrusted_forwarded_header"]


def test_hostile_header_is_escaped_and_cut(app, admin):
    hostile = "<script>alert(1)</script>" + "x" * 1000
    html = page(admin(REMOTE_ADDR="8.8.8.8", HTTP_X_REAL_IP=hostile))
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    assert "x" * 400 not in html
