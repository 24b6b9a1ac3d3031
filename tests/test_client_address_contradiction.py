"""A trusted proxy whose X-Real-IP or Forwarded contradicts its X-Forwarded-For passes
clients' own X-Forwarded-For on, so the hop is whatever the client wrote. No client address
is believed then (``contradictory_forwarded_headers``): rate limits and audit rows fall back
to the proxy, the claimed hop stays in ``forwarded_for`` alone, and the audit row keeps the
proxy's competing claim. Security review: 8 wrong log-ins, each with a new forged hop, were
all answered 400, never 429, and audited under the forged addresses."""

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
def test_the_approval_warning_has_no_network_for_a_contradictory_record(app, claim):
    """The forged hop would be the printer's choice of network, one that hides the approval
    page's "another network" warning; without the proxy's claim it is the hop's network."""
    settings = app.extensions["tsd.proxy_settings"]
    with app.app_context():
        record = resolve(PROXY, through_proxy("9.9.9.9", claim), settings)
        assert record.ineligibility_reason == CONTRADICTORY_FORWARDED_HEADERS
        assert warning_household(record) is None
        assert warning_household(resolve(PROXY, through_proxy("9.9.9.9", {}), settings)) \
            == "9.9.9.9/32"
