"""tsd-agent against a server whose answers are too big or too slow: a 64 MiB answer is
refused unread, a trickled or stalled one is given up at its deadline (the call's own
limit or the command's --timeout), leaving no thread or connection behind, and no poll
starts without time left for its answer. Every such failure is one line, never a crash,
an endless wait, a memory blow-up or a saved token it should not have saved.

The server is tests/support/hostile_server.py's, scripted byte for byte; the agent runs
for real (``main()`` in-process, or its loops with the test's clock).
"""

from __future__ import annotations

import json
import socket
import threading
import time

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
    WAIT,
    Clock,
    Handler,
    Script,
    agent_with,
    forward_proxy,
    raw_answer,
    reply,
    run_agent,
    saved_token,
)
from tsd_agent import client as agent_client
from tsd_agent import commands, pacing
from tsd_agent import messages as m
from tsd_agent.client import Client

hostile = hostile_server.hostile


# --- answers too big or too slow ---------------------------------------------------------

BIG = 64 * 1024 * 1024


def big_answer(chunked: bool) -> Script:
    """A valid linking answer padded with JSON whitespace to 64 MiB, counting what got out."""

    def script(handler: Handler) -> None:
        body = json.dumps(LINKED).encode()
        length = {"Transfer-Encoding": "chunked"} if chunked else {
            "Content-Length": str(len(body) + BIG)}
        raw = raw_answer(200, b"", {**length})
        if chunked:
            raw = raw.replace(b"Content-Length: 0\r\n", b"")
        sent = 0
        try:
            handler.wfile.write(raw)
            piece = b" " * 65536
            for data in [body] + [piece] * (BIG // len(piece)):
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
                sent += len(data)
            if chunked:
                handler.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass
        finally:
            handler.server.sent.append(sent)
            handler.server.answered.set()

    return script


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_answer_bigger_than_any_real_one_is_refused_unread(hostile, tmp_path, chunked):
    hostile.scripts[REDEEM] = big_answer(chunked)
    code, out, err = run_agent(hostile, tmp_path / "s.json", "pair", "BCDF-GHJK")
    assert code == m.EXIT_FAILURE, err
    assert "larger than" in err and err.count("\n") == 1 and "Linked" not in out
    assert saved_token(tmp_path / "s.json") is None
    # The agent hung up instead of taking the 64 MiB in.
    assert hostile.answered.wait(WAIT)
    assert hostile.sent[0] < BIG


def trickle(where: str) -> Script:
    """A valid linking answer, one byte at a time, in its headers or in its body."""
    body = json.dumps(LINKED) + " " * 100
    head = raw_answer(200, body).split(b"\r\n\r\n")[0]

    def script(handler: Handler) -> None:
        if where == "headers":
            first, slow = head + b"\r\n", b"X-Padding: " + b"x" * 100 + b"\r\n\r\n" + body.encode()
        else:
            first, slow = head + b"\r\n\r\n", body.encode()
        handler.wfile.write(first)
        for byte in slow:
            if handler.server.stopping.wait(0.02):
                return
            handler.wfile.write(bytes([byte]))

    return script


@pytest.mark.parametrize("where", ["headers", "body"])
def test_an_answer_trickled_byte_by_byte_is_given_up_at_the_deadline(hostile, tmp_path,
                                                                      monkeypatch, where):
    # Each byte comes well within the read timeout; only a deadline for the whole answer
    # stops this. The answer takes over 3 s to arrive: without one, the agent links.
    monkeypatch.setattr(agent_client, "ANSWER_TIMEOUT", 0.5, raising=False)
    hostile.scripts[REDEEM] = trickle(where)
    code, out, err = run_agent(hostile, tmp_path / "s.json", "pair", "BCDF-GHJK")
    assert code == m.EXIT_UNREACHABLE, (out, err)
    assert "did not answer in time" in err and err.count("\n") == 1
    assert saved_token(tmp_path / "s.json") is None


def stall(handler: Handler) -> None:
    """The start of an answer, then nothing, until the agent hangs up (at most WAIT)."""
    handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
    handler.connection.settimeout(WAIT)
    try:
        hung_up = handler.rfile.read(1) == b""  # the agent sends nothing more: waits for EOF
    except OSError:
        hung_up = False
    if hung_up:
        handler.server.hung_up.set()


def trickle_forever(handler: Handler) -> None:
    """A header line that never ends, a byte every 50 ms, until the agent hangs up."""
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    try:
        while not handler.server.stopping.wait(0.05):
            handler.wfile.write(b"a")
    except OSError:
        handler.server.hung_up.set()


STALLS = {"stalls": stall, "trickles": trickle_forever}
CALL_THREAD = "tsd-agent-request"  # tsd_agent.client names the thread each call runs in


def assert_nothing_left_behind(hung_up: threading.Event,
                               before: set[threading.Thread]) -> None:
    """No thread of the agent's is still at a call, and the server saw the agent hang up
    (``hung_up``, set by the server's side of the connection)."""
    calls = [t for t in threading.enumerate() if t not in before and t.name == CALL_THREAD]
    for thread in calls:
        thread.join(2)  # a call cut off ends at once; this only allows for a busy machine
    assert not [t for t in calls if t.is_alive()], "a call is still running"
    assert hung_up.wait(WAIT), "the agent kept the connection open"


@pytest.mark.parametrize("server_does", list(STALLS))
def test_a_call_given_up_leaves_no_thread_or_connection_behind(hostile, tmp_path,
                                                               monkeypatch, server_does):
    monkeypatch.setattr(agent_client, "ANSWER_TIMEOUT", 0.5, raising=False)
    hostile.scripts[REDEEM] = STALLS[server_does]
    before = set(threading.enumerate())
    code, out, err = run_agent(hostile, tmp_path / "s.json", "pair", "BCDF-GHJK")
    assert code == m.EXIT_UNREACHABLE, (out, err)
    assert "did not answer in time" in err and err.count("\n") == 1
    assert_nothing_left_behind(hostile.hung_up, before)


@pytest.mark.parametrize("server_does", list(STALLS))
@pytest.mark.parametrize("command, path", [("discover", ANNOUNCE), ("link", AUTHORIZE),
                                           ("link", TOKEN_PATH)],
                         ids=["discover", "link-authorize", "link-poll"])
def test_timeout_ends_a_call_in_flight(hostile, tmp_path, command, path, server_does):
    hostile.scripts[AUTHORIZE] = reply(200, GRANT)  # link-poll: polls after 1 s, then stalls
    hostile.scripts[path] = STALLS[server_does]
    state = tmp_path / "s.json"
    before = set(threading.enumerate())
    # 3 s: time for the poll after 1 s with more than pacing.CALL_FLOOR left.
    run = AgentRun.in_process(["--server", hostile.url, "--state", str(state), command,
                               "--timeout", "3", *(["--no-qr"] if command == "link" else [])])
    code = run.finish(HANG_GUARD)
    assert code == m.EXIT_EXPIRED, run.err.text
    if path == AUTHORIZE:  # asking for a code links nothing
        assert "not approved before --timeout; nothing was linked" in run.err.text
    else:  # an announce or a poll cut off on its way could have carried the token
        assert "--timeout ran out before the server answered" in run.err.text
        assert "may be linked without its token" in run.err.text
    assert run.err.text.count("\n") == 1 and "Linked" not in run.out.text
    assert saved_token(state) is None
    assert_nothing_left_behind(hostile.hung_up, before)


def test_a_trickled_tls_handshake_is_hung_up_too():
    """An https server that sends its handshake a byte at a time: the call ends at its time,
    and its thread and connection with it (the socket is kept from before the handshake)."""
    listener = socket.create_server(("127.0.0.1", 0))
    hung_up = threading.Event()

    def trickle_handshake() -> None:
        conn, _ = listener.accept()
        conn.recv(4096)  # the ClientHello
        conn.sendall(b"\x16\x03\x03\x40\x00")  # a 16 KiB handshake record, then ...
        try:
            while not hung_up.is_set():
                time.sleep(0.2)
                conn.sendall(b"\x00")  # ... one byte at a time
        except OSError:
            hung_up.set()
        finally:
            conn.close()

    threading.Thread(target=trickle_handshake, daemon=True).start()
    before = set(threading.enumerate())
    try:
        with pytest.raises(agent_client.OutOfTime):
            Client(f"https://127.0.0.1:{listener.getsockname()[1]}").announce(
                "printer-0001", "secret", "Printer", None, within=1.0)
        assert_nothing_left_behind(hung_up, before)
    finally:
        hung_up.set()
        listener.close()


def test_a_proxy_that_never_answers_connect_is_hung_up_too(monkeypatch):
    """HTTPS through a proxy (HTTPS_PROXY) whose CONNECT never gets an answer: the call ends
    at its time, and its thread and connection to the proxy with it."""
    proxy = socket.create_server(("127.0.0.1", 0))
    hung_up = threading.Event()

    def never_answer() -> None:
        conn, _ = proxy.accept()
        try:
            while conn.recv(4096):  # the CONNECT request, then nothing comes back
                pass
            hung_up.set()  # the agent closed its end
        finally:
            conn.close()

    threading.Thread(target=never_answer, daemon=True).start()
    forward_proxy(monkeypatch, f"http://127.0.0.1:{proxy.getsockname()[1]}")
    before = set(threading.enumerate())
    try:
        with pytest.raises(agent_client.OutOfTime) as caught:
            Client("https://127.0.0.1:9").announce("printer-0001", "secret", "Printer", None,
                                                   within=1.0)
        assert caught.value.sent is False  # only the CONNECT went out, not the request
        assert_nothing_left_behind(hung_up, before)
    finally:
        proxy.close()


def test_no_poll_starts_without_time_left_for_its_answer(hostile, tmp_path):
    """A poll sent with 0.2 s left, answered in 0.4 s, would be cut off with the one-time
    token in it: the printer linked, the agent without its token. None is sent."""
    polls = []

    def slow_token(handler: Handler) -> None:
        polls.append(1)
        time.sleep(0.4)
        reply(200, LINKED)(handler)

    hostile.scripts[AUTHORIZE] = reply(200, GRANT)  # interval 1 s
    hostile.scripts[TOKEN_PATH] = slow_token
    code, out, err = run_agent(hostile, tmp_path / "s.json", "link", "--no-qr",
                               "--timeout", "1.2")
    assert code == m.EXIT_EXPIRED, err
    assert "not approved before --timeout; nothing was linked" in err
    assert polls == []


def test_no_poll_starts_in_the_last_second_before_the_timeout_past_the_expiry(hostile,
                                                                              tmp_path):
    """--timeout just after the code's expiry: the last polls are still held to CALL_FLOOR."""
    clock = Clock()
    timeout = 10.3
    polled_with_left: list[float] = []

    def pending(handler: Handler) -> None:
        polled_with_left.append(timeout - clock.now)
        reply(400, {"error": "authorization_pending"})(handler)

    hostile.scripts[AUTHORIZE] = reply(200, {**GRANT, "expires_in": 10})
    hostile.scripts[TOKEN_PATH] = pending
    agent = agent_with(hostile, tmp_path, clock)
    assert commands.link(agent, timeout=timeout) == m.EXIT_EXPIRED, agent.err.getvalue()
    assert polled_with_left and min(polled_with_left) >= pacing.CALL_FLOOR, polled_with_left
