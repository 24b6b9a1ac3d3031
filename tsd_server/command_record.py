"""The line an operator's command prints once it has acted: when, and how to run it again.

A restore from a backup undoes what these commands did (revokes, new passwords, locks,
deletions, prunes) together with their audit rows, so the database cannot say what to redo.
docs/production.md ("Backups and restoring") asks operators to keep this line outside the
database (``| tee -a``): ``2026-06-01T12:00:00Z ran: flask --app tsd_server incident revoke
--strategy ip_match --since ... --until ... --yes``, shell-quoted, so it can be pasted back.
A password is never part of it (options asked without echo are left out, and asked again).

The admin pages' revokes, locks and switches write the same line, for the command that
does the same, into the server's log (``admin_action_recorded``): outside the database too.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence
from datetime import UTC, datetime

import click
from flask import current_app

from tsd_server.clock import utcnow
from tsd_server.printable_text import control_characters_marked

PROGRAM = ("flask", "--app", "tsd_server")

log = logging.getLogger(__name__)


def utc_text(moment: datetime) -> str:
    """``2026-06-01T12:00:00Z`` (microseconds kept when there are any)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def command_line(ctx: click.Context, **as_typed: str) -> list[str]:
    """The command of ``ctx`` with its parameters as given; ``as_typed`` gives the text of
    parameters whose value a callback turned into something else (a time, a day).

    The command's names come from the chain of contexts without the program's own (which
    is "python -m flask" when run so); the arguments come after ``--``, so one that starts
    with a dash (an email such as ``-x@example.org``) is not read as an option."""
    names, outer = [], ctx
    while outer.parent is not None:  # the root context is the program itself
        names.insert(0, str(outer.info_name))
        outer = outer.parent
    options, arguments = [], []
    for param in ctx.command.params:  # in the order the command declares them
        value = as_typed.get(param.name or "", ctx.params.get(param.name or ""))
        if param.nargs != 1 or getattr(param, "multiple", False):
            raise TypeError(f"{param.name}: a parameter of several values is not recorded")
        if isinstance(param, click.Argument):
            arguments.append(str(value))
        elif not isinstance(param, click.Option) or param.hide_input or value is None \
                or value is False:
            continue
        elif param.is_flag:
            options.append(param.opts[0])
        else:
            options.extend([param.opts[0], str(value)])
    return [*PROGRAM, *names, *options, *(["--", *arguments] if arguments else [])]


def ran_line(ctx: click.Context, **as_typed: str) -> str:
    """``<UTC time> ran: <command line>``, the record line of ``ctx``'s command."""
    return (f"{utc_text(utcnow().replace(microsecond=0))} ran: "
            f"{shlex.join(command_line(ctx, **as_typed))}")


def echo_ran(**as_typed: str) -> None:
    """Print the record line of the running command (see the module's docstring)."""
    click.echo(ran_line(click.get_current_context(), **as_typed))


def admin_action_recorded(names: Sequence[str], **params: str | bool) -> str:
    """Log, and return, the record line of the command that does what an admin page just
    did (``names``: the command's, ``params``: its parameters as typed). Logged as a
    warning, so a log level that keeps warnings keeps it."""
    ctx = click.Context(current_app.cli, info_name=PROGRAM[0])
    command: click.Command = current_app.cli
    for name in names:
        found = command.get_command(ctx, name) if isinstance(command, click.Group) else None
        if found is None:
            raise LookupError(f"no command {' '.join(names)}")
        command = found
        ctx = click.Context(command, info_name=name, parent=ctx)
    ctx.params = dict(params)
    line = ran_line(ctx)
    # An email stored before control characters were refused could split the log line.
    log.warning("an admin page acted; the command that does the same: %s",
                control_characters_marked(line))
    return line
