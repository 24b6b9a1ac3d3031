""""Printers near you" is audited when its answer changes, and nobody can flood the log.

The last audited answer is kept in the session cookie, but a client can replay an old
cookie and ignore Set-Cookie: the server also writes at most one row a minute per account
and answer, whatever the address or forwarded headers (docs/security.md).
"""

from __future__ import annotations

from tests.support import ip_match_fixtures

app_config = ip_match_fixtures.app_config
world = ip_match_fixtures.world

HOMES = ["8.8.8.8", "1.1.1.1", "9.9.9.9"]


def nearby_rows(world) -> list[tuple[str, str]]:
    return [(row.outcome, row.detail) for row in world.audit_events("ip_match_nearby")]


def test_a_replayed_cookie_writes_one_row_a_minute_per_answer(app, world):
    person = world.person(HOMES[0])
    cookie = person.endpoint.client.get_cookie("session").value
    replay = app.test_client(use_cookies=False)  # sends the login cookie, ignores Set-Cookie
    for n in range(60):
        headers = {"Cookie": f"session={cookie}"}
        if n % 2:  # a forged chain, another one each time: refused, and still audited
            headers["X-Forwarded-For"] = ", ".join(f"203.0.113.{(n + hop) % 250}"
                                                   for hop in range(20))
        reply = replay.get("/api/v1/discovery/nearby", headers=headers,
                           environ_base={"REMOTE_ADDR": HOMES[n % len(HOMES)]})
        assert reply.status_code == 200
    # One row per answer, from whichever household: a client holding many addresses (an
    # IPv6 /48 holds 65,536 households) gets no more rows. Forged chains are one answer.
    assert sorted(nearby_rows(world)) == [("listed", "listed nothing"),
                                          ("untrusted_forwarded_header", "listed nothing")]


def test_a_browsers_changed_answers_are_still_audited(app, world):
    anna = world.person(HOMES[0])
    for _ in range(3):
        assert anna.nearby().json["devices"] == []
    printer = world.printer(HOMES[0])
    printer.announce()
    for _ in range(3):
        assert len(anna.nearby().json["devices"]) == 1
    assert anna.nearby(forged_for=HOMES[1]).json["reason"] == "untrusted_forwarded_header"
    assert nearby_rows(world) == [("listed", "listed nothing"),
                                  ("listed", f"listed: {printer.device_id}"),
                                  ("untrusted_forwarded_header", "listed nothing")]


def test_an_answer_held_back_by_the_throttle_is_audited_once_its_minute_is_over(
        app, world, clock, monkeypatch):
    from tsd_server import audit_throttle

    this_minute: set[tuple[str, str]] = set()

    def first_this_minute(kind: str, key: str) -> bool:
        fresh = (kind, key) not in this_minute
        this_minute.add((kind, key))
        return fresh

    monkeypatch.setattr(audit_throttle, "first_this_minute", first_this_minute)
    anna, printer = world.person(HOMES[0]), world.printer(HOMES[0])
    anna.nearby()  # nothing
    printer.announce()
    anna.nearby()  # the printer
    clock.advance(seconds=46)  # the printer went quiet: nothing again, within the minute
    anna.nearby()
    assert len(nearby_rows(world)) == 2
    this_minute.clear()
    anna.nearby()
    anna.nearby()
    assert nearby_rows(world) == [("listed", "listed nothing"),
                                  ("listed", f"listed: {printer.device_id}"),
                                  ("listed", "listed nothing")]


def test_an_account_cycling_its_own_printers_writes_a_bounded_number_of_rows(
        app, world, clock):
    """Every answer made new by moving a printer of one's own in and out of the household
    (a review wrote a row per request, 170,000 a day from one address): at most
    ROWS_PER_ACCOUNT a minute, and the answer shown once the budget allows is audited."""
    from tsd_server.discovery.ip_match.listing import ROWS_PER_ACCOUNT
    from tsd_server.extensions import limiter

    anna = world.person(HOMES[0])
    printers = [world.printer(HOMES[0], name=f"Decoy {n}") for n in range(20)]
    for printer in printers:
        assert printer.announce().status == 200  # into Anna's household
        assert anna.nearby().json["devices"]  # a new answer
        # ...and out of it again, from a household of its own (each holds three).
        printer.endpoint = world.endpoint(f"9.9.{printers.index(printer)}.9")
        assert printer.announce().status == 200
    rows = nearby_rows(world)
    assert len(rows) == ROWS_PER_ACCOUNT.amount, rows
    clock.advance(seconds=61)  # the decoys have gone quiet...
    limiter.reset()  # ...and the budget's minute is over (the limiter counts real time)
    stayer = world.printer(HOMES[0], name="Stays")
    stayer.announce()
    anna.nearby()
    assert nearby_rows(world)[-1] == ("listed", f"listed: {stayer.device_id}")
