"""tsd-agent against a server that says "come back later": rate limits (429), an outage
of its rate limits (503 rate_limit_unavailable) and of its database (503
database_unavailable, not for a redeem) give bounded waits (at least a second, at
most ten minutes, never past --timeout), the request is asked again where nothing was
done, and a command ends at its --timeout. Also: concurrent first runs on one state file
end with one identity.

The server is tests/support/hostile_server.py's, scripted byte for byte; the agent runs
for real (``main()`` in-process, or its loops with the test's clock).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support import hostile_server
from tests.support.agent_runs import AgentRun
from tests.support.hostile_server import (
    ANNOUNCE,
    AUTHORIZE,
    GRANT,
    HANG_GUARD,
    LINKED,
    REDEEM,
    TOKEN,
    TOKEN_PATH,
    WAIT,
    Clock,
    Handler,
    Script,
    Stop,
    agent_with,
    reply,
    saved_token,
)
from tsd_agent import commands, pacing
from tsd_agent import messages as m
from tsd_agent.state import AgentState, load, load_or_create

hostile = hostile_server.hostile


# --- rate limits: bounded waits, --timeout honoured --------------------------------------

def test_polling_waits_while_the_server_cannot_check_rate_limits(hostile, tmp_path):
    """503 rate_limit_unavailable (the server's Redis is down) is "come back later" to a
    polling loop, as a rate limit is: the next poll collects the token."""
    answers = [reply(503, {"error": "rate_limit_unavailable", "message": "Try again."},
                     {"Retry-After": "10"}), reply(200, LINKED)]
    hostile.scripts[AUTHORIZE] = reply(200, GRANT)
    hostile.scripts[TOKEN_PATH] = lambda handler: answers.pop(0)(handler)
    clock = Clock()
    agent = agent_with(hostile, tmp_path, clock)
    assert commands.link(agent, None) == m.EXIT_OK, agent.err.getvalue()
    assert "cannot check its rate limits" in agent.err.getvalue()
    assert 10 in clock.sleeps
    assert saved_token(tmp_path / "s.json") == TOKEN



def rate_limited(retry_after: str) -> Script:
    return reply(429, {"error": "rate_limited"}, {"Retry-After": retry_after})


def test_link_does_not_sleep_past_its_timeout_on_a_rate_limit(hostile, tmp_path):
    hostile.scripts[AUTHORIZE] = reply(200, GRANT)
    hostile.scripts[TOKEN_PATH] = rate_limited("3600")
    clock = Clock()
    agent = agent_with(hostile, tmp_path, clock)
    assert commands.link(agent, timeout=2) == m.EXIT_EXPIRED
    assert sum(clock.sleeps) <= 2, clock.sleeps
    assert "--timeout" in agent.err.getvalue()


@pytest.mark.parametrize("retry_after", ["0", "3600", "99999999999", "9" * 5000])
@pytest.mark.parametrize("command", ["discover", "link"])
def test_rate_limit_waits_are_at_least_a_second_and_at_most_ten_minutes(hostile, tmp_path,
                                                                         retry_after,
                                                                         command):
    hostile.scripts[AUTHORIZE] = reply(200, GRANT)
    hostile.scripts[TOKEN_PATH] = hostile.scripts[ANNOUNCE] = rate_limited(retry_after)
    clock = Clock()
    agent = agent_with(hostile, tmp_path, clock)
    try:
        code = (commands.discover(agent, None) if command == "discover"
                else commands.link(agent, None))
    except Stop:
        code = None
    # Still waiting, or (link) the next wait would pass the code's expiry.
    assert code in (None, m.EXIT_EXPIRED), agent.err.getvalue()
    assert clock.sleeps
    assert all(1 <= wait <= pacing.MAX_POLL_INTERVAL for wait in clock.sleeps), clock.sleeps
    assert "too many attempts" in agent.err.getvalue()


def unavailable(retry_after: str) -> Script:
    """The server's answer while its Redis is down (tsd_server/api/errors.py)."""
    return reply(503, {"error": "rate_limit_unavailable",
                       "message": "Rate limits cannot be checked right now."},
                 {"Retry-After": retry_after})


class Answers:
    """Scripts that answer in turn, the last one from then on; counts the requests."""

    def __init__(self, *scripts: Script) -> None:
        self.scripts = scripts
        self.count = 0

    def __call__(self, handler: Handler) -> None:
        self.count += 1
        self.scripts[min(self.count, len(self.scripts)) - 1](handler)


@pytest.mark.parametrize("come_back_later, words", [
    (unavailable("10"), "the server cannot check its rate limits right now"),
    (rate_limited("10"), "too many attempts"),
], ids=["rate_limit_unavailable", "rate_limited"])
def test_link_waits_out_come_back_later_before_its_first_code(hostile, tmp_path,
                                                               come_back_later, words):
    """Refused before it was handled, asking for a code is asked again after Retry-After
    (and only then: three requests for two waits), as a poll is; then link goes on."""
    authorize = Answers(come_back_later, come_back_later, reply(200, GRANT))
    hostile.scripts[AUTHORIZE] = authorize
    hostile.scripts[TOKEN_PATH] = reply(200, LINKED)
    clock = Clock()
    agent = agent_with(hostile, tmp_path, clock)
    assert commands.link(agent, timeout=60) == m.EXIT_OK, agent.err.getvalue()
    assert authorize.count == 3
    assert clock.sleeps == [10, 10, 1]  # Retry-After twice, then the grant's interval
    assert f"{words}: the server asks to retry in 10 seconds" in agent.err.getvalue()
    assert saved_token(tmp_path / "s.json") == TOKEN


@pytest.mark.parametrize("then, code", [(reply(201, LINKED), m.EXIT_OK),
                                        (rate_limited("600"), m.EXIT_RATE_LIMITED)],
                         ids=["linked", "then-rate-limited"])
def test_pair_waits_out_the_outage_but_not_a_rate_limit(hostile, tmp_path, then, code):
    """Redeeming is asked again after an outage of the server's limits (nothing was
    redeemed), but a rate limit on code guesses is reported at once, with its wait."""
    redeem = Answers(unavailable("10"), then)
    hostile.scripts[REDEEM] = redeem
    clock = Clock()
    agent = agent_with(hostile, tmp_path, clock)
    assert commands.pair(agent, "BCDF-GHJK") == code, agent.err.getvalue()
    assert redeem.count == 2 and clock.sleeps == [10]
    assert "cannot check its rate limits" in agent.err.getvalue()
    if code == m.EXIT_RATE_LIMITED:
        assert "too many attempts: the server asks to retry in 10 minutes" in \
            agent.err.getvalue()
        assert not (tmp_path / "s.json").exists()  # nothing saved
    else:
        assert saved_token(tmp_path / "s.json") == TOKEN


@pytest.mark.parametrize("retry_after, most_requests", [("0", 2), ("10", 1)])
@pytest.mark.parametrize("command, path, words", [
    (["link", "--no-qr"], AUTHORIZE, "not approved before --timeout; nothing was linked"),
    (["pair", "BCDF-GHJK"], REDEEM, "not linked before --timeout; nothing was linked"),
], ids=["link", "pair"])
def test_an_outage_longer_than_the_timeout_ends_the_first_request_with_exit_8(
        hostile, tmp_path, retry_after, most_requests, command, path, words):
    """Real time, the whole command: the first request is repeated at most once a second
    (Retry-After: 0) or not at all (Retry-After longer than --timeout), and the command
    ends at its --timeout with exit 8, not after the server's Retry-After."""
    answers = Answers(unavailable(retry_after))
    hostile.scripts[path] = answers
    state = tmp_path / "s.json"
    run = AgentRun.in_process(["--server", hostile.url, "--state", str(state), *command,
                               "--timeout", "3"])
    assert run.finish(HANG_GUARD) == m.EXIT_EXPIRED, run.err.text
    assert "cannot check its rate limits" in run.err.text
    assert run.err.text.endswith(f"error: {words}.\n"), run.err.text
    assert 1 <= answers.count <= most_requests
    assert saved_token(state) is None


# --- concurrent first runs ---------------------------------------------------------------

def test_concurrent_first_runs_end_with_one_identity(tmp_path, monkeypatch):
    path, runs = tmp_path / "tsd-agent" / "state.json", 4  # its folder does not exist yet
    everyone_looked = threading.Barrier(runs, timeout=WAIT)
    new = AgentState.new

    def new_once_every_run_found_no_file() -> AgentState:
        everyone_looked.wait()
        return new()

    monkeypatch.setattr(AgentState, "new", staticmethod(new_once_every_run_found_no_file))
    with ThreadPoolExecutor(runs) as pool:
        states = list(pool.map(lambda _: load_or_create(path, warn=pytest.fail), range(runs)))
    on_disk = load(path, warn=pytest.fail)
    assert {(s.device_id, s.device_secret) for s in states} == {
        (on_disk.device_id, on_disk.device_secret)}
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]


def test_a_first_run_works_where_the_filesystem_has_no_hard_links(tmp_path, monkeypatch):
    """FAT and some FUSE mounts refuse os.link: the first state file is then renamed into
    place, as before, rather than the first run failing."""
    import errno
    import os

    def no_hard_links(source, target):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_hard_links)
    path = tmp_path / "state.json"
    first = load_or_create(path, warn=pytest.fail)
    assert load(path, warn=pytest.fail).device_id == first.device_id
    assert load_or_create(path, warn=pytest.fail).device_id == first.device_id
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


# --- the server's database out of reach ---------------------------------------------------

def database_outage() -> Script:
    """The server's answer while its database is out of reach (tsd_server/api/errors.py)."""
    return reply(503, {"error": "database_unavailable",
                       "message": "The server's database cannot be reached right now."},
                 {"Retry-After": "5"})


def run_meeting(hostile, tmp_path, command: str, *first: Script):
    """``command`` against a server whose announce, token poll and redeem answer ``first``
    in turn, then that the printer is linked: (exit code, the answers, the clock, the
    agent)."""
    linked = {"status": "linked", **LINKED} if command == "discover" else LINKED
    answers = Answers(*first, reply(200, linked))
    hostile.scripts[AUTHORIZE] = reply(200, GRANT)
    hostile.scripts[TOKEN_PATH] = hostile.scripts[ANNOUNCE] = hostile.scripts[REDEEM] = answers
    clock = Clock()
    agent = agent_with(hostile, tmp_path, clock)
    code = (commands.pair(agent, "BCDF-GHJK") if command == "pair"
            else getattr(commands, command)(agent, None))
    return code, answers, clock, agent


@pytest.mark.parametrize("command", ["discover", "link"])
def test_announces_and_polls_wait_out_a_database_outage(hostile, tmp_path, command):
    """A database restart while a printer waits (for approval, up to 15 minutes) must not
    end the command: the answer is asked again after Retry-After."""
    code, answers, clock, agent = run_meeting(hostile, tmp_path, command, database_outage(),
                                              database_outage())
    assert code == m.EXIT_OK, agent.err.getvalue()
    assert answers.count == 3
    assert clock.sleeps.count(5) == 2, clock.sleeps
    assert "the server's database cannot be reached right now: the server asks to retry " \
           "in 5 seconds" in agent.err.getvalue()
    assert saved_token(tmp_path / "s.json") == TOKEN


def test_a_spent_device_code_after_an_outage_says_the_printer_may_be_linked(hostile,
                                                                            tmp_path):
    """The poll that met the outage may have collected the token in a commit whose answer
    was lost: the next poll's invalid_grant must not read as a plain refusal."""
    hostile.scripts[AUTHORIZE] = reply(200, GRANT)
    hostile.scripts[TOKEN_PATH] = Answers(database_outage(), reply(400, {
        "error": "invalid_grant", "message": "This device code is unknown or has already "
                                             "been used."}))
    agent = agent_with(hostile, tmp_path, Clock())
    assert commands.link(agent, None) == m.EXIT_REFUSED
    assert "may have collected the token" in agent.err.getvalue()
    assert not (tmp_path / "s.json").exists()


def test_pair_does_not_redeem_again_after_a_database_outage(hostile, tmp_path):
    """The redeem may have spent the code before its commit's answer was lost; sent again,
    a spent code counts as a wrong guess. Reported at once instead."""
    code, redeem, clock, agent = run_meeting(hostile, tmp_path, "pair", database_outage())
    assert code == m.EXIT_FAILURE
    assert redeem.count == 1 and clock.sleeps == []
    assert "database_unavailable" in agent.err.getvalue()
    assert "pair again with a new code" in agent.err.getvalue()  # not the same code again


def switched_off(disabled_by: str) -> Script:
    """503 strategy_disabled; the server adds Retry-After only when it cannot read its
    switches (tsd_server/discovery/kill_switch.py)."""
    headers = {"Retry-After": "5"} if disabled_by == "flag_store_unreadable" else {}
    return reply(503, {"error": "strategy_disabled", "strategy": "ip_match",
                       "disabled_by": disabled_by, "message": "Switched off."}, headers)


@pytest.mark.parametrize("command", ["discover", "link", "pair"])
def test_a_kill_switch_the_server_cannot_read_is_waited_out(hostile, tmp_path, command):
    """With its database out of reach the server reports every strategy off
    (flag_store_unreadable), before it does anything: every command asks again, pair too."""
    code, answers, clock, agent = run_meeting(hostile, tmp_path, command,
                                              switched_off("flag_store_unreadable"))
    assert code == m.EXIT_OK, agent.err.getvalue()
    assert answers.count == 2 and 5 in clock.sleeps
    assert "the server cannot read its kill switch right now" in agent.err.getvalue()


@pytest.mark.parametrize("command", ["discover", "link", "pair"])
def test_an_operators_switch_off_ends_the_command(hostile, tmp_path, command):
    code, answers, _, agent = run_meeting(hostile, tmp_path, command, switched_off("runtime"))
    assert code == m.EXIT_DISABLED, agent.err.getvalue()
    assert answers.count == 1
