"""The shipped production shape's way from nginx to gunicorn: a unix socket that only
nginx's user may open (deploy/tsd-server.socket), trusted as ``TSD_TRUSTED_PROXIES=unix:``
(deploy/tsd-server.env.example), and the shipped site's ``location /`` in front.

On a loopback port, whoever could connect to gunicorn could send a forged X-Forwarded-For
and be believed: a local user, a container on the host network, another service's forged
request. Through the socket, only www-data and root can connect at all."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_ip_match_e2e import deploy_site_location
from tests.support import servers, socket_activation
from tests.support.ip_match_world import LAN_HOUSEHOLDS
from tests.support.skips import skip_loudly

DEPLOY = servers.ROOT / "deploy"
SYSTEM_PYTHON = "/usr/bin/python3"
PROXY_SETTINGS = ("TRUSTED_PROXIES", "PROXY_FIX_X_FOR", "PROXY_FIX_X_PROTO", "PROXY_FIX_X_HOST")
# Tries to let everyone connect, as the user it runs as.
CHMOD_TO_ALL = """
import os, sys
try:
    os.chmod(sys.argv[1], 0o666)
except OSError as error:
    print(type(error).__name__)
else:
    print("changed")
"""
# Connects to the socket as another user and prints what happened (the answer's status
# line, or the error's name).
CONNECT_AS = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as error:
    print(type(error).__name__)
else:
    s.sendall(b"GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n")
    print(s.recv(100).split(b"\\r\\n")[0].decode())
"""


def shipped_proxy_settings() -> dict[str, str]:
    """The proxy settings of deploy/tsd-server.env.example, as shipped."""
    text = (DEPLOY / "tsd-server.env.example").read_text()
    found = dict(re.findall(r"^TSD_([A-Z_0-9]+)=(.*)$", text, re.M))
    return {key: found[key] for key in PROXY_SETTINGS}


@pytest.fixture
def socket_folder() -> Iterator[Path]:
    with socket_activation.socket_folder() as folder:
        yield folder


@pytest.fixture
def shipped_socket_gunicorn(tmp_path, database, socket_folder):
    assert shipped_proxy_settings()["TRUSTED_PROXIES"] == "unix:"
    with socket_activation.activated_gunicorn(
            tmp_path / "gunicorn", socket_folder / "tsd-server.sock", database_url=database,
            settings={**shipped_proxy_settings(), **LAN_HOUSEHOLDS}) as backend:
        yield backend


def test_the_shipped_units_hand_gunicorn_the_socket_and_no_port(shipped_socket_gunicorn):
    """gunicorn.conf.py's bind (127.0.0.1:5000 by default) is not used: the only listener
    is the socket systemd handed over."""
    log = shipped_socket_gunicorn.log_path.read_text()
    listening = re.findall(r"Listening at: (\S+)", log)
    assert listening == [f"unix:{shipped_socket_gunicorn.socket_path}"], log


def as_user(user: str, group: str, script: str, *args: str) -> str:
    """``script`` run by Debian's python as ``user`` in ``group`` alone (the test's own
    python lies under /root, which other users cannot enter); what it printed."""
    return subprocess.run([SYSTEM_PYTHON, "-c", script, *args], user=user, group=group,
                          extra_groups=[], capture_output=True, text=True, check=True,
                          timeout=20).stdout.strip()


def test_only_nginxs_user_can_open_the_shipped_socket(shipped_socket_gunicorn):
    """Who may connect decides who may choose a client address: www-data (nginx's workers)
    gets an answer, any other user is refused by the socket's mode, and www-data cannot
    open it to others: root owns it."""
    unit = socket_activation.socket_unit()
    assert (unit["SocketUser"], unit["SocketGroup"], unit["SocketMode"]) == \
        ("root", "www-data", "0660")
    path = str(shipped_socket_gunicorn.socket_path)
    answer = as_user("www-data", "www-data", CONNECT_AS, path)
    assert answer.startswith("HTTP/1.0 200"), answer
    for user, group in (("nobody", "nogroup"), ("daemon", "daemon")):
        assert as_user(user, group, CONNECT_AS, path) == "PermissionError"
    assert as_user("www-data", "www-data", CHMOD_TO_ALL, path) == "PermissionError"
    assert as_user("nobody", "nogroup", CONNECT_AS, path) == "PermissionError"


def test_a_socket_the_settings_do_not_trust_stops_the_start(tmp_path, database,
                                                             socket_folder):
    """nginx moved to the socket but TSD_TRUSTED_PROXIES still names loopback: no request
    would have a client address, and every client would share one rate-limit budget.
    gunicorn refuses to start (exit status 3, which the unit does not retry)."""
    with pytest.raises(servers.ServerFailed) as refused:
        with socket_activation.activated_gunicorn(
                tmp_path / "gunicorn", socket_folder / "tsd-server.sock",
                database_url=database, settings={**shipped_proxy_settings(),
                                                 "TRUSTED_PROXIES": "127.0.0.1/32"}):
            pass
    assert "exited with 3" in str(refused.value), refused.value
    assert "does not list unix:" in str(refused.value), refused.value


def test_through_the_shipped_site_and_socket_the_client_is_who_connected(
        tmp_path, shipped_socket_gunicorn):
    """nginx's shipped ``location /`` in front of the socket: the client is the address
    that connected to nginx, whatever X-Forwarded-For it sent, and the peer is ``unix:``."""
    if not servers.nginx_available():
        skip_loudly(f"nginx is NOT installed at {servers.NGINX}")
    locations, _ = deploy_site_location(0)
    upstream = f"upstream tsd_server {{ server unix:{shipped_socket_gunicorn.socket_path}; }}"
    real = "127.0.0.2"
    with servers.nginx(tmp_path / "nginx", locations, http_extra=upstream) as entry:
        client = servers.http_session(real)
        for forged in ("127.0.0.3", "81.2.69.160", "unix:", None):
            headers = {"X-Forwarded-For": forged} if forged else {}
            reply = client.get(entry.base_url + "/api/v1/client-address", headers=headers,
                               timeout=10)
            assert reply.status_code == 200, reply.text
            seen = reply.json()
            assert (seen["client_ip"], seen["peer_ip"]) == (real, "unix:"), seen
            assert seen["ip_match"] == {"eligible": True, "reason": None}, seen
            assert seen["household"] == f"{real}/32", seen


def test_straight_through_the_socket_a_missing_header_is_refused(shipped_socket_gunicorn):
    """A request on the socket without the proxy's X-Forwarded-For (root, say, with curl)
    has no client address: ip_match refuses it, as a proxy that stopped passing addresses."""
    status, body = socket_activation.get(shipped_socket_gunicorn.socket_path,
                                         "/api/v1/client-address")
    assert status == 200, body
    assert b'"reason":"missing_forwarded_header"' in body.replace(b" ", b""), body


def test_the_documented_second_instance_has_a_socket_of_its_own_in_nginxs_upstream(tmp_path):
    """docs/production.md makes tsd-server-2.socket and .service with two sed commands:
    each instance on its own socket, each socket in the site's upstream, and the copies
    accepted by systemd."""
    doc = (servers.ROOT / "docs" / "production.md").read_text()
    commands = sorted(set(re.findall(r"^ *(sed .* > /etc/systemd/system/tsd-server-2\.\w+)$",
                                     doc, re.M)))
    assert len(commands) == 2, commands
    for command in commands:
        subprocess.run(command.replace("/etc/systemd/system/", f"{tmp_path}/"), shell=True,
                       check=True, cwd=servers.ROOT)
    sockets = {}
    for name, folder in (("tsd-server", DEPLOY), ("tsd-server-2", tmp_path)):
        unit = (folder / f"{name}.socket").read_text()
        sockets[name] = re.search(r"^ListenStream=(\S+)$", unit, re.M).group(1)
        service = (folder / f"{name}.service").read_text()
        assert re.search(rf"^Requires={name}\.socket$", service, re.M), name
        assert re.search(rf"^After={name}\.socket ", service, re.M), name
    assert len(set(sockets.values())) == 2, sockets
    site = (DEPLOY / "tsd-server.nginx.conf").read_text()
    upstream = re.search(r"upstream tsd_server \{(.*?)\}", site, re.S).group(1)
    assert set(re.findall(r"server unix:(\S+) ", upstream)) == set(sockets.values()), upstream
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        skip_loudly("systemd-analyze is NOT installed")
    service = (tmp_path / "tsd-server-2.service").read_text()
    (tmp_path / "tsd-server-2.service").write_text(service.replace(
        "/opt/tsd-server/.venv/bin/gunicorn", str(Path(sys.executable).with_name("gunicorn"))))
    check = subprocess.run([analyze, "verify", str(tmp_path / "tsd-server-2.socket"),
                            str(tmp_path / "tsd-server-2.service")], capture_output=True,
                           text=True)
    assert check.returncode == 0 and "tsd-server" not in check.stderr, check.stderr


def test_a_socket_gunicorn_binds_itself_for_everyone_stops_the_start(tmp_path, database):
    """``TSD_BIND=unix:PATH`` without the shipped socket unit: gunicorn makes the socket
    with umask 0, so every local user could connect and choose a client address. gunicorn
    refuses to start (exit status 3)."""
    with tempfile.TemporaryDirectory(prefix="tsd-") as folder:  # a socket path is short
        path = Path(folder) / "own.sock"
        env = {key: value for key, value in os.environ.items() if not key.startswith("TSD_")}
        env.update(servers.setting_env({
            "ENV": "production", "SECRET_KEY": "x" * 64, "DATABASE_URL": database,
            "INSTANCE_PATH": str(tmp_path / "instance"), "RATELIMIT_STORAGE_URI": "memory://",
            "BIND": f"unix:{path}", **shipped_proxy_settings()}))
        command = [sys.executable, "-m", "gunicorn", "--workers", "1",
                   "--config", str(servers.ROOT / "gunicorn.conf.py"), "wsgi:app"]
        with pytest.raises(servers.ServerFailed) as refused:
            with servers.run_process(
                    "gunicorn", command, port=0, log_path=tmp_path / "gunicorn.log",
                    probe="/healthz", env=env, cwd=servers.ROOT,
                    kind=lambda *started: socket_activation.SocketServer(
                        *started, socket_path=path)):
                pass
    assert "exited with 3" in str(refused.value), refused.value
    assert "every user of this machine may connect" in str(refused.value), refused.value
