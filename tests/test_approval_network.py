"""The approval page says which account approves and warns when the printer asked from
another network than the approver's (RFC 8628 §5.4, remote phishing).

Someone elsewhere who sends a victim their printer's code or QR link asks from their own
network; the victim approves from theirs. The page warns when their households differ
(client_address.warning_household: a forged X-Forwarded-For changes nothing, the address
the connection came from counts), notes when the printer's cannot be checked (the other
address family, say), and never says "the same network" (strangers share one key behind
an undeclared proxy or a carrier NAT). The audit row of the decision records which it was.
"""

from __future__ import annotations

import pytest

from tests.support.pairing import (
    LOOSE_LIMITS,
    audit_rows,
    decide,
    enter_code,
    qr_path,
    started,
)

OTHER_NETWORK_NOTICE = 'id="other-network-notice"'
UNCHECKED_NOTICE = 'id="unchecked-network-notice"'
SAME = "(the approver's household)"
OTHER = "(another household than the approver's)"
PRINTER_UNCHECKED = "(the printer's household not comparable)"
NOT_COMPARABLE = "(the approver's household unknown)"
FRESH_SCAN = {"Sec-Fetch-Site": "none"}


@pytest.fixture
def app_config():
    return dict(LOOSE_LIMITS)


@pytest.fixture
def approver(make_user, login):
    """A signed-in person at home: 1.1.1.1."""
    def at(**environ):
        uid, email, password = make_user(email="olivia@example.org",
                                         display_name="Olivia Owner")
        return uid, login(email, password, **environ)
    return at


def approval_page(session, answer: dict) -> str:
    """The page the approver sees after typing the printer's code."""
    assert enter_code(session, answer["user_code"]).status_code == 302
    page = session.get("/link/confirm")
    assert page.status_code == 200
    return page.get_data(as_text=True)


def decision_detail(app) -> str:
    (row,) = audit_rows(app, "device_flow_decision")
    return row.detail


def assert_nothing_compared(app, session, answer: dict) -> None:
    """The approver's network is unknown: the page says nothing, the audit says so."""
    page = approval_page(session, answer)
    assert OTHER_NETWORK_NOTICE not in page and UNCHECKED_NOTICE not in page
    assert decide(session, "deny").status_code == 302
    assert decision_detail(app).endswith(NOT_COMPARABLE)


def test_the_page_names_the_account_that_approves(client, approver):
    _, session = approver(REMOTE_ADDR="1.1.1.1")
    page = approval_page(session, started(client, ip="1.1.1.1"))
    assert "You are signed in as <strong>Olivia Owner</strong>" in page
    assert "(olivia@example.org). Approving links this printer to this account." in page


def test_a_printer_on_another_network_is_warned_about_and_audited(app, client, approver):
    _, session = approver(REMOTE_ADDR="1.1.1.1")
    page = approval_page(session, started(client, ip="8.8.8.8"))
    assert OTHER_NETWORK_NOTICE in page
    assert "(it asked from\n  8.8.8.8/32; you are on 1.1.1.1/32)" in page
    assert decide(session, "approve").status_code == 302  # a warning, not a refusal
    assert decision_detail(app) == f"'Voron in the garage' asked from 8.8.8.8 {OTHER}"


def test_a_printer_on_the_approvers_network_gets_no_warning(app, client, approver):
    _, session = approver(REMOTE_ADDR="8.8.8.8")
    page = approval_page(session, started(client, ip="8.8.8.8"))
    assert OTHER_NETWORK_NOTICE not in page
    assert decide(session, "deny").status_code == 302
    assert decision_detail(app) == f"'Voron in the garage' asked from 8.8.8.8 {SAME}"
    (bound,) = audit_rows(app, "device_flow_opened")
    assert bound.detail == decision_detail(app)


def test_ipv6_households_compare_by_their_prefix(client, approver):
    """Two hosts of one /64 (``IPV6_HOUSEHOLD_PREFIX``'s default) are one network; the
    next /64 is another."""
    _, session = approver(REMOTE_ADDR="2606:4700:10:1::1")
    page = approval_page(session, started(client, ip="2606:4700:10:1:aa::2"))
    assert OTHER_NETWORK_NOTICE not in page
    page = approval_page(session, started(client, device_id="printer-0003",
                                          ip="2606:4700:10:2::2"))
    assert OTHER_NETWORK_NOTICE in page


@pytest.mark.parametrize("approver_ip, printer_ip", [
    ("2606:4700:10:1::1", "8.8.8.8"), ("1.1.1.1", "2606:4700:10:1::1")])
def test_a_printer_on_the_other_address_family_gets_a_note(app, client, approver,
                                                          approver_ip, printer_ip):
    """One dual-stack home: the printer asks over IPv4, the phone answers over IPv6; their
    addresses say nothing about each other, so no warning (it would be a false one in most
    such homes). But a stranger's printer could ask over the family the victim is not on
    to escape the warning: so a note says the network could not be checked."""
    _, session = approver(REMOTE_ADDR=approver_ip)
    page = approval_page(session, started(client, ip=printer_ip))
    assert OTHER_NETWORK_NOTICE not in page and UNCHECKED_NOTICE in page
    assert decide(session, "deny").status_code == 302
    assert decision_detail(app).endswith(PRINTER_UNCHECKED)


def test_the_qr_way_shows_the_comparison_too(client, approver):
    _, session = approver(REMOTE_ADDR="1.1.1.1")
    answer = started(client, ip="8.8.8.8")
    assert session.get(qr_path(answer), headers=FRESH_SCAN).status_code == 200
    page = session.get("/link/confirm").get_data(as_text=True)
    assert OTHER_NETWORK_NOTICE in page


@pytest.mark.parametrize("forged", ["1.1.1.1", "x", "1.1.1.1, 1.1.1.1"])
def test_a_forged_forwarded_header_does_not_take_the_warning_away(app, client, approver,
                                                                 forged):
    """The stranger's printer sends X-Forwarded-For (the approver's address, or nonsense);
    no proxy is trusted, so the header is not believed, and the address the connection
    came from is compared: still another network."""
    app.config["BASE_URL"] = "https://print.example.org"  # else refused: base_url_unknown
    _, session = approver(REMOTE_ADDR="1.1.1.1")
    answer = started(client, environ_base={"REMOTE_ADDR": "8.8.8.8",
                                           "HTTP_X_FORWARDED_FOR": forged})
    assert OTHER_NETWORK_NOTICE in approval_page(session, answer)
    assert decide(session, "deny").status_code == 302
    assert decision_detail(app).endswith(OTHER)


def test_a_request_from_before_the_upgrade_gets_the_note(app, client, approver):
    """Requests made before migration 0012 have no household kept."""
    from sqlalchemy import update

    from tsd_server.extensions import db
    from tsd_server.models import DeviceAuthorization

    _, session = approver(REMOTE_ADDR="8.8.8.8")
    answer = started(client, ip="8.8.8.8")
    with app.app_context():
        db.session.execute(update(DeviceAuthorization).values(requested_household=None))
        db.session.commit()
        db.session.remove()
    page = approval_page(session, answer)
    assert OTHER_NETWORK_NOTICE not in page and UNCHECKED_NOTICE in page
    assert decide(session, "deny").status_code == 302
    assert decision_detail(app).endswith(PRINTER_UNCHECKED)


class TestBehindAProxy:
    """nginx at 10.0.0.1 (trusted, one hop)."""

    PROXY = "10.0.0.1"

    @pytest.fixture
    def app_config(self):
        return {**LOOSE_LIMITS, "TRUSTED_PROXIES": f"{self.PROXY}/32", "PROXY_FIX_X_FOR": 1,
                "BASE_URL": "https://print.example.org"}

    def via_proxy(self, client_ip: str | None) -> dict:
        environ = {"REMOTE_ADDR": self.PROXY}
        if client_ip is not None:
            environ["HTTP_X_FORWARDED_FOR"] = client_ip
        return environ

    def test_the_client_addresses_the_proxy_passes_are_compared(self, client, approver):
        _, session = approver(**self.via_proxy("1.1.1.1"))
        page = approval_page(session, started(client, environ_base=self.via_proxy("1.1.1.1")))
        assert OTHER_NETWORK_NOTICE not in page
        page = approval_page(session, started(client, device_id="printer-0003",
                                              environ_base=self.via_proxy("8.8.8.8")))
        assert OTHER_NETWORK_NOTICE in page

    def test_a_proxy_that_stopped_passing_addresses_makes_nobody_the_same(
            self, app, client, approver):
        """The incident: every request arrives from the proxy's address. The printer and
        the approver would share it; the audit must not count that as one household, and
        the page has nothing to say (it would say it on every approval)."""
        _, session = approver(**self.via_proxy(None))
        assert_nothing_compared(app, session, started(client,
                                                      environ_base=self.via_proxy(None)))

    def test_a_client_going_round_the_proxy_cannot_claim_the_approvers_address(
            self, app, client, approver):
        _, session = approver(**self.via_proxy("1.1.1.1"))
        answer = started(client, environ_base={"REMOTE_ADDR": "8.8.8.8",
                                               "HTTP_X_FORWARDED_FOR": "1.1.1.1"})
        assert OTHER_NETWORK_NOTICE in approval_page(session, answer)
        assert decide(session, "deny").status_code == 302
        assert decision_detail(app).endswith(OTHER)


class TestBehindTwoProxies:
    """A load balancer (10.0.0.2) in front of nginx (10.0.0.1), both trusted:
    TSD_PROXY_FIX_X_FOR=2."""

    @pytest.fixture
    def app_config(self):
        return {**LOOSE_LIMITS, "TRUSTED_PROXIES": "10.0.0.0/24", "PROXY_FIX_X_FOR": 2,
                "BASE_URL": "https://print.example.org"}

    def test_the_client_addresses_the_proxies_pass_are_compared(self, client, approver):
        _, session = approver(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="1.1.1.1, 10.0.0.2")
        answer = started(client, environ_base={"REMOTE_ADDR": "10.0.0.1",
                                               "HTTP_X_FORWARDED_FOR": "8.8.8.8, 10.0.0.2"})
        assert OTHER_NETWORK_NOTICE in approval_page(session, answer)

    @pytest.mark.parametrize("forwarded", ["8.8.8.8", "1.1.1.1, 8.8.8.8"])
    def test_a_printer_going_round_the_load_balancer_is_still_warned_about(
            self, app, client, approver, forwarded):
        """It connects to nginx itself (writing an X-Forwarded-For of its own, or none):
        nginx saw 8.8.8.8 connect, which is not the load balancer expected, so ip_match
        gets no household; but 8.8.8.8 is compared, whatever the printer wrote before it."""
        _, session = approver(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="1.1.1.1, 10.0.0.2")
        answer = started(client, environ_base={"REMOTE_ADDR": "10.0.0.1",
                                               "HTTP_X_FORWARDED_FOR": forwarded})
        page = approval_page(session, answer)
        assert OTHER_NETWORK_NOTICE in page
        assert "(it asked from\n  8.8.8.8/32; you are on 1.1.1.1/32)" in page
        assert decide(session, "deny").status_code == 302
        assert decision_detail(app).endswith(OTHER)

    def test_a_load_balancer_that_stopped_passing_addresses_makes_nobody_comparable(
            self, app, client, approver):
        """The incident with two proxies: nginx sees only the load balancer."""
        _, session = approver(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="10.0.0.2")
        answer = started(client, environ_base={"REMOTE_ADDR": "10.0.0.1",
                                               "HTTP_X_FORWARDED_FOR": "10.0.0.2"})
        assert_nothing_compared(app, session, answer)



class TestATrustedProxyThatPassesNoAddress:
    """TSD_TRUSTED_PROXIES set, TSD_PROXY_FIX_X_FOR=0 (proxy-check calls it an error): every
    request comes from the proxy, whose address is nobody's household."""

    @pytest.fixture
    def app_config(self):
        return {**LOOSE_LIMITS, "TRUSTED_PROXIES": "9.9.9.9/32",
                "BASE_URL": "https://print.example.org"}

    def test_nothing_is_compared(self, app, client, approver):
        _, session = approver(REMOTE_ADDR="9.9.9.9", HTTP_X_FORWARDED_FOR="1.1.1.1")
        answer = started(client, environ_base={"REMOTE_ADDR": "9.9.9.9",
                                               "HTTP_X_FORWARDED_FOR": "8.8.8.8"})
        assert_nothing_compared(app, session, answer)
