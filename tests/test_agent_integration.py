"""tsd-agent against a real gunicorn server (SQLite file) on loopback, for every way of linking.

The agent runs for real -- its ``main()`` in a thread, and the installed ``tsd-agent``
console script as a subprocess -- while the test plays the person's side over HTTP: log in,
CSRF token, pick the printer / type its code / open its QR link, approve. Nothing is mocked.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import time
from pathlib import Path

import pytest

from tests.support import db_backends, servers
from tests.support.agent_runs import (
    AGENT,
    CONFIRMATION_LINE,
    QR_LINE,
    USER_CODE_LINE,
    WAIT,
    WAITING_LINE,
    AgentRun,
)
from tests.support.apps import another_app
from tests.support.ip_match_world import HttpEndpoint, Person
from tests.support.pairing import FRESH_SCAN, LOOSE_LIMITS, shown_request, switch
from tsd_agent import messages as m
from tsd_agent.cli import main
from tsd_agent.state import AgentState, load, save

FAST = {
    **LOOSE_LIMITS,
    # One box on loopback: the agent and the browser are one LAN household.
    "IP_MATCH_ALLOW_PRIVATE": True,
    "IP_MATCH_POLL_INTERVAL": 1,
    "IP_MATCH_LAST_SEEN_WRITE_INTERVAL": 1,
    "IP_MATCH_MAX_ACCOUNTS_PER_HOUSEHOLD": 100,
    "IP_MATCH_MAX_DEVICES_PER_HOUSEHOLD": 100,
    "IP_MATCH_CLAIM_RATE_LIMIT": "1000 per minute",
    "DEVICE_FLOW_INTERVAL": 1,
    "KILL_SWITCH_CACHE_SECONDS": 0,
}
# Defaults (no LAN mode) with a tight guess limit, one worker so the limit is one counter.
# Its device flow keeps the default interval (5 s), so polling early earns slow_down.
STRICT = {"PAIRING_GUESS_LIMIT_PER_IP": "1 per 15 minutes",
          "DEVICE_FLOW_TOKEN_LIMIT": "2 per minute"}


def agent(mode: str, server: str, state: Path, *args: str) -> AgentRun:
    """Start one agent command: main() in a thread, or the installed console script."""
    argv = ["--server", server, "--state", str(state), *args]
    if mode == "in_process":
        return AgentRun.in_process(argv)
    assert AGENT.exists(), f"console script not installed at {AGENT}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TSD_")}
    env["HOME"] = str(state.parent)
    return AgentRun.process_of([str(AGENT), *argv], env=env)


def run_agent(server: str, state: Path, *args: str) -> tuple[int, str, str]:
    """A short command in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = main(["--server", server, "--state", str(state), *args], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def agent_database(tmp_path_factory):
    """One SQLite file shared by the gunicorn servers and the test's own app instance."""
    url = f"sqlite:///{tmp_path_factory.mktemp('agent-db') / 'tsd.sqlite3'}"
    db_backends.migrate(url)
    return url


@pytest.fixture(scope="module")
def server(agent_database, tmp_path_factory):
    # One worker: production refuses several on memory:// rate limits (gunicorn.conf.py).
    with servers.gunicorn(tmp_path_factory.mktemp("agent-server"), database_url=agent_database,
                          settings=FAST, workers=1) as running:
        yield running


@pytest.fixture(scope="module")
def strict_server(agent_database, tmp_path_factory):
    with servers.gunicorn(tmp_path_factory.mktemp("strict-server"), database_url=agent_database,
                          settings=STRICT, workers=1) as running:
        yield running


@pytest.fixture(scope="module")
def outage_server(agent_database, tmp_path_factory):
    """A server whose Redis is down: its rate limits live on a closed loopback port (as in
    tests/test_rate_limit_outage.py), so every rate-limited request answers 503
    rate_limit_unavailable."""
    with servers.gunicorn(tmp_path_factory.mktemp("outage-server"),
                          database_url=agent_database,
                          settings={"RATELIMIT_STORAGE_URI": "redis://127.0.0.1:1"}) as running:
        yield running


@pytest.fixture(scope="module")
def server_app(agent_database):
    with another_app(agent_database) as app:
        yield app


@pytest.fixture
def person(server, server_app):
    """A new account, logged in over HTTP from 127.0.0.1 (the agent's household too)."""
    from tsd_server.auth.accounts import create_user

    email, password = f"owner-{secrets.token_hex(4)}@example.org", "correct horse battery"
    name = f"Owner {secrets.token_hex(2)}"
    with server_app.app_context():
        user_id = create_user(email, password, display_name=name).id
    return Person(HttpEndpoint(server.base_url, "127.0.0.1"), "127.0.0.1", user_id, email,
                  password, name)


def form_post(person: Person, path: str, data: dict):
    return person.endpoint.request("POST", path, data={**data, "csrf_token": person.csrf})


def answer(person: Person, decision: str):
    """Approve or deny on the approval page: drawn first, then its button pressed."""
    shown = shown_request(person.endpoint.request("GET", "/link/confirm").body)
    return form_post(person, "/link/confirm", {"decision": decision, "authorization": shown})


def my_devices(person: Person) -> dict[str, dict]:
    reply = person.endpoint.request("GET", "/api/v1/devices")
    assert reply.status == 200, reply.body
    return {device["id"]: device for device in reply.json["devices"]}


def assert_linked(server, state_path: Path, person: Person, name: str, strategy: str) -> None:
    """The state file holds a token for this server, the owner sees the printer, whoami works."""
    saved = load(state_path, warn=pytest.fail)
    assert saved.access_token and saved.access_token.startswith("tsd_at_")
    assert saved.server == server.base_url and saved.linked_via == strategy
    device = my_devices(person)[saved.device_id]
    assert device["name"] == name and device["linked_via"] == strategy
    code, out, err = run_agent(server.base_url, state_path, "whoami")
    assert code == m.EXIT_OK, err
    assert saved.device_id in out and person.display_name in out and strategy in out


MODES = ["in_process", "subprocess"]


@pytest.mark.parametrize("mode", MODES)
def test_pair_with_a_code_the_website_issued(mode, server, person, tmp_path):
    issued = person.endpoint.request("POST", "/api/v1/pairing/codes",
                                     headers={"X-CSRFToken": person.csrf})
    assert issued.status == 201, issued.body
    state = tmp_path / "state.json"
    run = agent(mode, server.base_url, state, "--name", "Bench printer", "pair",
                   issued.json["code"].lower())
    assert run.finish() == m.EXIT_OK, run.err.text
    assert "Linked" in run.out.text
    assert_linked(server, state, person, "Bench printer", "pairing_code")


@pytest.mark.parametrize("mode", MODES)
def test_link_by_typing_the_printers_code_on_the_website(mode, server, person, tmp_path):
    state = tmp_path / "state.json"
    run = agent(mode, server.base_url, state, "--name", "Garage printer", "--model", "2.4",
                   "link")
    user_code = run.out.wait_for(USER_CODE_LINE).group(1)
    assert f"open {server.base_url}/link " in run.out.text
    typed = form_post(person, "/link", {"code": user_code})
    assert typed.status == 302, typed.body
    approved = answer(person, "approve")
    assert approved.status == 302, approved.body
    assert run.finish() == m.EXIT_OK, run.err.text
    assert_linked(server, state, person, "Garage printer", "pairing_code")


@pytest.mark.parametrize("mode", MODES)
def test_link_by_scanning_the_qr_code(mode, server, person, tmp_path):
    from tsd_agent.commands import qr_text

    state = tmp_path / "state.json"
    run = agent(mode, server.base_url, state, "--name", "Phone-scanned printer", "link")
    url = run.out.wait_for(QR_LINE).group(1)
    run.out.wait_for(WAITING_LINE)
    # The terminal drawing is the QR code of exactly that link.
    assert qr_text(url, run.out) in run.out.text
    opened = person.endpoint.request("GET", url[len(server.base_url):], headers=FRESH_SCAN)
    assert opened.status in (200, 302), opened.body
    approved = answer(person, "approve")
    assert approved.status == 302, approved.body
    assert run.finish() == m.EXIT_OK, run.err.text
    assert_linked(server, state, person, "Phone-scanned printer", "qr_code")
    # gunicorn.conf.py: the access log shows the visit, never the one-time token.
    log = wait_for_log(server, "/link/qr/")
    assert '"GET /link/qr/[redacted]"' in log and url.rsplit("/", 1)[1] not in log


def wait_for_log(server, text: str) -> str:
    """The server's log once ``text`` is in it (access lines are written after answering)."""
    deadline = time.monotonic() + WAIT
    while text not in (log := Path(server.log_path).read_text(errors="replace")):
        assert time.monotonic() < deadline, f"{text!r} never appeared in {server.log_path}"
        time.sleep(0.1)
    return log


def wait_until_nearby(person: Person, device_id: str) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        reply = person.nearby()
        assert reply.status == 200, reply.body
        if device_id in {d["device_id"] for d in reply.json["devices"]}:
            return
        time.sleep(0.2)
    raise AssertionError(f"{device_id} never showed up nearby")


@pytest.mark.parametrize("mode", MODES)
def test_discover_shows_who_asks_and_the_code_then_links(mode, server, person, tmp_path):
    state = tmp_path / "state.json"
    identity = AgentState.new()
    save(state, identity)
    run = agent(mode, server.base_url, state, "--name", "Kitchen printer", "discover")
    wait_until_nearby(person, identity.device_id)
    offer = person.link(identity.device_id)
    assert offer.status == 200 and offer.json["status"] == "awaiting_confirmation", offer.body
    code = run.out.wait_for(CONFIRMATION_LINE).group(1)
    assert f"{person.display_name} wants to link this printer" in run.out.text
    confirmed = person.confirm(offer.json["offer_id"], code)
    assert confirmed.status == 200, confirmed.body
    assert run.finish() == m.EXIT_OK, run.err.text
    assert_linked(server, state, person, "Kitchen printer", "ip_match")
    # Linking did not change the printer's identity.
    assert load(state, warn=pytest.fail).device_secret == identity.device_secret


# --- refusals: each one line, each its exit code ------------------------------------------

def test_denied_link_exits_7_and_saves_no_token(server, person, tmp_path):
    state = tmp_path / "state.json"
    run = agent("in_process", server.base_url, state, "link", "--no-qr")
    user_code = run.out.wait_for(USER_CODE_LINE).group(1)
    assert "█" not in run.out.text and "▀" not in run.out.text
    assert form_post(person, "/link", {"code": user_code}).status == 302
    assert answer(person, "deny").status == 302
    assert run.finish() == m.EXIT_REFUSED
    assert "denied" in run.err.text and run.err.text.count("\n") == 1
    assert load(state, warn=pytest.fail).access_token is None
    # --no-qr draws no QR code, so it asks nobody to scan one: the link is there to open.
    assert "scan" not in run.out.text
    assert f"Or open {server.base_url}/" in run.out.text


def test_link_gives_up_at_its_timeout(server, tmp_path):
    code, _, err = run_agent(server.base_url, tmp_path / "s.json", "link", "--timeout", "1",
                             "--no-qr")
    assert code == m.EXIT_EXPIRED and "--timeout" in err


def test_invalid_code_exits_7(server, tmp_path):
    code, _, err = run_agent(server.base_url, tmp_path / "s.json", "pair", "BCDF-GHJK")
    assert code == m.EXIT_REFUSED
    assert "not valid" in err and err.count("\n") == 1


def test_switched_off_strategy_exits_4_and_says_by_whom(server, server_app, person, tmp_path):
    issued = person.endpoint.request("POST", "/api/v1/pairing/codes",
                                     headers={"X-CSRFToken": person.csrf})
    switch(server_app, "pairing_code", False)
    try:
        code, _, err = run_agent(server.base_url, tmp_path / "s.json", "pair",
                                 issued.json["code"])
    finally:
        switch(server_app, "pairing_code", True)
    assert code == m.EXIT_DISABLED
    assert "pairing codes (pairing_code) is switched off" in err and "administrator" in err


def test_discover_from_a_loopback_address_without_lan_mode_exits_5(strict_server, tmp_path):
    code, _, err = run_agent(strict_server.base_url, tmp_path / "s.json", "discover",
                             "--timeout", "5")
    assert code == m.EXIT_INELIGIBLE
    assert "private or loopback" in err and "TSD_IP_MATCH_ALLOW_PRIVATE" in err


def test_rate_limit_exits_6_with_the_wait(strict_server, tmp_path):
    state = tmp_path / "s.json"
    first, _, _ = run_agent(strict_server.base_url, state, "pair", "BCDF-GHJK")
    second, _, err = run_agent(strict_server.base_url, state, "pair", "BCDF-GHJK")
    assert first == m.EXIT_REFUSED
    assert second == m.EXIT_RATE_LIMITED
    assert re.search(r"retry in \d+ (seconds|minutes)", err), err


@pytest.mark.parametrize("command, words", [
    (["link", "--no-qr"], "not approved before --timeout; nothing was linked"),
    (["pair", "BCDF-GHJK"], "not linked before --timeout; nothing was linked"),
], ids=["link", "pair"])
def test_first_request_waits_for_the_rate_limits_within_its_timeout(outage_server, tmp_path,
                                                                     command, words):
    """The real server's outage answer (503, Retry-After: 10) is waited out, not reported
    as a server failure: with --timeout 5 that wait would pass the timeout, so the agent
    stops at once with exit 8."""
    code, out, err = run_agent(outage_server.base_url, tmp_path / "s.json", *command,
                               "--timeout", "5")
    assert code == m.EXIT_EXPIRED, err
    assert "the server cannot check its rate limits right now: the server asks to retry " \
           "in 10 seconds" in err
    assert err.endswith(f"error: {words}.\n") and "Linked" not in out


def test_whoami_after_the_owner_unlinks_exits_9(server, person, tmp_path):
    issued = person.endpoint.request("POST", "/api/v1/pairing/codes",
                                     headers={"X-CSRFToken": person.csrf})
    state = tmp_path / "s.json"
    assert run_agent(server.base_url, state, "pair", issued.json["code"])[0] == m.EXIT_OK
    device_id = load(state, warn=pytest.fail).device_id
    pk = my_devices(person)[device_id]["pk"]
    unlinked = person.endpoint.request("DELETE", f"/api/v1/devices/{pk}",
                                       headers={"X-CSRFToken": person.csrf})
    assert unlinked.status == 200, unlinked.body
    code, _, err = run_agent(server.base_url, state, "whoami")
    assert code == m.EXIT_NOT_LINKED and "no longer accepts" in err


def test_token_is_never_sent_to_another_server(server, strict_server, person, tmp_path):
    issued = person.endpoint.request("POST", "/api/v1/pairing/codes",
                                     headers={"X-CSRFToken": person.csrf})
    state = tmp_path / "s.json"
    assert run_agent(server.base_url, state, "pair", issued.json["code"])[0] == m.EXIT_OK
    log_before = (Path(strict_server.log_path)).read_text(errors="replace")
    code, _, err = run_agent(strict_server.base_url, state, "whoami")
    assert code == m.EXIT_NOT_LINKED and f"issued by {server.base_url}" in err
    assert "/api/v1/device/me" not in Path(strict_server.log_path).read_text(
        errors="replace")[len(log_before):]


class Stop(Exception):
    """Ends an agent loop from its (injected) sleep."""


def test_link_loop_backs_off_on_slow_down_and_waits_out_rate_limits(strict_server, tmp_path):
    """The agent's real loop against the real server; only its clock is the test's.

    The first two waits are skipped, so the second poll comes too early: the server answers
    slow_down and the agent adds 5 s. The third poll hits the token rate limit: the agent
    waits what Retry-After says before polling again.
    """
    import io

    from tsd_agent import commands
    from tsd_agent.client import Client

    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 5:
            raise Stop

    out, err = io.StringIO(), io.StringIO()
    state = AgentState.new()
    agent_ = commands.Agent(client=Client(strict_server.base_url), state=state,
                            state_path=tmp_path / "s.json", name="Impatient", model=None,
                            out=out, err=err, sleep=sleep, qr=False)
    with pytest.raises(Stop):
        commands.link(agent_, timeout=None)
    assert waits[:3] == [5, 5, 10], (waits, err.getvalue())
    retry = int(re.search(r"retry in (\d+) seconds; waiting", err.getvalue()).group(1))
    assert retry > 10 and waits[3] == retry


def test_a_second_printer_with_the_same_id_is_refused(server, tmp_path):
    """Only the device that bound its secret may answer for its device_id."""
    first = AgentState.new()
    impostor = AgentState(device_id=first.device_id, device_secret=AgentState.new().device_secret)
    save(tmp_path / "first.json", first)
    save(tmp_path / "impostor.json", impostor)
    # One announce each: --timeout ends the loop before the next one (poll_interval 1 s).
    assert run_agent(server.base_url, tmp_path / "first.json", "discover",
                     "--timeout", "0.5")[0] == m.EXIT_EXPIRED
    code, _, err = run_agent(server.base_url, tmp_path / "impostor.json", "discover")
    assert code == m.EXIT_REFUSED and "another device is announcing" in err
    # The real one still may.
    assert run_agent(server.base_url, tmp_path / "first.json", "discover",
                     "--timeout", "0.5")[0] == m.EXIT_EXPIRED
