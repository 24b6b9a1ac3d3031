"""Requests through gunicorn's unix socket: their peer is ``unix:``, believed only when
``TSD_TRUSTED_PROXIES`` says ``unix:``, and that trust never reaches a TCP peer.

gunicorn gives such a request an empty ``REMOTE_ADDR``; its socket object
(``environ["gunicorn.socket"]``) is what tells it apart, so these requests carry a real
AF_UNIX socket there. tests/e2e/test_unix_socket.py runs the same under gunicorn and nginx.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tsd_server import create_app
from tsd_server.client_address import resolve, warning_household
from tsd_server.config import ConfigurationError
from tsd_server.trusted_proxies import parse_trusted

BEHIND_NGINX = {"PROXY_FIX_X_FOR": 1, "PROXY_FIX_X_PROTO": 1, "PROXY_FIX_X_HOST": 1}
HOME = "81.2.69.160"
FORGED = "8.8.8.8"
PRINTER = {"device_id": "printer-0001", "name": "Printer"}


@pytest.fixture
def unix_connection() -> Iterator[socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX)
    with ours, theirs:
        yield ours


def client_address(database: str, trusted: str, environ: dict, headers: dict) -> dict:
    app = create_app({"TESTING": True, "SECRET_KEY": "x" * 32, "DATABASE_URL": database,
                      "TRUSTED_PROXIES": trusted, **BEHIND_NGINX})
    reply = app.test_client().get("/api/v1/client-address", environ_base=environ,
                                  headers=headers)
    assert reply.status_code == 200, reply.get_data(as_text=True)
    return reply.get_json()


@pytest.mark.parametrize("value, networks, unix", [
    ("unix:", (), True),
    ("UNIX:", (), True),
    ("unix:, 10.0.0.5", ("10.0.0.5/32",), True),
    ("10.0.0.5", ("10.0.0.5/32",), False),
])
def test_unix_is_an_entry_of_its_own(value, networks, unix):
    parsed, trusts_unix = parse_trusted(value)
    assert tuple(str(network) for network in parsed) == networks and trusts_unix is unix


@pytest.mark.parametrize("value", ["unix", "unix:/run/tsd-server.sock", "unix:*"])
def test_a_socket_path_or_a_missing_colon_is_refused_with_the_spelling(database, value):
    """Any other spelling would be read as nothing trusted, or as a network that fails to
    parse with a message that does not help: start-up names the one spelling."""
    with pytest.raises(ConfigurationError, match=r"write unix: \(nothing after the colon\)"):
        create_app({"TESTING": True, "SECRET_KEY": "x" * 32, "DATABASE_URL": database,
                    "TRUSTED_PROXIES": value, **BEHIND_NGINX})


def test_through_a_trusted_socket_the_proxys_hop_is_the_client(database, unix_connection):
    seen = client_address(database, "unix:",
                          {"REMOTE_ADDR": "", "gunicorn.socket": unix_connection},
                          {"X-Forwarded-For": f"{FORGED}, {HOME}"})
    assert (seen["client_ip"], seen["peer_ip"]) == (HOME, "unix:"), seen
    assert seen["ip_match"] == {"eligible": True, "reason": None}, seen


def test_a_socket_that_is_not_trusted_is_not_believed(database, unix_connection):
    """nginx moved to the socket, the setting still names loopback: fail closed."""
    seen = client_address(database, "127.0.0.1/32",
                          {"REMOTE_ADDR": "", "gunicorn.socket": unix_connection},
                          {"X-Forwarded-For": HOME})
    assert seen["client_ip"] is None and seen["household"] is None, seen
    assert seen["ip_match"] == {"eligible": False, "reason": "untrusted_forwarded_header"}


def test_trusting_the_socket_does_not_trust_a_loopback_port(database):
    """The attack the socket closes: a local process connecting to a TCP port of gunicorn
    (an old bind, a second listener) with a forged header. Not believed with ``unix:``."""
    tcp = socket.socket(socket.AF_INET)
    with tcp:
        seen = client_address(database, "unix:",
                              {"REMOTE_ADDR": "127.0.0.1", "gunicorn.socket": tcp},
                              {"X-Forwarded-For": HOME})
    assert seen["client_ip"] == "127.0.0.1" and seen["household"] is None, seen
    assert seen["ip_match"] == {"eligible": False, "reason": "untrusted_forwarded_header"}


def test_a_trusted_socket_passes_the_host_for_links(database, unix_connection):
    """Links shown to printers come from the trusted proxy's X-Forwarded-Host (without
    TSD_BASE_URL); from an untrusted peer the same header makes them refused instead."""
    app = create_app({"TESTING": True, "SECRET_KEY": "x" * 32, "DATABASE_URL": database,
                      "TRUSTED_PROXIES": "unix:", **BEHIND_NGINX})
    headers = {"X-Forwarded-For": HOME, "X-Forwarded-Host": "print.example.org",
               "X-Forwarded-Proto": "https"}
    through_socket = app.test_client().post(
        "/api/v1/device/authorize", json=PRINTER, headers=headers,
        environ_base={"REMOTE_ADDR": "", "gunicorn.socket": unix_connection})
    assert through_socket.status_code == 200, through_socket.get_data(as_text=True)
    assert through_socket.get_json()["verification_uri"] == "https://print.example.org/link"
    over_tcp = app.test_client().post(
        "/api/v1/device/authorize", json=PRINTER, headers=headers,
        environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert over_tcp.status_code == 503 and over_tcp.get_json()["error"] == "base_url_unknown"


@pytest.mark.parametrize("remote_addr", ["unix:", "UNIX:", " unix: "])
def test_a_remote_addr_that_says_unix_is_no_socket(database, remote_addr):
    """Only the server's socket object makes a peer ``unix:``; a server that copied
    REMOTE_ADDR from a front end could hand over the text itself."""
    tcp = socket.socket(socket.AF_INET)
    with tcp:
        for environ in ({"REMOTE_ADDR": remote_addr, "gunicorn.socket": tcp},
                        {"REMOTE_ADDR": remote_addr}):
            seen = client_address(database, "unix:", environ, {"X-Forwarded-For": HOME})
            assert seen["client_ip"] is None and seen["household"] is None, seen
            assert seen["ip_match"]["reason"] == "untrusted_forwarded_header", seen


def test_the_approval_warning_reads_the_hop_a_trusted_socket_wrote(database):
    """The approval page's "another network" warning compares the hop nginx wrote through
    a trusted socket; when nginx's X-Real-IP contradicts it, that address too (either may
    be the client's own choice, made to hide the warning)."""
    app = create_app({"TESTING": True, "SECRET_KEY": "x" * 32, "DATABASE_URL": database,
                      "TRUSTED_PROXIES": "unix:", **BEHIND_NGINX})
    environ = {"HTTP_X_FORWARDED_FOR": HOME}
    with app.app_context():
        settings = app.extensions["tsd.proxy_settings"]
        assert warning_household(resolve("unix:", environ, settings)) == f"{HOME}/32"
        record = resolve("unix:", {**environ, "HTTP_X_REAL_IP": "81.2.69.200"}, settings)
        assert record.ineligibility_reason == "contradictory_forwarded_headers"
        assert set(warning_household(record).split(" or ")) == {f"{HOME}/32", "81.2.69.200/32"}


def test_unix_without_a_proxy_count_is_refused_at_start_up(database):
    """``unix:`` with TSD_PROXY_FIX_X_FOR=0 would ignore nginx's X-Forwarded-For: no client
    address for anyone, one rate-limit budget for all."""
    with pytest.raises(ConfigurationError, match="TSD_PROXY_FIX_X_FOR is 0"):
        create_app({"TESTING": True, "SECRET_KEY": "x" * 32, "DATABASE_URL": database,
                    "TRUSTED_PROXIES": "unix:"})
