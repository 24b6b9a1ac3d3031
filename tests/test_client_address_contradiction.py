"""A trusted proxy whose X-Real-IP or Forwarded contradicts its X-Forwarded-For lets the
client choose one of the two: it passes clients' own X-Forwarded-For on (the hop is the
client's), or it passes on an X-Real-IP or Forwarded the client sent (the hop is real). No
client address is believed then (``contradictory_forwarded_headers``): rate limits and
audit rows fall back to the proxy, the claimed hop stays in ``forwarded_for`` alone, and the
audit row keeps the proxy's competing claim; the approval page's warning weighs both.
Security review: 8 wrong log-ins, each with a new forged hop, were all answered 400, never
429, and audited under the forged addresses."""

from __future__ import annotations

import pytest

from tests.conftest import CSRF_META
from tests.support.pairing import audit_rows
from tsd_server import audit
from tsd_server.client_address import CONTRADICTORY_FORWARDED_HEADERS, resolve, warning_household
from tsd_server.extensions import db

PROXY = "127.0.0.1"
PASSWORD = "correct horse battery"
# What the proxy wrote itself, naming the client it saw (8.8.4.4), in either header.
PROXYS_CLAIM = {"HTTP_X_REAL_IP": "8.8.4.4"}
CLAIMS = {"X-Real-IP": PROXYS_CLAIM,
          "Forwarded": {"HTTP_FORWARDED": 'for="8.8.4.4:61234";proto=https'}}


@pytest.fixture
def app_config():
    return {"TRUSTED_PROXIES": f"{PROXY}/32", "PROXY_FIX_X_FOR": 1,
            "BASE_URL": "https://print.example.org",
            "LOGIN_LIMIT_PER_IP": "3 per minute", "LOGIN_LIMIT_PER_EMAIL": "1000 per minute"}


def through_proxy(forged: str, claim: dict[str, str]) -> dict[str, str]:
    """A request through the proxy, carrying the client's forged X-Forwarded-For."""
    return {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": forged, **claim}


def log_in(app, email: str, environ: dict[str, str]) -> int:
    """One wrong log-in from a fresh browser; the answer's status."""
    client = app.test_client()
    page = client.get("/login", environ_base=environ).get_data(as_text=True)
    return client.post("/login", data={"email": email, "password": "wrong",
                                       "csrf_token": CSRF_META.search(page).group(1)},
                       environ_base=environ).status_code


@pytest.mark.parametrize("claim", CLAIMS.values(), ids=CLAIMS.keys())
def test_a_new_forged_hop_each_time_does_not_escape_the_login_limit(app, make_user, claim):
    _, email, _ = make_user(password=PASSWORD)
    answers = [log_in(app, email, through_proxy(f"9.9.9.{n}", claim)) for n in range(1, 6)]
    assert answers == [400, 400, 400, 429, 429]
    # Counted under the proxy's address, the one key a client cannot choose.
    assert f"(addr:{PROXY})" in audit_rows(app, "rate_limited")[-1].detail


def test_the_audit_row_names_the_peer_and_keeps_both_claims(app, make_user):
    _, email, _ = make_user(password=PASSWORD)
    assert log_in(app, email, through_proxy("9.9.9.9", PROXYS_CLAIM)) == 400
    row = audit_rows(app, "login_failed")[-1]
    assert (row.client_ip, row.peer_ip, row.household) == (None, PROXY, None)
    assert row.forwarded_for == ["9.9.9.9"]
    assert row.detail == f"{CONTRADICTORY_FORWARDED_HEADERS}: X-Real-IP names 8.8.4.4"


def test_rows_written_together_keep_the_competing_claim_after_their_own_detail(app):
    """``record_many`` (a revoke's rows) adds it to each row's detail, its own or shared."""
    with app.test_request_context(environ_base=through_proxy("9.9.9.9", PROXYS_CLAIM)):
        audit.record_many("revocation", actor="admin:1", detail="shared", rows=[
            {"device_uid": "a"}, {"device_uid": "b", "detail": "its own"}])
        db.session.commit()
    claim = f"{CONTRADICTORY_FORWARDED_HEADERS}: X-Real-IP names 8.8.4.4"
    assert [(row.device_uid, row.client_ip, row.peer_ip, row.detail)
            for row in audit_rows(app, "revocation")] == [
        ("a", None, PROXY, f"shared; {claim}"), ("b", None, PROXY, f"its own; {claim}")]


@pytest.mark.parametrize("claim", CLAIMS.values(), ids=CLAIMS.keys())
def test_the_approval_warning_weighs_both_networks_of_a_contradictory_record(app, claim):
    """Either address may be the printer's choice, one that would hide the approval page's
    "another network" warning: both are kept. Without the proxy's claim it is the hop's."""
    settings = app.extensions["tsd.proxy_settings"]
    with app.app_context():
        record = resolve(PROXY, through_proxy("9.9.9.9", claim), settings)
        assert record.ineligibility_reason == CONTRADICTORY_FORWARDED_HEADERS
        assert warning_household(record) == "8.8.4.4/32 or 9.9.9.9/32"
        assert warning_household(resolve(PROXY, through_proxy("9.9.9.9", {}), settings)) \
            == "9.9.9.9/32"
        # Either one no household (a private address): that one may be the real one, and
        # the household left the client's choice. None: the page's note, never a match.
        for hop, other in (("9.9.9.9", "10.0.0.5"), ("10.0.0.5", "9.9.9.9")):
            inside = resolve(PROXY, through_proxy(hop, {"HTTP_X_REAL_IP": other}), settings)
            assert inside.ineligibility_reason == CONTRADICTORY_FORWARDED_HEADERS
            assert warning_household(inside) is None


APPROVER = "8.8.8.8"  # the person's home; a stranger's printer elsewhere (9.9.9.50)


@pytest.fixture
def approval_page(client, make_user, login):
    """``approval_page(hop, claim)``: the page the person (at APPROVER, through the proxy)
    sees for a printer that asked through the proxy with that hop and X-Real-IP."""
    from tests.support.pairing import enter_code, started

    _, email, password = make_user("person@example.org")
    session = login(email, password, **through_proxy(APPROVER, {}))

    def page(hop: str, claim: str) -> str:
        answer = started(client, environ_base=through_proxy(hop, {"HTTP_X_REAL_IP": claim}))
        enter_code(session, answer["user_code"])
        return session.get("/link/confirm").get_data(as_text=True)

    return page


@pytest.mark.parametrize(("printers_hop", "printers_claim"), [
    (APPROVER, "9.9.9.50"),  # passed on the printer's own hop: it chose the person's network
    ("9.9.9.50", APPROVER),  # passed on the printer's own X-Real-IP: it chose it there
], ids=["chosen hop", "chosen X-Real-IP"])
def test_a_printer_cannot_choose_the_persons_network_to_escape_the_warning(
        approval_page, printers_hop, printers_claim):
    page = approval_page(printers_hop, printers_claim)
    assert 'id="other-network-notice"' in page
    assert "8.8.8.8/32 or 9.9.9.50/32" in page
    assert "8.8.8.8/32 or 9.9.9.50/32" in page


def test_two_long_ipv6_networks_still_fit_the_request_row(app, client):
    """Households of /128 are 43 characters: two would not fit the request's column
    (PostgreSQL refuses the INSERT, a 500). Given at /64, only their family counts."""
    from sqlalchemy import select

    from tests.support.pairing import started
    from tsd_server.client_address import ProxySettings
    from tsd_server.models import DeviceAuthorization

    app.config["IPV6_HOUSEHOLD_PREFIX"] = 128
    app.extensions["tsd.proxy_settings"] = ProxySettings.from_config(app.config)
    hop, claim = "2a00:1450:4001:81f:ffff:ffff:ffff:1", "2a00:1450:4001:820:ffff:ffff:ffff:2"
    started(client, environ_base=through_proxy(hop, {"HTTP_X_REAL_IP": claim}))
    with app.app_context():
        stored = db.session.scalar(select(DeviceAuthorization.requested_household))
    assert stored == "2a00:1450:4001:81f::/64 or 2a00:1450:4001:820::/64"


@pytest.mark.parametrize(("printers_hop", "printers_claim"), [
    ("10.0.0.5", APPROVER), (APPROVER, "10.0.0.5")], ids=["chosen X-Real-IP", "chosen hop"])
def test_a_printer_inside_cannot_choose_the_persons_network_to_escape_the_note(
        approval_page, printers_hop, printers_claim):
    """A printer on a private address behind the proxy (the security review's case: a
    proxy serving an inside network and the internet) gets the page's note; naming the
    person's network in the address it controls must not turn that into nothing."""
    assert 'id="unchecked-network-notice"' in approval_page(printers_hop, printers_claim)
