"""tsd-agent against a server that sends values no real one would: objects where strings
belong, NaN, Infinity, 401-digit numbers, deeply nested arrays, unusable tokens, a token
in a redirect (only 2xx is success). Each is one line and a sensible exit code, never a
crash or a saved token it should not have saved; and should anything unforeseen still
raise, the last resort turns it into one line too.

The server is tests/support/hostile_server.py's, scripted byte for byte; the agent runs
for real (``main()`` in-process).
"""

from __future__ import annotations

import io
import json

import pytest

from tests.support import hostile_server
from tests.support.hostile_server import (
    ANNOUNCE,
    AUTHORIZE,
    GRANT,
    LINKED,
    ME,
    REDEEM,
    TOKEN_PATH,
    Clock,
    Stop,
    agent_with,
    linked_state,
    reply,
    run_agent,
    saved_token,
)
from tsd_agent import commands, pacing
from tsd_agent import messages as m
from tsd_agent.cli import main

hostile = hostile_server.hostile


# --- server values that crashed the agent ------------------------------------------------

def test_whoami_with_owner_and_device_that_are_not_objects(hostile, tmp_path):
    state = linked_state(hostile, tmp_path / "s.json")
    hostile.scripts[ME] = reply(200, {"device": {"id": "tsd-1", "name": "P"}, "owner": "eve"})
    code, out, err = run_agent(hostile, state, "whoami")
    assert code == m.EXIT_OK and "owner unknown" in out, err
    hostile.scripts[ME] = reply(200, {"device": ["not", "an", "object"], "owner": {}})
    code, out, err = run_agent(hostile, state, "whoami")
    assert code == m.EXIT_FAILURE and err.count("\n") == 1 and "incomplete" in err


@pytest.mark.parametrize("answer", [
    '{"status": "confirm", "poll_interval": 1, "confirmation": "ABCD"}',
    '{"status": "confirm", "poll_interval": 1, "confirmation": ["ABCD"]}',
    '{"status": "waiting", "poll_interval": NaN}',
    '{"status": "waiting", "poll_interval": 1' + "0" * 400 + "}",
], ids=["confirmation-str", "confirmation-list", "nan", "401-digits"])
def test_discover_survives_bad_values(hostile, tmp_path, answer):
    # A bad interval falls back to the default (5 s), longer than --timeout: one announce.
    hostile.scripts[ANNOUNCE] = reply(200, answer)
    code, _, err = run_agent(hostile, tmp_path / "s.json", "discover", "--timeout", "0.5")
    assert code == m.EXIT_EXPIRED and err.count("\n") == 1, err


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 10 ** 400, -1],
                         ids=["nan", "infinity", "-infinity", "401-digits", "negative"])
def test_an_interval_that_is_no_finite_number_of_seconds_gets_the_default(value):
    # Not clamped to 0.1 s or 10 minutes: such a value says nothing about the server's pace.
    assert pacing.interval_from(value) == pacing.DEFAULT_POLL_INTERVAL


def test_discover_shows_the_code_when_its_expiry_is_infinite(hostile, tmp_path):
    hostile.scripts[ANNOUNCE] = reply(200, '{"status": "confirm", "poll_interval": 1, '
                                           '"confirmation": {"code": "4711", '
                                           '"expires_in": Infinity}}')
    code, out, err = run_agent(hostile, tmp_path / "s.json", "discover", "--timeout", "0.5")
    assert code == m.EXIT_EXPIRED, err
    assert "Confirmation code: 4711" in out and "type this code on the website." in out


@pytest.mark.parametrize("expires_in", ["NaN", "-Infinity", "1" + "0" * 400])
def test_link_survives_a_bad_expires_in(hostile, tmp_path, expires_in):
    grant = json.dumps({**GRANT, "expires_in": 0}).replace('"expires_in": 0',
                                                           f'"expires_in": {expires_in}')
    hostile.scripts[AUTHORIZE] = reply(200, grant)
    code, out, err = run_agent(hostile, tmp_path / "s.json", "link", "--no-qr",
                               "--timeout", "0.5")
    assert code == m.EXIT_EXPIRED and err.count("\n") == 1, err
    assert "expires in about 10 minutes" in out  # the default, not the server's value


@pytest.mark.parametrize("expires_in, minutes", [(900, 15), (86400, 60)])
def test_link_waits_as_long_as_the_code_lives(hostile, tmp_path, expires_in, minutes):
    """The server's codes live 15 minutes by default: the agent must not give up after
    10 (the poll interval's cap once applied to the code's lifetime too), nor wait a day
    for a server that says so."""
    hostile.scripts[AUTHORIZE] = reply(200, json.dumps({**GRANT, "expires_in": expires_in}))
    code, out, err = run_agent(hostile, tmp_path / "s.json", "link", "--no-qr",
                               "--timeout", "0.5")
    assert code == m.EXIT_EXPIRED, err
    assert f"expires in about {minutes} minutes" in out


def test_a_rate_limit_with_a_huge_retry_after_in_the_body_is_one_line(hostile, tmp_path):
    hostile.scripts[REDEEM] = reply(429, '{"error": "rate_limited", "retry_after": 1'
                                         + "0" * 400 + "}")
    code, _, err = run_agent(hostile, tmp_path / "s.json", "pair", "BCDF-GHJK")
    assert code == m.EXIT_RATE_LIMITED and err.count("\n") == 1, err


def test_a_deeply_nested_strategy_is_one_line(hostile, tmp_path):
    strategy = "[" * 900 + '"qr_code"' + "]" * 900
    hostile.scripts[REDEEM] = reply(503, '{"error": "strategy_disabled", "strategy": '
                                         + strategy + "}")
    code, _, err = run_agent(hostile, tmp_path / "s.json", "pair", "BCDF-GHJK")
    assert code == m.EXIT_DISABLED and err.count("\n") == 1, err


@pytest.mark.parametrize("token", ["tsd_at_\r\nX-Evil: 1", "é" * 30000, "t" * 5000],
                         ids=["line-break", "escapes-beyond-state-file", "too-long"])
def test_an_unusable_token_is_not_saved(hostile, tmp_path, token):
    # "é" * 30000 fits in an answer but, escaped, not in a state file: saving it would make
    # the state file unreadable and cost the printer its identity.
    hostile.scripts[REDEEM] = reply(200, json.dumps({"access_token": token},
                                                    ensure_ascii=False))
    code, out, err = run_agent(hostile, tmp_path / "s.json", "pair", "BCDF-GHJK")
    assert code == m.EXIT_FAILURE and "Linked" not in out and err.count("\n") == 1, err
    assert saved_token(tmp_path / "s.json") is None


# --- only 2xx is success -----------------------------------------------------------------

@pytest.mark.parametrize("status", [301, 302, 307])
def test_a_redirect_carrying_a_token_does_not_link(hostile, tmp_path, status):
    hostile.scripts[REDEEM] = reply(status, LINKED, {"Location": "http://127.0.0.1:9/"})
    code, out, err = run_agent(hostile, tmp_path / "s.json", "pair", "BCDF-GHJK")
    assert code == m.EXIT_FAILURE and "Linked" not in out, (out, err)
    assert f"HTTP {status}" in err and err.count("\n") == 1
    assert saved_token(tmp_path / "s.json") is None


# --- last resort -------------------------------------------------------------------------

def test_an_unforeseen_failure_is_still_one_line(tmp_path, monkeypatch):
    def broken(agent: commands.Agent) -> int:
        raise TypeError("'str' object has no attribute 'get'\nsecond line")

    monkeypatch.setattr(commands, "whoami", broken)
    err = io.StringIO()
    code = main(["--state", str(tmp_path / "s.json"), "whoami"], stdout=io.StringIO(),
                stderr=err)
    assert code == m.EXIT_FAILURE
    assert err.getvalue().count("\n") == 1 and "TypeError" in err.getvalue()


# --- a Retry-After date too large for a datetime, a code that lives 0 seconds -------------

HUGE_YEAR = "Mon, 01 Jan 99999999999999999999 00:00:00 GMT"


def test_a_rate_limit_with_an_overflowing_retry_after_date_is_still_a_rate_limit(
        hostile, tmp_path):
    """email.utils raises OverflowError for a 20-digit year: the 429 is still a rate limit
    (exit 6, the documented minute), not "Python int too large" (exit 1)."""
    hostile.scripts[REDEEM] = reply(429, {"error": "rate_limited"}, {"Retry-After": HUGE_YEAR})
    code, _, err = run_agent(hostile, tmp_path / "s.json", "pair", "BCDF-GHJK")
    assert code == m.EXIT_RATE_LIMITED, err
    assert "wait a minute" in err, err


def test_discover_waits_out_an_outage_with_an_overflowing_retry_after(hostile, tmp_path):
    hostile.scripts[ANNOUNCE] = reply(503, {"error": "rate_limit_unavailable"},
                                      {"Retry-After": HUGE_YEAR})
    clock = Clock()
    agent = agent_with(hostile, tmp_path, clock)
    with pytest.raises(Stop):  # the clock's 10th sleep: it kept waiting the outage out
        commands.discover(agent, None)
    assert clock.sleeps[0] == 60, (clock.sleeps, agent.err.getvalue())


def test_a_device_code_that_lives_0_seconds_has_expired(hostile, tmp_path):
    """expires_in 0 is a finite number: the code is already gone, not 10 minutes long."""
    hostile.scripts[AUTHORIZE] = reply(200, {**GRANT, "expires_in": 0})
    polled = []
    hostile.scripts[TOKEN_PATH] = lambda handler: (polled.append(1),
                                                   reply(400, {"error": "expired_token"})(handler))
    code, _, err = run_agent(hostile, tmp_path / "s.json", "link", "--no-qr")
    assert code == m.EXIT_EXPIRED, err
    assert "the code expired before anyone approved it" in err and not polled, err
