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

import io
from pathlib import Path

import pytest

from tests.support import hostile_server
from tests.support.agent_runs import AgentRun
from tests.support.hostile_server import (
    ANNOUNCE,
    AUTHORIZE,
    GRANT,
    HANG_GUARD,
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
from tsd_agent.cli import main
from tsd_agent.client import Client

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
