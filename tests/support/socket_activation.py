"""deploy/tsd-server.socket as systemd applies it, without systemd: the socket made with the
unit's owner and mode, then handed to gunicorn as file descriptor 3 with ``LISTEN_FDS`` and
``LISTEN_PID`` set, as systemd's socket activation does (sd_listen_fds(3)). gunicorn then
listens on that socket alone, whatever ``bind`` says; so the shipped unit, gunicorn.conf.py
and the app are tested together, only the socket's folder is a test's own."""

from __future__ import annotations

import configparser
import grp
import http.client
import os
import pwd
import socket
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import servers
from tests.support.skips import skip_loudly

SOCKET_UNIT = servers.ROOT / "deploy" / "tsd-server.socket"

# Runs as the process gunicorn becomes: fd 3 and LISTEN_PID must name that very process.
HAND_OVER = ("import os, sys; os.dup2(int(sys.argv[1]), 3); "
             "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid())); "
             "os.execv(sys.argv[2], sys.argv[2:])")


def socket_unit() -> dict[str, str]:
    """The [Socket] section of the shipped unit."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # systemd's keys are case-sensitive
    parser.read_string(SOCKET_UNIT.read_text())
    return dict(parser["Socket"])


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (``host`` is only what goes into the Host header)."""

    def __init__(self, path: Path, host: str = "localhost", timeout: float = 10) -> None:
        super().__init__(host, timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(str(self.socket_path))


def get(path: Path, target: str, headers: Mapping[str, str] | None = None
        ) -> tuple[int, bytes]:
    """GET ``target`` straight through the socket at ``path``: status and body."""
    connection = UnixHTTPConnection(path)
    try:
        connection.request("GET", target, headers=dict(headers or {}))
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


@dataclass
class SocketServer(servers.RunningServer):
    """gunicorn on a unix socket; up once it answers the probe there."""

    socket_path: Path = Path()

    def answers(self, probe: str) -> bool:
        try:
            get(self.socket_path, probe)
        except OSError:
            return False
        return True


@contextmanager
def socket_folder() -> Iterator[Path]:
    """A folder anyone may enter, as /run is, so only the socket's own mode keeps others
    out. Skips (loudly) unless root: only root can give a socket to www-data."""
    if os.geteuid() != 0:
        skip_loudly("Not root: the shipped socket belongs to www-data, which only root can "
                    "give it. Tests of the shipped unix socket are SKIPPED.")
    with tempfile.TemporaryDirectory(prefix="tsd-socket-") as folder:
        os.chmod(folder, 0o755)
        yield Path(folder)


def shipped_socket(path: Path) -> socket.socket:
    """A listening socket at ``path`` with the owner, group and mode of the shipped unit."""
    unit = socket_unit()
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(str(path))
    os.chown(path, pwd.getpwnam(unit["SocketUser"]).pw_uid,
             grp.getgrnam(unit["SocketGroup"]).gr_gid)
    os.chmod(path, int(unit["SocketMode"], 8))
    listening.listen(128)
    return listening


@contextmanager
def activated_gunicorn(directory: Path, socket_path: Path, *, database_url: str,
                       settings: Mapping[str, Any]) -> Iterator[SocketServer]:
    """The app under gunicorn (gunicorn.conf.py, one worker) on the shipped socket at
    ``socket_path``, handed over as systemd does. Needs root (the socket's owner)."""
    directory.mkdir(parents=True, exist_ok=True)
    listening = shipped_socket(socket_path)
    env = {key: value for key, value in os.environ.items() if not key.startswith("TSD_")}
    env.update(servers.setting_env({
        "ENV": "production", "SECRET_KEY": os.urandom(32).hex(),
        "DATABASE_URL": database_url, "INSTANCE_PATH": str(directory / "instance"),
        "RATELIMIT_STORAGE_URI": "memory://", "LOG_LEVEL": "WARNING", **settings}))
    gunicorn = [sys.executable, "-m", "gunicorn", "--workers", "1",
                "--config", str(servers.ROOT / "gunicorn.conf.py"), "wsgi:app"]
    command = [sys.executable, "-c", HAND_OVER, str(listening.fileno()), *gunicorn]
    try:
        with servers.run_process(
                "gunicorn", command, port=0, log_path=directory / "gunicorn.log",
                probe="/healthz", env=env, cwd=servers.ROOT, pass_fds=(listening.fileno(),),
                kind=lambda *started: SocketServer(*started, socket_path=socket_path)
        ) as server:
            yield server
    finally:
        listening.close()
