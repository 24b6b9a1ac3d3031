"""Real servers for end-to-end tests: gunicorn running the app, nginx and Caddy in front.

Each launcher is a context manager that starts the process in its own session with its
own config, pid and log files in a temporary directory, on a free loopback port, waits
until it answers, and always stops it (SIGTERM to its process group, then SIGKILL) on exit
-- use it from a fixture so teardown runs whatever the test did. When a server fails to
start, the error carries the end of its log.

Only loopback addresses are used. Clients that need to look like different households bind
their source address (127.0.0.2, 127.0.0.3, ...): see ``http_session``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter

ROOT = Path(__file__).resolve().parents[2]
NGINX = "/usr/sbin/nginx"
CADDY = shutil.which("caddy") or "/usr/bin/caddy"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
SETPRIV = shutil.which("setpriv")  # util-linux
START_TIMEOUT = 20.0


class ServerFailed(RuntimeError):
    """A server did not come up; the message ends with its log."""


@dataclass
class RunningServer:
    name: str
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def answers(self, probe: str) -> bool:
        """Whether the server answers yet: an HTTP GET of the path ``probe``."""
        try:
            http_session().get(self.base_url + probe, timeout=1)
        except (requests.ConnectionError, requests.Timeout):  # a busy machine boots slowly
            return False
        return True


class AcceptingServer(RunningServer):
    """Up once its port accepts a connection: for a server that answers no probe request
    (the shipped nginx site hangs up, 444, on a host name it does not serve)."""

    def answers(self, probe: str) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def nginx_available() -> bool:
    return os.access(NGINX, os.X_OK)


def caddy_available() -> bool:
    return os.access(CADDY, os.X_OK)


def _stop(process: subprocess.Popen) -> None:
    """Stop the process group we started (by its id), politely first (a test may have
    stopped it with SIGSTOP, and a stopped process cannot act on SIGTERM)."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGCONT)
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=10)


def _wait_until_up(server: RunningServer, probe: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerFailed(f"{server.name} exited with {server.process.returncode}:\n"
                               + server.log_tail())
        if server.answers(probe):
            return
        time.sleep(0.1)
    raise ServerFailed(f"{server.name} did not answer within {START_TIMEOUT} s:\n"
                       + server.log_tail())


def dies_with_the_tests(command: list[str]) -> list[str]:
    """The command, sent SIGTERM when the test process ends, even killed: a server in its
    own session would otherwise outlive a test run stopped before its teardown."""
    return [SETPRIV, "--pdeathsig", "TERM", "--", *command] if SETPRIV else command


@contextmanager
def run_process(name: str, command: list[str], *, port: int, log_path: Path, probe: str,
                env: Mapping[str, str] | None = None, cwd: Path | None = None,
                kind: Callable[..., RunningServer] = RunningServer,
                pass_fds: tuple[int, ...] = ()) -> Iterator[Any]:
    """Start ``command``, wait until ``kind(name, process, port, log_path)`` answers
    ``probe``, and stop it on exit; ``pass_fds`` stay open in it."""
    log = open(log_path, "ab")  # noqa: SIM115 - closed in finally
    process = subprocess.Popen(dies_with_the_tests(command), stdout=log,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env=dict(env or os.environ), cwd=cwd, start_new_session=True,
                               pass_fds=pass_fds)
    server = kind(name, process, port, log_path)
    try:
        _wait_until_up(server, probe)
        yield server
    finally:
        _stop(process)
        log.close()


def setting_env(settings: Mapping[str, Any]) -> dict[str, str]:
    """TSD_* environment variables; values are JSON where they parse, as the app reads them."""
    env = {}
    for key, value in settings.items():
        env[f"TSD_{key}"] = value if isinstance(value, str) else json.dumps(value)
    return env


@contextmanager
def gunicorn(directory: Path, *, database_url: str, settings: Mapping[str, Any] | None = None,
             workers: int | None = 2) -> Iterator[RunningServer]:
    """The app under gunicorn (the project's gunicorn.conf.py) on a free loopback port;
    ``workers=None`` leaves the count to gunicorn.conf.py."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("TSD_")}
    env.update(setting_env({
        "ENV": "production",
        "SECRET_KEY": secrets.token_hex(32),
        "DATABASE_URL": database_url,
        "INSTANCE_PATH": str(directory / "instance"),
        "RATELIMIT_STORAGE_URI": "memory://",
        "LOG_LEVEL": "WARNING",
        **(settings or {}),
    }))
    command = [sys.executable, "-m", "gunicorn", "--config", str(ROOT / "gunicorn.conf.py"),
               "--bind", f"127.0.0.1:{port}", "wsgi:app"]
    if workers is not None:
        command[-1:-1] = ["--workers", str(workers)]
    with run_process("gunicorn", command, port=port, log_path=directory / "gunicorn.log",
                     probe="/healthz", env=env, cwd=ROOT) as server:
        yield server



def redis_server_available() -> bool:
    return os.access(REDIS_SERVER, os.X_OK)


class RedisServer(RunningServer):
    @property
    def base_url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def answers(self, probe: str) -> bool:
        """Whether Redis answers yet (``probe`` is unused: a PING)."""
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.ConnectionError:
            return False

    def stall(self) -> None:
        """Stop the process: connections are still accepted by the kernel, nothing answers."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)


@contextmanager
def redis_server(directory: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own (Debian's redis-server) on a free loopback port, keeping
    nothing on disk: a test may stop it (``stall()``) without
    touching the machine's Redis. Its ``base_url`` is the ``redis://`` URI."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
               "--appendonly", "no", "--dir", str(directory)]
    with run_process("redis-server", command, port=port, log_path=directory / "redis.log",
                     probe="PING", kind=RedisServer) as server:
        yield server


NGINX_MAIN = """\
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
{user}
events {{ worker_connections {connections}; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{http_body}
}}
"""

NGINX_SERVER = """\
server {{
    listen 127.0.0.1:{port};
    server_name localhost;
{locations}
}}
"""


@contextmanager
def nginx(directory: Path, locations: str, *, http_extra: str = "",
          port: int | None = None) -> Iterator[RunningServer]:
    """Debian's nginx with ``locations`` (one or more location blocks) in its one server.

    ``http_extra`` goes into the http block before the server (e.g. an ``upstream``);
    ``port``, when the test must know it before nginx starts (a free one otherwise).
    """
    port = port or free_port()
    server = NGINX_SERVER.format(port=port, locations=_indent(locations, 4))
    with nginx_serving(directory, f"{http_extra}\n{server}", port=port) as running:
        yield running


@contextmanager
def nginx_serving(directory: Path, http_body: str, *, port: int, probe: str = "/healthz",
                  kind: type[RunningServer] = RunningServer,
                  connections: int = 64) -> Iterator[Any]:
    """Debian's nginx, run from ``directory`` (pid, logs, temp files there), with
    ``http_body`` in its http block and room for ``connections`` at once; up once ``port``
    answers ``probe``."""
    directory.mkdir(parents=True, exist_ok=True)
    # As root, nginx would hand its workers to "nobody", who cannot enter pytest's tmp dirs.
    user = "user root root;" if os.geteuid() == 0 else ""
    conf = directory / "nginx.conf"
    conf.write_text(NGINX_MAIN.format(dir=directory, user=user, connections=connections,
                                      http_body=_indent(http_body, 4)))
    check = subprocess.run([NGINX, "-t", "-p", str(directory), "-e", str(directory / "error.log"),
                            "-c", str(conf)], capture_output=True, text=True)
    if check.returncode != 0:
        raise ServerFailed(f"nginx -t refused the config:\n{check.stderr}\n{conf.read_text()}")
    command = [NGINX, "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(conf)]
    with run_process("nginx", command, port=port, log_path=directory / "error.log", probe=probe,
                     kind=kind) as server:
        yield server


@contextmanager
def caddy(directory: Path, caddyfile: str) -> Iterator[RunningServer]:
    """Caddy with ``caddyfile``, where ``{port}`` is replaced by a free loopback port."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    path = directory / "Caddyfile"
    path.write_text(caddyfile.replace("{port}", str(port)))
    env = {**os.environ, "HOME": str(directory), "XDG_DATA_HOME": str(directory / "data"),
           "XDG_CONFIG_HOME": str(directory / "config")}
    command = [CADDY, "run", "--config", str(path), "--adapter", "caddyfile"]
    with run_process("caddy", command, port=port, log_path=directory / "caddy.log",
                     probe="/healthz", env=env) as server:
        yield server


@contextmanager
def make_run(directory: Path, env: Mapping[str, str]) -> Iterator[RunningServer]:
    """``make run`` as the README has a new user type it, on a free loopback port.

    Its install step is skipped (``-o install``): the virtualenv it would create is the one
    running the tests. ``env`` is added to a clean environment (no TSD_* of the caller) and
    the instance folder (SQLite file, development key) goes to ``directory``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    full_env = {key: value for key, value in os.environ.items() if not key.startswith("TSD_")}
    full_env["TSD_INSTANCE_PATH"] = str(directory / "instance")
    full_env.update(env)
    command = ["make", "--no-print-directory", "-o", "install", "run", f"PORT={port}",
               f"VENV={sys.prefix}"]
    with run_process("make run", command, port=port, log_path=directory / "make-run.log",
                     probe="/healthz", env=full_env, cwd=ROOT) as server:
        yield server


def _indent(text: str, spaces: int) -> str:
    return "\n".join((" " * spaces + line) if line.strip() else line
                     for line in text.splitlines())


class SourceAddressAdapter(HTTPAdapter):
    """Connect from a chosen local address, so one machine can be many households."""

    def __init__(self, source_ip: str, **kwargs: Any) -> None:
        self.source_address = (source_ip, 0)
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = self.source_address
        super().init_poolmanager(*args, **kwargs)


def http_session(source_ip: str | None = None) -> requests.Session:
    """A requests session that ignores proxy settings and binds ``source_ip`` if given."""
    session = requests.Session()
    session.trust_env = False  # never route loopback tests through an HTTP proxy
    if source_ip is not None:
        adapter = SourceAddressAdapter(source_ip)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    return session
