"""``tsd-agent``: command line, global options, and the exit codes of docs/agent.md."""

from __future__ import annotations

import argparse
import contextlib
import io
import ipaddress
import os
import socket
import sys
from collections.abc import Sequence
from typing import TextIO
from urllib.parse import urlsplit

from tsd_agent import __version__, commands
from tsd_agent import messages as m
from tsd_agent.client import Client
from tsd_agent.state import StateError, load_or_create, resolve_path

DEFAULT_SERVER = "http://127.0.0.1:5000"
SERVER_ENV = "TSD_AGENT_SERVER"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tsd-agent",
        description="Link this (simulated) printer to an account on a tsd-server.",
        epilog=m.EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tsd-agent {__version__}")
    parser.add_argument("--server", default=None, metavar="URL",
                        help=f"server address (default: ${SERVER_ENV} or {DEFAULT_SERVER})")
    parser.add_argument("--state", default=None, metavar="PATH",
                        help="state file with this printer's id, secret and token "
                             "(default: ~/.config/tsd-agent/state.json)")
    parser.add_argument("--name", default=None, help="printer name shown on the website "
                        "(default: this machine's host name)")
    parser.add_argument("--model", default=None, help="printer model shown on the website")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    discover = sub.add_parser("discover", help="announce to people on the same internet "
                              "connection (ip_match) and show their confirmation code")
    discover.add_argument("--timeout", type=positive_seconds, default=None, metavar="SECONDS",
                          help="give up after this long (default: keep announcing)")
    pair = sub.add_parser("pair", help="redeem a pairing code the website showed")
    pair.add_argument("code", help="the code, e.g. WDJB-MJHT; - reads it from the first line "
                      "of standard input (other local users can read a command line)")
    pair.add_argument("--timeout", type=positive_seconds, default=None, metavar="SECONDS",
                      help="give up after this long (default: wait while the server cannot "
                           "check its rate limits)")
    link = sub.add_parser("link", help="show a code and a QR code to approve on the website "
                          "(device flow)")
    link.add_argument("--timeout", type=positive_seconds, default=None, metavar="SECONDS",
                      help="give up after this long (default: until the code expires; "
                           "while the server cannot check its rate limits, asking for the "
                           "code waits as long as that lasts)")
    link.add_argument("--no-qr", dest="qr", action="store_false",
                      help="do not draw the QR code in the terminal")
    sub.add_parser("whoami", help="show which account this printer is linked to")
    return parser


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def server_url(value: str | None) -> str:
    """The --server value checked: http(s), a host, no credentials, query or fragment."""
    url = (value or os.environ.get(SERVER_ENV) or DEFAULT_SERVER).strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--server must be an http:// or https:// address, not {url!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("--server must not contain credentials, a query or a fragment")
    return url


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_name() -> str:
    return (socket.gethostname() or "tsd-agent")[:80]


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    out, err = stdout or sys.stdout, stderr or sys.stderr
    for stream in (out, err):
        tolerate_unprintable(stream)
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        server = server_url(args.server)
    except ValueError as error:
        print(f"tsd-agent: error: {error}", file=err)
        return m.EXIT_USAGE
    if server.startswith("http://") and not is_loopback(server):
        print(f"tsd-agent: warning: {server} is plain http; codes and the printer's token "
              "travel unencrypted. Use https:// outside a trusted network.", file=err)

    path = resolve_path(args.state)

    def say_to_err(text: str) -> None:
        print(f"tsd-agent: {text}", file=err, flush=True)

    agent = None
    try:
        state = load_or_create(path, warn=lambda text: say_to_err(f"warning: {text}"))
        agent = commands.Agent(client=Client(server), state=state, state_path=path,
                               name=(args.name or default_name()).strip()[:80]
                               or default_name(),
                               model=args.model, out=out, err=err,
                               qr=getattr(args, "qr", True))
        if args.command == "whoami":
            return commands.whoami(agent)
        commands.check_writable(agent)
        if args.command == "discover":
            return commands.discover(agent, args.timeout)
        if args.command == "pair":
            code = (sys.stdin.readline() if args.code == "-" else args.code).strip()
            if not code:
                say_to_err("error: no code given (standard input was empty).")
                return m.EXIT_USAGE
            return commands.pair(agent, code, args.timeout)
        return commands.link(agent, args.timeout)
    except StateError as error:
        say_to_err(f"error: {error}")
        return m.EXIT_STATE
    except KeyboardInterrupt as interrupt:
        if agent is None:
            say_to_err("stopped; nothing was sent.")
            return m.EXIT_INTERRUPTED
        return commands.interrupted(agent, interrupt)
    except Exception as error:  # noqa: BLE001 - last resort: every failure is one line
        say_to_err(f"error: unexpected failure ({type(error).__name__}: {m.clean(error)}); "
                   "please report it.")
        return m.EXIT_FAILURE


def tolerate_unprintable(stream: TextIO) -> None:
    """Print what the console's encoding cannot show as escapes (``\\u0410``), not fail.

    Server text (an account's display name in any script) reaches a console that need not
    be UTF-8 (``PYTHONIOENCODING=ascii``, a Latin-1 locale); a strict stream would stop the
    command there, before the confirmation code is shown.
    """
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is not None:
        with contextlib.suppress(ValueError, TypeError, io.UnsupportedOperation):
            reconfigure(errors="backslashreplace")


def entry_point() -> None:
    """The console script: exit with main()'s code."""
    sys.exit(main())
