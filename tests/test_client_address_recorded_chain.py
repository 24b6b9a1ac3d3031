"""What a client-address record keeps of X-Forwarded-For (tsd_server/recorded_chain.py):
the hops the trusted proxies vouch for and three of the client's before them, each at most
45 characters, with CUT where something was cut. Audit rows and /api/v1/client-address
show that record; decisions are still made on every hop the request carried."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from tests.test_client_address import CASES, ONE_PROXY, OUTER, PROXIED, PROXY, ask, xff
from tsd_server import client_address
from tsd_server.client_address import (
    MAX_RECORDED_HOPS,
    PROXY_ADDRESS,
    ProxySettings,
    resolve,
    split_hops,
)
from tsd_server.extensions import db
from tsd_server.models import AuditEvent
from tsd_server.recorded_chain import CUT, MAX_CLAIMED_HOPS, MAX_HOP_LENGTH, recorded_hops
from tsd_server.trusted_proxies import parse_networks

JUNK_HOPS = ["j" * 64] * 19  # what a client behind the documented nginx may prepend


def test_forwarded_chain_is_recorded_bounded():
    """The proxy's hop and three of the client's; CUT ends a cut hop, and first in the list
    says hops were left out."""
    hops = [f"{i}.{i}.{i}.{i}" for i in range(1, 100)] + ["x" * 500, "9.9.9.9"]
    record = resolve(PROXY, xff(", ".join(hops)), ONE_PROXY)
    assert record.client_ip == "9.9.9.9" and record.eligible
    assert record.forwarded_for == (CUT, "98.98.98.98", "99.99.99.99", "x" * 44 + CUT,
                                    "9.9.9.9")


def test_a_forged_chain_without_a_proxy_keeps_three_hops():
    record = resolve("8.8.8.8", xff(", ".join([*JUNK_HOPS, "1.1.1.1"])), ProxySettings())
    assert record.forwarded_for == (CUT, "j" * 44 + CUT, "j" * 44 + CUT, "1.1.1.1")


def test_every_vouched_hop_is_recorded_whole():
    """Ten proxies (the most PROXY_FIX_X_FOR counts): their hops, the longest IPv6 text form
    among them, are kept whole, with three of the client's before them."""
    longest = "2001:4860:4860:ffff:ffff:ffff:255.255.255.255"
    assert len(longest) == MAX_HOP_LENGTH
    proxies = [f"10.0.0.{i}" for i in range(1, 10)]
    chain = ["1.1.1.1"] * 50 + [longest, *proxies]
    proxied = ProxySettings(x_for=10, trusted_proxies=parse_networks("10.0.0.0/8, 127.0.0.1"))
    record = resolve("127.0.0.1", xff(", ".join(chain)), proxied)
    assert record.client_ip == "2001:4860:4860:ffff:ffff:ffff:ffff:ffff" and record.eligible
    assert record.forwarded_for == (CUT, "1.1.1.1", "1.1.1.1", "1.1.1.1", longest, *proxies)
    assert len(record.forwarded_for) == MAX_RECORDED_HOPS


@settings(max_examples=300, deadline=None)
@given(hops=st.lists(st.text(max_size=80), max_size=40), vouched=st.integers(0, 10))
def test_the_record_is_bounded_and_keeps_the_vouched_hops(hops, vouched):
    recorded = recorded_hops(hops, vouched)
    assert all(len(hop) <= MAX_HOP_LENGTH for hop in recorded)
    # Every hop while there are few; beyond that the last ones, and CUT first.
    if len(hops) <= vouched + MAX_CLAIMED_HOPS:
        assert len(recorded) == len(hops)
    else:
        assert len(recorded) == vouched + MAX_CLAIMED_HOPS + 1 and recorded[0] == CUT
    tail = min(vouched, len(hops))  # the vouched hops, whole unless longer than an address
    for hop, kept in zip(hops[len(hops) - tail:], recorded[len(recorded) - tail:], strict=True):
        assert kept == (hop if len(hop) <= MAX_HOP_LENGTH else hop[:MAX_HOP_LENGTH - 1] + CUT)


@pytest.mark.parametrize("proxies, peer, environ", [
    case[:3] for case in CASES.values()
    if len(split_hops(case[2].get("HTTP_X_FORWARDED_FOR"))) >= case[0].x_for > 0])
def test_junk_the_record_leaves_out_changes_no_decision(proxies, peer, environ):
    """Only the record is bounded: address, household, reason and contradiction are decided
    on the whole header, and hops the client prepends change none of them."""
    padded = {**environ, "HTTP_X_FORWARDED_FOR": ", ".join(
        [*JUNK_HOPS, environ["HTTP_X_FORWARDED_FOR"]])}
    plain, with_junk = resolve(peer, environ, proxies), resolve(peer, padded, proxies)
    assert (with_junk.client_ip, with_junk.household, with_junk.ineligibility_reason,
            with_junk.contradiction) == (plain.client_ip, plain.household,
                                         plain.ineligibility_reason, plain.contradiction)
    assert with_junk.forwarded_for[0] == CUT


def test_the_warning_walk_finds_the_client_past_one_proxy_too_many():
    """One proxy too many in front: the vouched hop is the outer proxy (proxy_address), and
    the approval page's warning compares the network of the client that proxy saw, the hop
    left of it. The record keeps that hop, however much junk the client put before it."""
    proxies = ProxySettings(x_for=1, trusted_proxies=parse_networks(f"{PROXY}, {OUTER}"))
    record = resolve(PROXY, xff(", ".join([*JUNK_HOPS, "8.8.8.8", OUTER])), proxies)
    assert record.ineligibility_reason == PROXY_ADDRESS
    assert str(client_address._seen_address(record, proxies)) == "8.8.8.8"


# --- through the whole app -----------------------------------------------------------------

@pytest.fixture
def app_config():
    return PROXIED


def test_junk_hops_behind_the_proxy_are_not_stored(app, client, make_user, login):
    """A client behind the documented nginx prepends 19 junk hops of 64 characters. Its
    audit rows and its client-address answer keep the proxy's hop and three of the junk
    ones, cut: a couple of hundred bytes, not 1.3 kB a row."""
    environ = {"REMOTE_ADDR": PROXY,
               "HTTP_X_FORWARDED_FOR": ", ".join([*JUNK_HOPS, "9.9.9.9"])}
    recorded = [CUT, *["j" * 44 + CUT] * 3, "9.9.9.9"]
    assert ask(client, **environ)["forwarded_for"] == recorded
    _, email, password = make_user()
    login(email, password, **environ)
    with app.app_context():
        row = db.session.execute(
            select(AuditEvent).where(AuditEvent.event == "login")).scalar_one()
        assert (row.client_ip, row.forwarded_for) == ("9.9.9.9", recorded)
        assert len(json.dumps(row.forwarded_for)) < 300
