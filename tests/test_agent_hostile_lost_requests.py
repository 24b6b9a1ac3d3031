"""tsd-agent when its request's answer was lost, or the request never went out: an answer
lost after the request was written may have carried the token (a poll, a redeem, an
announce, also through a forwarding proxy, also when --timeout or the call's own limit
cuts it off), so the agent says the printer may be linked; a request that never went out
(a failed TLS handshake, a proxy refusing or sitting on the CONNECT, no time left) linked
nothing, and the agent says so instead. Every such failure is one line, never a crash or
a saved token it should not have saved.

The server is tests/support/hostile_server.py's, scripted byte for byte, and its silent
proxy; the agent runs for real (``main()`` in-process).
"""

from __future__ import annotations

import errno
import io
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

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
    TOKEN_PATH,
    SilentProxy,
    forward_proxy,
    reply,
    run_agent,
    saved_token,
)
from tsd_agent import client as agent_client
from tsd_agent import messages as m
from tsd_agent import state as agent_state
from tsd_agent.cli import main
from tsd_agent.client import Client
from tsd_agent.state import load_or_create

hostile = hostile_server.hostile
silent_proxy = hostile_server.silent_proxy


# --- answers lost, requests never sent ---------------------------------------------------

def test_an_answer_lost_after_a_poll_was_sent_may_have_carried_the_token(hostile, tmp_path):
    """The server hangs up after reading the poll: the link may have happened there."""
    hostile.scripts[AUTHORIZE] = reply(200, GRANT)
    hostile.scripts[TOKEN_PATH] = lambda handler: None  # reads the request, answers nothing
    code, out, err = run_agent(hostile, tmp_path / "s.json", "link", "--no-qr")
    assert code == m.EXIT_UNREACHABLE, err
    assert "may be linked without its token" in err and err.count("\n") == 1, err


def test_a_redeem_whose_answer_was_lost_may_have_linked(hostile, tmp_path):
    """The server hangs up after reading the redeem: the code may be spent and the printer
    linked there, so the agent says so rather than only "try again later"."""
    hostile.scripts[REDEEM] = lambda handler: None  # reads the request, answers nothing
    code, out, err = run_agent(hostile, tmp_path / "s.json", "pair", "BCDF-GHJK")
    assert code == m.EXIT_UNREACHABLE, err
    assert "may have linked the printer without its token" in err, err
    assert err.count("\n") == 1 and "Linked" not in out
    assert saved_token(tmp_path / "s.json") is None


@pytest.mark.parametrize("command, path", [(["pair", "BCDF-GHJK"], REDEEM),
                                           (["discover"], ANNOUNCE)], ids=["pair", "discover"])
def test_a_request_that_never_went_out_is_not_reported_as_lost(hostile, tmp_path, command,
                                                               path):
    """https to a plain-HTTP server: the TLS handshake fails before any request is sent, so
    nothing can have been linked and the agent must not tell the person to unlink it or to
    throw away a code that still works."""
    reached: list[str] = []
    hostile.scripts[path] = lambda handler: reached.append(handler.path)
    out, err = io.StringIO(), io.StringIO()
    code = main(["--server", hostile.url.replace("http://", "https://"),
                 "--state", str(tmp_path / "s.json"), *command], stdout=out, stderr=err)
    assert code == m.EXIT_UNREACHABLE, err.getvalue()
    assert "may have linked" not in err.getvalue() and "may be linked" not in err.getvalue()
    assert err.getvalue().count("\n") == 1 and reached == []


def test_a_request_that_went_out_through_a_proxy_may_have_been_acted_on(hostile, monkeypatch):
    """Through a forwarding proxy, a server that read the redeem and closed without an answer
    comes back from urllib3 as a ProxyError, as if the proxy had never been reached. The
    request was written, so the agent must treat its answer as lost, not as never sent."""
    forward_proxy(monkeypatch, hostile.url)
    reached: list[str] = []
    hostile.scripts["http://printer-server.test" + REDEEM] = \
        lambda handler: reached.append(handler.path)  # reads it, answers nothing
    with pytest.raises(agent_client.Unreachable) as caught:
        Client("http://printer-server.test").redeem("BCDF-GHJK", "printer-0001", "P", None)
    assert reached and caught.value.sent is True, caught.value


def test_a_proxy_that_refuses_the_tunnel_sent_nothing(hostile, monkeypatch):
    """A proxy refusing CONNECT: the request itself was never written."""
    forward_proxy(monkeypatch, hostile.url)
    with pytest.raises(agent_client.Unreachable) as caught:
        Client("https://printer-server.test").redeem("BCDF-GHJK", "printer-0001", "P", None)
    assert caught.value.sent is False, caught.value


LINKING_COMMANDS = pytest.mark.parametrize("command, may_be_linked", [
    (["discover"], "may be linked without its token"),
    (["pair", "BCDF-GHJK"], "may have linked the printer without its token"),
    (["link", "--no-qr"], "may be linked without its token"),  # a token poll
], ids=["discover", "pair", "link-poll"])


def run_through(proxy: SilentProxy, monkeypatch, server: str, state: Path, *args: str,
                ) -> tuple[int, str]:
    """A whole command through ``proxy``; link gets its code without it, so that what the
    proxy stalls is a token poll. The exit code and the error lines."""
    monkeypatch.setattr(Client, "authorize", lambda self, *a, **kw: GRANT)  # interval 1 s
    run = AgentRun.in_process(["--server", server, "--state", str(state), *args])
    code = run.finish(HANG_GUARD)
    assert "Linked" not in run.out.text and saved_token(state) is None
    errors = [line for line in run.err.text.splitlines() if "error:" in line]
    assert len(errors) == 1, run.err.text
    return code, errors[0]


@LINKING_COMMANDS
def test_timeout_before_the_request_was_written_says_nothing_was_linked(
        silent_proxy, monkeypatch, tmp_path, command, may_be_linked):
    """--timeout runs out while a proxy sits on the CONNECT (as it could in a name lookup
    or a connect that hangs): no byte of the request went out, so nothing can have been
    linked, and the agent must not send the person to unlink the printer or to throw away
    a code that still works."""
    code, error = run_through(silent_proxy, monkeypatch, "https://printer-server.test",
                              tmp_path / "s.json", *command, "--timeout", "2.5")
    assert code == m.EXIT_EXPIRED, error
    assert "--timeout ran out while connecting to https://printer-server.test" in error
    assert "never sent, so nothing was linked" in error and "may" not in error, error
    read = silent_proxy.settled()
    assert read and all(data.startswith(b"CONNECT ") for data in read), read


@LINKING_COMMANDS
def test_timeout_after_the_request_was_written_still_says_it_may_be_linked(
        silent_proxy, monkeypatch, tmp_path, command, may_be_linked):
    """The other side of the test above: plain http through the same proxy writes the
    request itself to it, and the proxy could have passed it on. Cut off by --timeout, its
    answer may have carried the token."""
    code, error = run_through(silent_proxy, monkeypatch, "http://printer-server.test",
                              tmp_path / "s.json", *command, "--timeout", "2.5")
    assert code == m.EXIT_EXPIRED, error
    assert "--timeout ran out before the server answered" in error
    assert may_be_linked in error and "never sent" not in error, error
    read = silent_proxy.settled()
    assert any(b"POST http://printer-server.test/api/v1/" in data for data in read), read


@pytest.mark.parametrize("scheme, sent", [("https", False), ("http", True)])
def test_a_call_given_up_at_its_own_limit_tells_whether_it_was_sent(silent_proxy,
                                                                     monkeypatch, scheme,
                                                                     sent):
    """Without --timeout the same holds at the call's own limit (ANSWER_TIMEOUT)."""
    monkeypatch.setattr(agent_client, "ANSWER_TIMEOUT", 0.5, raising=False)
    with pytest.raises(agent_client.Unreachable) as caught:
        Client(f"{scheme}://printer-server.test").redeem("BCDF-GHJK", "printer-0001", "P",
                                                         None)
    assert not isinstance(caught.value, agent_client.OutOfTime)
    assert caught.value.kind == "timeout" and caught.value.sent is sent, caught.value
    words = "did not answer in time" if sent else "could not be reached in time"
    assert words in m.describe(caught.value)[1]


def test_a_call_with_no_time_left_is_not_sent():
    with pytest.raises(agent_client.OutOfTime) as caught:
        Client("http://127.0.0.1:9").announce("printer-0001", "secret", "Printer", None,
                                              within=0)
    assert caught.value.sent is False


# --- Ctrl-C while a call is under way, and a token that cannot be kept ---------------------

REPO = Path(__file__).resolve().parents[1]


def interrupt_in_flight(server, tmp_path: Path, path: str, *command: str) -> tuple[int, str]:
    """Runs the agent as a process; presses Ctrl-C once the server holds the request at
    ``path``, before it answers."""
    got_request, release = threading.Event(), threading.Event()

    def hold_then_answer(handler) -> None:
        got_request.set()
        release.wait(hostile_server.WAIT)
        reply(201, LINKED)(handler)

    server.scripts[path] = hold_then_answer
    server.scripts.setdefault(AUTHORIZE, reply(200, {**GRANT, "interval": 0.1}))
    agent = subprocess.Popen(
        [sys.executable, "-m", "tsd_agent", "--server", server.url, "--state",
         str(tmp_path / "s.json"), *command],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert got_request.wait(hostile_server.WAIT), "the agent never sent the request"
        agent.send_signal(signal.SIGINT)
        _, err = agent.communicate(timeout=hostile_server.WAIT)
    finally:
        release.set()
        if agent.poll() is None:
            agent.kill()
    return agent.returncode, err


@pytest.mark.parametrize("path, command, words", [
    (REDEEM, ("pair", "BCDF-GHJK"), "The code may have linked the printer"),
    (ANNOUNCE, ("discover",), "the printer may be linked without its token"),
    (TOKEN_PATH, ("link", "--no-qr"), "the printer may be linked without its token"),
])
def test_ctrl_c_during_a_call_that_can_link_says_its_answer_is_lost(
        hostile, tmp_path, path, command, words):
    """The server has the request (a code may be spent, the printer linked) when the person
    presses Ctrl-C: its answer, perhaps the token, is lost like any cut-off answer's, and
    the agent says so instead of "nothing more was sent"."""
    code, err = interrupt_in_flight(hostile, tmp_path, path, *command)
    assert code == m.EXIT_INTERRUPTED, err
    assert "its answer is lost" in err and words in err, err
    assert "nothing more was sent" not in err
    assert saved_token(tmp_path / "s.json") is None


def test_ctrl_c_while_asking_for_a_code_says_nothing_was_linked(hostile, tmp_path):
    """Asking for a device code links nothing: Ctrl-C then is a plain stop."""
    code, err = interrupt_in_flight(hostile, tmp_path, AUTHORIZE, "link", "--no-qr")
    assert code == m.EXIT_INTERRUPTED, err
    assert "stopped; nothing more was sent." in err and "may" not in err, err


def redeem_links(server) -> threading.Event:
    """Scripts the redeem to link, with a token; the event is set once a redeem came."""
    redeemed = threading.Event()

    def note_and_link(handler) -> None:
        redeemed.set()
        reply(201, LINKED)(handler)

    server.scripts[REDEEM] = note_and_link
    return redeemed


def test_a_token_that_cannot_be_saved_says_the_printer_is_linked_without_it(
        hostile, tmp_path, monkeypatch):
    """The server linked the printer and sent its one-time token; then the save fails (a
    full SD card). The person is told that the website lists the printer without a token
    here, and what to do."""
    path = tmp_path / "s.json"
    linked = redeem_links(hostile)

    def full_once_linked(source, target):
        if linked.is_set():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        os.rename(source, target)

    monkeypatch.setattr(agent_state.os, "replace", full_once_linked)
    code, _, err = run_agent(hostile, path, "pair", "BCDF-GHJK")
    assert code == m.EXIT_STATE, err
    assert "No space left on device" in err
    assert "The server linked this printer, but its token could not be saved" in err, err
    assert "Unlink it there" in err
    assert saved_token(path) is None


def test_a_state_file_that_cannot_be_written_stops_before_the_code_is_spent(
        hostile, tmp_path, monkeypatch):
    """A read-only mount or a full disk found before the redeem: nothing is sent, so the
    code is not spent on a token that could not be kept."""
    path = tmp_path / "s.json"
    load_or_create(path, warn=pytest.fail)

    def read_only(source, target):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    redeemed = redeem_links(hostile)
    monkeypatch.setattr(agent_state.os, "replace", read_only)
    code, _, err = run_agent(hostile, path, "pair", "BCDF-GHJK")
    assert code == m.EXIT_STATE, err
    assert "cannot write state file" in err and "Read-only file system" in err, err
    assert not redeemed.is_set(), "the code was sent, and may be spent"
