"""tsd-agent against a hostile or broken server: every bad answer is one line, never a crash,
an endless wait, a memory blow-up or a saved token it should not have saved.

The server here is a tiny HTTP server on 127.0.0.1 that writes whatever answer the test
scripts, byte for byte: it stands in for the hostile server, which is the component under
test. The agent runs for real (``main()`` in-process, or its loops with the test's clock).
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.agent_runs import AgentRun
from tsd_agent import client as agent_client
from tsd_agent import commands
from tsd_agent import messages as m
from tsd_agent.cli import main
from tsd_agent.client import Client
from tsd_agent.state import AgentState, load, load_or_create, save

WAIT = 30.0  # a guard against a hung test, never a measured time
TOKEN = "tsd_at_" + "A" * 43
LINKED = {"access_token": TOKEN, "device": {"linked_via": "pairing_code"}}
REDEEM = "/api/v1/pairing/redeem"
ANNOUNCE = "/api/v1/discovery/announce"
AUTHORIZE = "/api/v1/device/authorize"
TOKEN_PATH = "/api/v1/device/token"
ME = "/api/v1/device/me"
GRANT = {"device_code": "dc", "user_code": "BCDF-GHJK", "verification_uri": "http://x/link",
         "interval": 1, "expires_in": 600}


Script = Callable[["Handler"], None]


class HostileServer(ThreadingHTTPServer):
    """Answers each path with the raw bytes its script writes (404 for any other path)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.scripts: dict[str, Script] = {}
        self.stopping = threading.Event()
        self.sent: list[int] = []  # bytes each big answer got out before the agent hung up
        self.answered = threading.Event()
        self.hung_up = threading.Event()  # the agent closed a connection it had given up


class Handler(BaseHTTPRequestHandler):
    server: HostileServer

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.close_connection = True
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        script = self.server.scripts.get(self.path, reply(404, {"error": "not_found"}))
        try:
            script(self)
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_POST = do_GET

    def log_message(self, *args) -> None:
        pass


def raw_answer(status: int, body: str | bytes, headers: dict[str, str] | None = None) -> bytes:
    body = body.encode() if isinstance(body, str) else body
    head = {"Content-Type": "application/json", "Content-Length": str(len(body)),
            "Connection": "close", **(headers or {})}
    lines = [f"HTTP/1.1 {status} Hostile"] + [f"{k}: {v}" for k, v in head.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def reply(status: int, body: object, headers: dict[str, str] | None = None) -> Script:
    """An answer written at once; a str body is sent as is (for NaN, Infinity, huge numbers)."""
    data = body if isinstance(body, str) else json.dumps(body)
    raw = raw_answer(status, data, headers)
    return lambda handler: handler.wfile.write(raw)


@pytest.fixture
def hostile():
    server = HostileServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.stopping.set()
    server.shutdown()
    server.server_close()


def run_agent(server: HostileServer, state: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--server", server.url, "--state", str(state), *args], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def linked_state(server: HostileServer, path: Path) -> Path:
    state = AgentState.new()
    state.access_token, state.server = TOKEN, server.url
    save(path, state)
    return path


def saved_token(path: Path) -> str | None:
    return load(path, warn=pytest.fail).access_token


# --- 1. answers too big or too slow ------------------------------------------------------

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


# A hang guard, not a speed claim: a command whose call in flight is not bounded by its
# --timeout waits out the per-call limit (client.ANSWER_TIMEOUT, 30 s) and trips this.
HANG_GUARD = 15.0


@pytest.mark.parametrize("server_does", list(STALLS))
@pytest.mark.parametrize("command, path", [("discover", ANNOUNCE), ("link", AUTHORIZE),
                                           ("link", TOKEN_PATH)],
                         ids=["discover", "link-authorize", "link-poll"])
def test_timeout_ends_a_call_in_flight(hostile, tmp_path, command, path, server_does):
    hostile.scripts[AUTHORIZE] = reply(200, GRANT)  # link-poll: polls after 1 s, then stalls
    hostile.scripts[path] = STALLS[server_does]
    state = tmp_path / "s.json"
    before = set(threading.enumerate())
    # 3 s: time for the poll after 1 s with more than commands.CALL_FLOOR left.
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
    assert polled_with_left and min(polled_with_left) >= commands.CALL_FLOOR, polled_with_left


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


def forward_proxy(monkeypatch, proxy_url: str) -> None:
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy_url)
    monkeypatch.setenv("HTTPS_PROXY", proxy_url)


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


class SilentProxy:
    """A forward proxy that reads whatever comes and never answers: for https a CONNECT
    (no byte of the request itself is written), for http the request itself."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.read: list[bytes] = []  # what each connection brought, once it closed
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def settled(self) -> list[bytes]:
        """``read``, once a connection came and every one accepted has been closed and
        read to its end: the agent's connect and hang-up reach the proxy's threads a moment
        after the agent has returned."""
        deadline = time.monotonic() + WAIT
        while ((not self.accepted or len(self.read) < self.accepted)
               and time.monotonic() < deadline):
            time.sleep(0.01)
        return list(self.read)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.accepted += 1
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        data = b""
        with conn:
            conn.settimeout(WAIT)
            try:
                while chunk := conn.recv(4096):
                    data += chunk
            except OSError:
                pass
        self.read.append(data)


@pytest.fixture
def silent_proxy(monkeypatch):
    proxy = SilentProxy()
    forward_proxy(monkeypatch, proxy.url)
    yield proxy
    proxy.listener.close()


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


# --- 2. server values that crashed the agent ---------------------------------------------

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
    assert commands.interval_from(value) == commands.DEFAULT_POLL_INTERVAL


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


# --- 3. rate limits: bounded waits, --timeout honoured -----------------------------------

class Stop(BaseException):
    """Ends an agent loop from the test's clock: like Ctrl-C, it is no failure the agent
    reports, so it ends the command even from a wait inside a call's error handling."""


class Clock:
    """The agent's clock: sleeping moves it forward at once; the 10th sleep ends the loop."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if len(self.sleeps) == 10:
            raise Stop


def agent_with(server: HostileServer, tmp_path: Path, clock: Clock) -> commands.Agent:
    return commands.Agent(client=Client(server.url), state=AgentState.new(),
                          state_path=tmp_path / "s.json", name="Hostile test", model=None,
                          out=io.StringIO(), err=io.StringIO(), sleep=clock.sleep,
                          monotonic=clock.monotonic, qr=False)


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
    assert all(1 <= wait <= commands.MAX_POLL_INTERVAL for wait in clock.sleeps), clock.sleeps
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


# --- 4. concurrent first runs ------------------------------------------------------------

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


# --- 5. only 2xx is success --------------------------------------------------------------

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
