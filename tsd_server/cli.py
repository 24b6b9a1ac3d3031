"""Command-line entry points (``flask --app tsd_server ...``), registered on the app."""

from __future__ import annotations

from datetime import datetime

import click
from flask import Flask
from flask.cli import AppGroup, with_appcontext

from tsd_server import audit_retention, devices
from tsd_server.auth import accounts
from tsd_server.auth.accounts import AccountError, create_user, find_user, set_password
from tsd_server.command_record import echo_ran
from tsd_server.discovery import cli as discovery_cli
from tsd_server.printable_text import CLI_TEXT, for_terminal
from tsd_server.proxy_check import proxy_check_command


@click.command("create-user")
@click.argument("email", type=CLI_TEXT)
@click.option("--admin", is_flag=True, help="Give the account the admin role.")
@click.option("--name", "display_name", default=None, type=CLI_TEXT,
              help="Display name shown to printers.")
@click.password_option(prompt="Password", type=CLI_TEXT,
                       help="Prompted twice when not given (or from stdin).")
@with_appcontext
def create_user_command(email: str, admin: bool, display_name: str | None, password: str) -> None:
    """Create an account (the only way to make the first admin)."""
    try:
        user = create_user(email, password, display_name=display_name, is_admin=admin)
    except AccountError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"Created {'admin ' if user.is_admin else ''}account {user.email} (id {user.id}).")


@click.command("set-password")
@click.argument("email", type=CLI_TEXT)
@click.password_option(prompt="New password", type=CLI_TEXT,
                       help="Prompted twice when not given (or from stdin).")
@with_appcontext
def set_password_command(email: str, password: str) -> None:
    """Give the account EMAIL a new password (its own leaked or was lost): every session of
    it ends and the links they prepared are withdrawn. The same rules as sign-up."""
    user = find_user(email)
    if user is None:
        raise click.ClickException(f"no account has the email {for_terminal(email)!r}")
    try:
        set_password(user, password, actor=discovery_cli.CLI_ACTOR)
    except AccountError as error:
        raise click.ClickException(str(error)) from None
    echo_ran()
    click.echo(f"New password set for {for_terminal(user.email)} (id {user.id}); every session "
               "of the account ended, and links it had prepared were withdrawn.")


@click.command("lock-account")
@click.argument("email", type=CLI_TEXT)
@click.option("--reason", required=True, type=CLI_TEXT, help="Why (kept in the audit log).")
@with_appcontext
def lock_account_command(email: str, reason: str) -> None:
    """Lock the account EMAIL: every session of it ends, the links they prepared are
    withdrawn, and nobody can log in to it until unlock-account. Its printers keep working
    (flask incident revoke-account cuts them off)."""
    user, reason = discovery_cli.account_and_reason(email, reason)
    try:
        accounts.lock(user, actor=discovery_cli.CLI_ACTOR, reason=reason)
    except AccountError as error:
        raise click.ClickException(str(error)) from None
    echo_ran()
    click.echo(f"Locked {for_terminal(user.email)} (id {user.id}); every session of the account "
               "ended. Undo: flask --app tsd_server unlock-account EMAIL --reason ...")


@click.command("unlock-account")
@click.argument("email", type=CLI_TEXT)
@click.option("--reason", required=True, type=CLI_TEXT, help="Why (kept in the audit log).")
@with_appcontext
def unlock_account_command(email: str, reason: str) -> None:
    """Let the account EMAIL log in again (after lock-account)."""
    user, reason = discovery_cli.account_and_reason(email, reason)
    try:
        accounts.unlock(user, actor=discovery_cli.CLI_ACTOR, reason=reason)
    except AccountError as error:
        raise click.ClickException(str(error)) from None
    echo_ran()
    click.echo(f"Unlocked {for_terminal(user.email)} (id {user.id}): it can log in again.")


@click.command("delete-account")
@click.argument("email", type=CLI_TEXT)
@click.option("--reason", required=True, type=CLI_TEXT, help="Why (kept in the audit log).")
@click.option("--yes", is_flag=True, help="Really delete (without it: a dry run).")
@with_appcontext
def delete_account_command(email: str, reason: str, yes: bool) -> None:
    """Delete the account EMAIL and its printers (their tokens stop working); the links it
    set in motion are withdrawn. The audit log keeps its rows, without the email."""
    user, reason = discovery_cli.account_and_reason(email, reason)
    if not yes:
        printers = devices.devices_of(user)
        click.echo(f"Printers of {for_terminal(user.email)} (id {user.id}): {len(printers)}")
        for device in printers:
            click.echo(f"  {for_terminal(device.name)}  ({for_terminal(device.device_uid)})")
        click.secho(f"DRY RUN: would delete the account and {len(printers)} printer(s). "
                    "Nothing changed; add --yes to delete.", fg="yellow", err=True)
        return
    shown, user_id = for_terminal(user.email), user.id
    deleted = accounts.delete_account(user, actor=discovery_cli.CLI_ACTOR, reason=reason)
    echo_ran()
    click.echo(f"Deleted account {shown} (id {user_id}) and {deleted} printer(s); their "
               "tokens no longer work.")


audit_cli = AppGroup("audit", help="Keep the audit log in bounds.")


def _day(_ctx, param, value: str) -> datetime:
    try:
        return audit_retention.parse_date(value)
    except ValueError as error:
        raise click.BadParameter(str(error), param=param) from None


@audit_cli.command("prune")
@click.option("--before", required=True, callback=_day,
              help="Delete rows from before this day (YYYY-MM-DD, midnight UTC), at least "
                   f"{audit_retention.MIN_AGE.days} days ago.")
@click.option("--dry-run", is_flag=True, help="Print what would be deleted; delete nothing.")
def audit_prune_command(before: datetime, dry_run: bool) -> None:
    """Delete the everyday audit rows from before a day (log-ins, wrong codes, printers
    announcing and asking, rate limits). The links incident response reads, approvals and
    the security record are kept whatever their age."""
    day = before.date().isoformat()
    try:
        if dry_run:
            counts = audit_retention.would_prune(before)
        else:
            result = audit_retention.prune(before, actor=discovery_cli.CLI_ACTOR)
            counts = result.deleted
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    if dry_run:
        click.echo(f"Rows from before {day} (UTC) a prune would delete: {sum(counts.values())}")
    else:
        echo_ran(before=day)
        click.echo(f"Deleted {result.total} row(s) from before {day} (UTC), in "
                   f"{result.batches} batch(es).")
    for event, count in counts.items():
        click.echo(f"  {for_terminal(event):<32} {count}")
    click.echo("Only the everyday record is pruned; every other event (links, approvals, "
               "the security record) is kept whatever its age.")
    if dry_run:
        click.secho("DRY RUN: nothing deleted; run without --dry-run to delete them.",
                    fg="yellow", err=True)


def register_commands(app: Flask) -> None:
    app.cli.add_command(create_user_command)
    app.cli.add_command(set_password_command)
    app.cli.add_command(lock_account_command)
    app.cli.add_command(unlock_account_command)
    app.cli.add_command(delete_account_command)
    discovery_cli.register_commands(app)
    app.cli.add_command(proxy_check_command)
    app.cli.add_command(audit_cli)
