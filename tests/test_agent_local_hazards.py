"""tsd-agent against hazards on its own machine rather than from the server: a ~/.netrc
whose credentials requests would send in place of the printer's token, a FIFO (or other
non-regular file) where the state file should be, and a state file with a token but no
server that issued it. None of them may leak a secret or hang the agent.

The server is tests/support/hostile_server.py's, scripted byte for byte; the agent runs
for real (``main()`` in-process).
"""

from __future__ import annotations

import io
import json
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import requests.sessions

from tests.support import hostile_server
from tests.support.hostile_server import (
    ANNOUNCE,
    AUTHORIZE,
    GRANT,
    LINKED,
    ME,
    REDEEM,
    TOKEN,
    TOKEN_PATH,
    WAIT,
    Handler,
    Script,
    linked_state,
    raw_answer,
    reply,
    run_agent,
)
from tsd_agent import messages as m
from tsd_agent.cli import main
from tsd_agent.state import AgentState, StateError, load, save

hostile = hostile_server.hostile

ME_ANSWER = {"device": {"id": "tsd-12345678", "name": "P", "linked_via": "pairing_code",
                        "linked_at": "2026-01-01T00:00:00Z"},
             "owner": {"display_name": "Alice"}}


def recorded(seen: list[tuple[str, list[str]]], script: Script) -> Script:
    """``script``, noting first which Authorization headers the request carried."""

    def recording(handler: Handler) -> None:
        seen.append((handler.path, handler.headers.get_all("Authorization") or []))
        script(handler)

    return recording


# --- ~/.netrc ------------------------------------------------------------------------------

@pytest.fixture
def netrc_home(tmp_path, monkeypatch) -> Path:
    """A HOME whose ~/.netrc has a `default` entry, which matches every host (0600, or
    Python's netrc refuses it and nothing would leak anyway)."""
    home = tmp_path / "home"
    home.mkdir()
    fd = os.open(home / ".netrc", os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("default login alice password hunter2\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("NETRC", raising=False)
    return home


def test_netrc_credentials_are_never_sent_only_the_bearer_token(hostile, tmp_path, netrc_home):
    seen: list[tuple[str, list[str]]] = []
    hostile.scripts[REDEEM] = recorded(seen, reply(200, LINKED))
    hostile.scripts[ANNOUNCE] = recorded(seen, reply(200, {"status": "linked", **LINKED}))
    hostile.scripts[AUTHORIZE] = recorded(seen, reply(200, GRANT))
    hostile.scripts[TOKEN_PATH] = recorded(seen, reply(200, LINKED))
    hostile.scripts[ME] = recorded(seen, reply(200, ME_ANSWER))

    paired = tmp_path / "paired.json"
    assert run_agent(hostile, paired, "pair", "BCDF-GHJK")[0] == m.EXIT_OK
    code, out, err = run_agent(hostile, paired, "whoami")
    # Before the fix, Basic alice:hunter2 replaced the Bearer header: "revoked" (exit 9).
    assert code == m.EXIT_OK and "owner Alice" in out, err
    assert run_agent(hostile, tmp_path / "discovered.json", "discover")[0] == m.EXIT_OK
    assert run_agent(hostile, tmp_path / "linked.json", "link", "--no-qr")[0] == m.EXIT_OK

    assert {path for path, _ in seen} == {REDEEM, ME, ANNOUNCE, AUTHORIZE, TOKEN_PATH}
    for path, authorization in seen:
        assert authorization == ([f"Bearer {TOKEN}"] if path == ME else []), path


def test_netrc_is_not_even_read_for_a_redirect(hostile, tmp_path, netrc_home, monkeypatch):
    """requests also looks up a redirect's host in ~/.netrc while preparing the request
    that would follow it, even when redirects are not followed."""
    lookups: list[str] = []

    def get_netrc_auth(url: str, raise_errors: bool = False) -> tuple[str, str]:
        lookups.append(url)
        return ("alice", "hunter2")

    monkeypatch.setattr(requests.sessions, "get_netrc_auth", get_netrc_auth)
    seen: list[tuple[str, list[str]]] = []
    hostile.scripts[ME] = recorded(seen, reply(302, ME_ANSWER,
                                               {"Location": f"{hostile.url}/elsewhere"}))
    code, _, err = run_agent(hostile, linked_state(hostile, tmp_path / "s.json"), "whoami")
    assert code == m.EXIT_FAILURE and "HTTP 302" in err, err
    assert seen == [(ME, [f"Bearer {TOKEN}"])]
    assert lookups == []


def test_a_redirect_with_a_huge_body_is_not_read(hostile, tmp_path):
    """requests' preparing of the redirect it will not follow used to read the redirect's
    whole body, past the 64 KiB every answer is held to."""
    big = 64 * 1024 * 1024

    def script(handler: Handler) -> None:
        sent = 0
        try:
            handler.wfile.write(raw_answer(302, b"", {"Content-Length": str(big),
                                                      "Location": f"{hostile.url}/x"}))
            piece = b" " * 65536
            for _ in range(big // len(piece)):
                handler.wfile.write(piece)
                sent += len(piece)
        except OSError:
            pass
        finally:
            handler.server.sent.append(sent)
            handler.server.answered.set()

    hostile.scripts[REDEEM] = script
    code, out, err = run_agent(hostile, tmp_path / "s.json", "pair", "BCDF-GHJK")
    assert code == m.EXIT_FAILURE and "HTTP 302" in err and "Linked" not in out, err
    assert hostile.answered.wait(WAIT)
    assert hostile.sent[0] < big


# --- a FIFO or other non-regular file as the state file -----------------------------------

STUCK = 5.0  # a hang guard: refusing the file takes milliseconds


def without_hanging(call: Callable[[], object], fifo: Path | None = None) -> object:
    """``call()``'s result (or the exception it raised), failing the test instead of
    hanging if it does not return within STUCK seconds. A call stuck opening ``fifo`` is
    released by opening and closing its writing end, so no thread is left behind."""
    result: list[object] = []

    def run() -> None:
        try:
            result.append(call())
        except Exception as error:  # noqa: BLE001 - handed to the test
            result.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(STUCK)
    if thread.is_alive():
        if fifo is not None:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            thread.join(WAIT)
        pytest.fail(f"still waiting after {STUCK} seconds (blocked opening the FIFO)")
    return result[0]


@pytest.fixture(params=["mine", "another user's"])
def fifo(request, tmp_path) -> Path:
    path = tmp_path / "state.json"
    os.mkfifo(path, 0o600)
    if request.param != "mine":
        if os.getuid() != 0:
            pytest.skip("needs root to give a file to another user")
        os.chown(path, 65534, 65534)
    return path


def test_a_fifo_as_state_file_is_refused_without_waiting(fifo):
    error = without_hanging(lambda: load(fifo, warn=pytest.fail), fifo)
    assert isinstance(error, StateError) and "not a regular file" in str(error), error


def test_the_agent_with_a_fifo_as_state_file_exits_10(fifo):
    err = io.StringIO()
    code = without_hanging(lambda: main(["--server", "http://127.0.0.1:9", "--state",
                                         str(fifo), "whoami"], stdout=io.StringIO(),
                                        stderr=err), fifo)
    assert code == m.EXIT_STATE, err.getvalue()
    assert "not a regular file" in err.getvalue() and err.getvalue().count("\n") == 1


def test_a_socket_or_folder_as_state_file_is_refused_as_not_regular(tmp_path):
    folder = tmp_path / "folder.json"
    folder.mkdir()
    listening = tmp_path / "sock"  # a short name: socket paths are limited to ~108 bytes
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(listening))
        for path in (folder, listening):
            with pytest.raises(StateError, match="not a regular file"):
                load(path, warn=pytest.fail)


# --- a token without the server that issued it --------------------------------------------

@pytest.mark.parametrize("server", [None, ""])
def test_a_token_without_its_server_is_sent_nowhere(hostile, tmp_path, server):
    seen: list[tuple[str, list[str]]] = []
    hostile.scripts[ME] = recorded(seen, reply(200, ME_ANSWER))
    state = AgentState.new()
    state.access_token, state.server = TOKEN, server
    save(tmp_path / "s.json", state)
    code, out, err = run_agent(hostile, tmp_path / "s.json", "whoami")
    assert code == m.EXIT_NOT_LINKED and "Linked" not in out, err
    assert "does not say which server issued it" in err and err.count("\n") == 1
    assert seen == []


def test_pair_reads_the_code_from_standard_input(hostile, tmp_path, monkeypatch):
    """`pair -`: the code stays off the command line, which other local users can read in
    /proc/<pid>/cmdline while pair waits."""
    sent = []

    def redeem(handler) -> None:
        sent.append(json.loads(handler.body))
        reply(201, LINKED)(handler)

    hostile.scripts[REDEEM] = redeem
    monkeypatch.setattr("sys.stdin", io.StringIO("wdjb-mjht\n"))
    code, _, err = run_agent(hostile, tmp_path / "s.json", "pair", "-")
    assert code == m.EXIT_OK, err
    assert sent[0]["code"] == "wdjb-mjht"
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = run_agent(hostile, tmp_path / "t.json", "pair", "-")
    assert code == m.EXIT_USAGE and "no code given" in err, err
    assert len(sent) == 1
