"""gunicorn settings; every value can be overridden on the command line or by GUNICORN_CMD_ARGS."""

import functools
import multiprocessing
import os
import socket
import sys
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from gunicorn.arbiter import Arbiter
from gunicorn.glogging import Logger

if TYPE_CHECKING:
    from flask import Config

bind = os.environ.get("TSD_BIND", "127.0.0.1:5000")
# Rate limits kept in memory:// are counted by each process on its own: with N workers one
# address gets N times the code guesses docs/security.md's brute-force bound allows. So
# without a shared storage in TSD_RATELIMIT_STORAGE_URI (Redis) the default is one worker;
# with one, a couple per CPU. Processes share the rest through the database (kill switch,
# breakers). TSD_WORKERS or --workers decides anyway; on_starting below then refuses to
# start outside development (TSD_ENV=development only warns).


def counts_per_process(storage_uri: str) -> bool:
    """A rate-limit storage each process keeps on its own: ``memory://``, however spelt
    (``limits`` also takes ``memory:`` and ``MEMORY://``)."""
    return urlsplit(storage_uri).scheme.lower() == "memory"


def default_workers(environ: dict[str, str]) -> int:
    if "TSD_WORKERS" in environ:
        return int(environ["TSD_WORKERS"])
    if counts_per_process(environ.get("TSD_RATELIMIT_STORAGE_URI", "memory://")):
        return 1
    return min(4, multiprocessing.cpu_count() * 2)


workers = default_workers(dict(os.environ))
worker_class = "sync"
timeout = 30
graceful_timeout = 10
# gunicorn 25+ opens a control socket at one fixed path per user (~/.gunicorn/gunicorn.ctl),
# which several instances on one machine would share; tsd-server does not use it.
control_socket_disable = True
accesslog = "-"
# The access log records the path only: query strings (which might carry a pasted code)
# are not logged, and the one path that holds a secret -- the QR link's one-time token,
# /link/qr/<token> -- is logged without it (RedactingLogger below).
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(L)ss'
# Gunicorn on its own believes X-Forwarded-Proto/-Ssl/-Protocol (and SCRIPT_NAME) from
# 127.0.0.1 and ::1, so any client of a same-host nginx that passes those headers through
# could make a plain-http request look like https. tsd-server decides which proxies to
# believe in one place (TSD_TRUSTED_PROXIES and TSD_PROXY_FIX_*), so gunicorn believes none.
forwarded_allow_ips = ""
secure_scheme_headers: dict[str, str] = {}


# Paths whose last part is a one-time secret; whoever reads the log must not be able to use it.
SECRET_PATH_PREFIXES = ("/link/qr/",)


def logged_path(path: str) -> str:
    """``path`` as a log may show it: a one-time token replaced."""
    for prefix in SECRET_PATH_PREFIXES:
        if path.startswith(prefix):
            return prefix + "[redacted]"
    return path


class RedactingLogger(Logger):
    """Access-log lines keep the path but never the one-time token inside it."""

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        atoms["U"] = logged_path(atoms.get("U") or "")
        return atoms


logger_class = RedactingLogger


def pre_request(worker, req) -> None:
    """gunicorn's own hook logs every request's raw path at debug level (--log-level debug,
    the level an operator turns on in trouble): a QR link's token would go to the error log."""
    worker.log.debug("%s %s", req.method, logged_path(req.path))


@functools.cache
def _app_config() -> "Config":
    """The settings the app will load (instance/config.py included), read once for the
    master's checks below. ConfigurationError is not cached: each worker refuses it too."""
    from tsd_server import configured_app

    return configured_app().config


def _refuse(server, problem: str) -> None:
    server.log.error("Refusing to start: %s", problem)
    sys.exit(Arbiter.WORKER_BOOT_ERROR)  # 3, as when a worker cannot boot: not restarted


def on_starting(server) -> None:
    """Several workers that would count rate limits each on their own: refused outside
    development, said loudly once in development. Checked in the master, before any worker
    starts, with the settings the app will load (instance/config.py included). A refusal
    by each worker instead raced in gunicorn's own shutdown: two workers failing to boot at
    once could end it with exit status 1 instead of 3."""
    from tsd_server.config import ConfigurationError

    workers = server.cfg.workers
    if workers <= 1:
        return
    try:
        config = _app_config()
    except ConfigurationError:
        return  # each worker refuses these itself, naming the setting
    if not counts_per_process(str(config.get("RATELIMIT_STORAGE_URI", ""))):
        return
    problem = (f"{workers} workers keep rate limits in memory://, each on its own: one address "
               f"gets {workers} times the code guesses the limits are set for "
               "(docs/security.md). Set TSD_RATELIMIT_STORAGE_URI to a Redis "
               "(docs/production.md), or run one worker (TSD_WORKERS=1).")
    if config.get("ENV") != "development":
        _refuse(server, problem)
    server.log.error("%s", problem)


def when_ready(server) -> None:
    """Refused: a unix socket any user may open (whoever connects can choose a client
    address), or one the app does not trust as its proxy's (no ``unix:`` in
    TSD_TRUSTED_PROXIES: no request through it would have a client address, so all clients
    would share one rate-limit budget, which one of them could use up for everybody).
    Checked once the listeners exist (a socket systemd hands over included), with the
    settings the app will load."""
    from tsd_server.client_address import ProxySettings
    from tsd_server.config import ConfigurationError

    paths = [listener.sock.getsockname() for listener in server.LISTENERS
             if listener.sock.family == socket.AF_UNIX]
    if not paths:
        return
    open_to_all = [path for path in paths if os.stat(path).st_mode & 0o007]
    if open_to_all:
        # gunicorn binds unix:PATH itself with umask 0: a socket everyone may open, and
        # whoever opens it can choose a client address with X-Forwarded-For.
        _refuse(server, f"every user of this machine may connect to {', '.join(open_to_all)}, "
                "and through it choose any client address (X-Forwarded-For). Let systemd make "
                "the socket (deploy/tsd-server.socket: root, group www-data, mode 0660), or "
                "give gunicorn --umask 0117 and nginx's group.")
    try:
        settings = ProxySettings.from_config(_app_config())
    except ConfigurationError:
        return  # each worker refuses these itself, naming the setting
    if not settings.trusts_unix_socket:
        _refuse(server, "gunicorn listens on a unix socket, but TSD_TRUSTED_PROXIES does not "
                "list unix:, so no request through it has a client address (one rate-limit "
                "budget for every client, ip_match refused for all). Add unix: to "
                "TSD_TRUSTED_PROXIES, with TSD_PROXY_FIX_X_FOR=1 behind nginx "
                "(docs/production.md, \"Why a unix socket\").")
