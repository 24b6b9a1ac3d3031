"""A hostile server for tsd-agent's tests: a tiny HTTP server on 127.0.0.1 that writes
whatever answer the test scripts, byte for byte, and what the tests around it share.

``hostile`` (fixture): the server; ``hostile.scripts[path] = reply(...)`` (or any
``Script``) sets its answer for a path. ``run_agent`` runs ``main()`` in-process against
it; ``Clock`` and ``agent_with`` run the agent's loops on the test's clock instead.
``SilentProxy`` / ``silent_proxy`` (fixture): a forward proxy that never answers.
Import the fixtures into a test module by assignment (``hostile = hostile_server.hostile``).
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tsd_agent import commands
from tsd_agent.cli import main
from tsd_agent.client import Client
from tsd_agent.state import AgentState, load, save

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


# A hang guard, not a speed claim: a command whose call in flight is not bounded by its
# --timeout waits out the per-call limit (client.ANSWER_TIMEOUT, 30 s) and trips this.
HANG_GUARD = 15.0


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
        self.body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
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


def forward_proxy(monkeypatch, proxy_url: str) -> None:
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy_url)
    monkeypatch.setenv("HTTPS_PROXY", proxy_url)


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
