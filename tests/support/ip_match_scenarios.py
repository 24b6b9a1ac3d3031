"""Scenarios (a) to (e) of issue 4, item 8: the incident replayed, once for each proxy
layout. Each is written once against a ``World`` (tests/support/ip_match_world.py) and run
in-process (tests/test_ip_match_incident.py) and through real nginx and gunicorn
(tests/e2e/test_ip_match_e2e.py). Every scenario ends by asserting that no printer was
linked to an account of another household -- the property the incident broke.
"""

from __future__ import annotations

from tests.support.ip_match_world import (
    BEHIND_PROXY,
    DIRECT,
    HOUSEHOLDS,
    OUTER_PROXY,
    PROXY,
    Layout,
    World,
    layout_direct,
    layout_proxy,
    layout_proxy_without_header,
    layout_two_proxies,
    link_and_confirm,
    listed,
    refused_with,
    wrong,
)


def scenario_a_proxy_passes_address(world: World) -> None:
    """(a) nginx passes X-Forwarded-For, x_for=1: each household sees only its own devices."""
    anna_printer, ben_printer = world.printer(HOUSEHOLDS[0]), world.printer(HOUSEHOLDS[1])
    anna, ben = world.person(HOUSEHOLDS[0]), world.person(HOUSEHOLDS[1])
    for printer in world.printers:
        reply = printer.announce()
        assert reply.status == 200 and reply.json["status"] == "waiting", reply.body
    assert listed(anna.nearby()) == [anna_printer.device_id]
    assert listed(ben.nearby()) == [ben_printer.device_id]
    seen = anna.client_address().json
    assert (seen["client_ip"], seen["peer_ip"]) == (anna.home, PROXY)
    stranger_try = ben.link(anna_printer.device_id)
    assert stranger_try.status == 404 and stranger_try.json["error"] == "not_found"
    link_and_confirm(anna, anna_printer)
    assert world.links() == [(anna.user_id, anna_printer.device_id)]
    assert world.cross_household_links() == []


def scenario_b_proxy_drops_address(world: World) -> None:
    """(b) the incident: nginx does not set X-Forwarded-For. Everyone who sends none is
    refused with missing_forwarded_header. (Such an nginx passes a client's own header on
    unchanged, so a forged one would be believed: the documented configs' line is what stops
    that, pinned by test_a_forged_forwarded_for_is_not_believed_through_the_documented_configs
    in tests/e2e/test_ip_match_e2e.py and by scenario (d).)"""
    printers = [world.printer(home) for home in HOUSEHOLDS[:3]]
    people = [world.person(home) for home in HOUSEHOLDS[:3]]
    for printer in printers:
        assert refused_with(printer.announce(), "missing_forwarded_header")
    for person in people:
        reply = person.nearby()
        assert reply.status == 200
        assert reply.json["eligible"] is False
        assert reply.json["reason"] == "missing_forwarded_header"
        assert reply.json["devices"] == []
        seen = person.client_address().json
        assert seen["ip_match"] == {"eligible": False, "reason": "missing_forwarded_header"}
    for person in people:
        for printer in printers:
            assert refused_with(person.link(printer.device_id), "missing_forwarded_header")
    assert world.links() == []
    assert world.cross_household_links() == []


def scenario_c_forged_header_without_proxy(world: World) -> None:
    """(c) no proxy configured, the client forges X-Forwarded-For: refused."""
    anna_printer, ben_printer = world.printer(HOUSEHOLDS[0]), world.printer(HOUSEHOLDS[1])
    anna, ben = world.person(HOUSEHOLDS[0]), world.person(HOUSEHOLDS[1])
    assert refused_with(anna_printer.announce(forged_for=ben.home),
                        "untrusted_forwarded_header")
    assert ben_printer.announce().status == 200
    # Anna pretends to be in Ben's household to see and take his printer.
    posing = anna.nearby(forged_for=ben.home)
    assert posing.json["eligible"] is False
    assert posing.json["reason"] == "untrusted_forwarded_header"
    assert posing.json["devices"] == []
    assert refused_with(anna.link(ben_printer.device_id, forged_for=ben.home),
                        "untrusted_forwarded_header")
    assert anna.client_address(forged_for=ben.home).json["client_ip"] == anna.home
    # Without the forged header she is just herself, and Ben's printer is not hers to see.
    assert listed(anna.nearby()) == []
    assert anna.link(ben_printer.device_id).status == 404
    assert world.links() == []
    assert world.cross_household_links() == []


def scenario_d_forged_header_through_proxy(world: World) -> None:
    """(d) forged header through a correctly configured nginx: the real address wins."""
    anna_printer, ben_printer = world.printer(HOUSEHOLDS[0]), world.printer(HOUSEHOLDS[1])
    anna, ben = world.person(HOUSEHOLDS[0]), world.person(HOUSEHOLDS[1])
    assert anna_printer.announce().status == 200
    # Ben's printer claims to be in Anna's household: it is recorded in Ben's.
    assert ben_printer.announce(forged_for=anna.home).status == 200
    assert listed(anna.nearby()) == [anna_printer.device_id]
    posing = ben.nearby(forged_for=anna.home)
    assert listed(posing) == [ben_printer.device_id]
    seen = ben.client_address(forged_for=anna.home).json
    assert seen["client_ip"] == ben.home and seen["ip_match"]["eligible"] is True
    assert ben.link(anna_printer.device_id, forged_for=anna.home).status == 404
    link_and_confirm(ben, ben_printer)
    assert world.links() == [(ben.user_id, ben_printer.device_id)]
    assert world.cross_household_links() == []


def scenario_e_one_hop_too_few(world: World) -> None:
    """(e) two proxies, x_for=1: everyone looks like the outer proxy. The breaker trips,
    and with confirmation no stranger completes a link."""
    anna_printer, ben_printer = world.printer(HOUSEHOLDS[0]), world.printer(HOUSEHOLDS[1])
    anna, ben = world.person(HOUSEHOLDS[0]), world.person(HOUSEHOLDS[1])
    for printer in world.printers:
        assert printer.announce().status == 200
    # The misconfiguration: both printers look like one household (the outer proxy's).
    assert anna.client_address().json["client_ip"] == OUTER_PROXY
    both = sorted([anna_printer.device_id, ben_printer.device_id])
    assert listed(anna.nearby()) == both
    assert listed(ben.nearby()) == both

    # Ben (a stranger to Anna) picks her printer. It shows his name and a code on Anna's
    # printer; Anna does not tell him the code, so he can only guess, and three wrong
    # guesses void the offer.
    offer = ben.link(anna_printer.device_id)
    assert offer.status == 200, offer.body
    shown = anna_printer.announce().json
    assert shown["status"] == "confirm" and shown["confirmation"]["account"] == ben.display_name
    real = shown["confirmation"]["code"]
    for attempts_left in (2, 1, 0):
        guess = ben.confirm(offer.json["offer_id"], wrong(real))
        assert guess.status == 400 and guess.json["error"] == "wrong_code"
        assert guess.json["attempts_left"] == attempts_left
    assert ben.confirm(offer.json["offer_id"], real).status == 404
    assert anna_printer.announce().json["status"] == "waiting"

    # More accounts than allowed look for printers from "one household": it is blocked.
    carl, dora = world.person(HOUSEHOLDS[2]), world.person(HOUSEHOLDS[3])
    assert carl.nearby().json["eligible"] is True  # third account: still within the limit
    tripped = dora.nearby().json
    assert tripped["eligible"] is False and tripped["reason"] == "household_blocked"
    assert tripped["devices"] == []
    for person in (anna, ben, carl, dora):
        assert person.nearby().json["reason"] == "household_blocked"
        assert refused_with(person.link(anna_printer.device_id), "household_blocked")
    assert refused_with(anna_printer.announce(), "household_blocked")
    trips = world.audit_events("breaker_trip")
    assert [(trip.actor, trip.outcome, trip.household) for trip in trips] == [
        ("auto", "household_blocked", f"{OUTER_PROXY}/32")]
    assert world.links() == []
    assert world.cross_household_links() == []


SCENARIOS = {
    "a": (scenario_a_proxy_passes_address, BEHIND_PROXY),
    "b": (scenario_b_proxy_drops_address, BEHIND_PROXY),
    "c": (scenario_c_forged_header_without_proxy, DIRECT),
    "d": (scenario_d_forged_header_through_proxy, BEHIND_PROXY),
    "e": (scenario_e_one_hop_too_few, BEHIND_PROXY),
}
IN_PROCESS_LAYOUTS: dict[str, Layout] = {
    "a": layout_proxy,
    "b": layout_proxy_without_header,
    "c": layout_direct,
    "d": layout_proxy,
    "e": layout_two_proxies,
}
