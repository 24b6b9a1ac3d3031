"""``flask discovery status|enable|disable`` and ``flask incident affected|revoke|revoke-account``.

Exit status of ``discovery enable``: 0 when every named strategy is on afterwards; 3 when
the runtime flag was recorded but something else still holds a strategy off (the
deployment setting TSD_DISCOVERY_DISABLED, the runtime "all" switch, an unreadable flag
store), so ``enable ... && echo on`` never claims a strategy is on when it is not.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime

import click
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy.exc import SQLAlchemyError

from tsd_server import devices, incident, incident_csv
from tsd_server.auth import accounts
from tsd_server.command_record import echo_ran, utc_text
from tsd_server.discovery import flag_store, kill_switch, registry
from tsd_server.models import User
from tsd_server.printable_text import CLI_TEXT, for_terminal

CLI_ACTOR = "cli"
# Exit status when the flag was written but the strategy is still off.
STILL_OFF = 3


discovery_cli = AppGroup("discovery", help="See and toggle the discovery kill switch.")
incident_cli = AppGroup("incident", help="Find and revoke devices linked during an incident.")


def _target(value: str) -> str:
    value = value.strip().lower()
    choices = [*registry.names(), kill_switch.ALL]
    if value not in choices:
        raise click.BadParameter(f"{value!r} is not one of: {', '.join(choices)}")
    return value


def _describe(name: str, current: kill_switch.StrategyState) -> str:
    if current.enabled:
        return f"{name:<14} ON"
    why = for_terminal(current.reason or "")
    by = f" by {current.changed_by}" if current.changed_by else ""
    when = f" at {current.changed_at.isoformat()}" if current.changed_at else ""
    return f"{name:<14} OFF  [{current.disabled_by}{by}{when}] {why}".rstrip()


@discovery_cli.command("status")
def status_command() -> None:
    """Each strategy's effective state and what holds it off."""
    setting = kill_switch.deployment_setting()
    click.echo("Deployment setting TSD_DISCOVERY_DISABLED: "
               + (", ".join(sorted(setting.disabled)) or "(none)"))
    if setting.problem:
        click.secho(f"  PROBLEM: {setting.problem}; every strategy is off.", fg="red", err=True)
    flags = flag_store.runtime_flags()
    if flags is None:
        click.secho("Runtime flags: UNREADABLE (every strategy counts as off).", fg="red")
    else:
        all_flag = flags.get(kill_switch.ALL)
        if all_flag is not None and not all_flag.enabled:
            click.echo(f"Runtime switch 'all': OFF by {all_flag.changed_by}: "
                       f"{for_terminal(all_flag.reason or '')}")
    for name, current in kill_switch.all_states(fresh=True).items():
        click.echo(_describe(name, current))


@discovery_cli.command("disable")
@click.argument("target")
@click.option("--reason", required=True, type=CLI_TEXT,
              help="Why (kept in the audit log). Required.")
def disable_command(target: str, reason: str) -> None:
    """Switch a strategy (or all) off at runtime, in every process within a second."""
    target = _target(target)
    _set(target, enabled=False, reason=reason)
    echo_ran(target=target)
    click.echo(f"Switched off: {target}.")
    for name, current in _states_of(target).items():
        click.echo(_describe(name, current))


@discovery_cli.command("enable")
@click.argument("target")
@click.option("--reason", default=None, type=CLI_TEXT, help="Why (kept in the audit log).")
def enable_command(target: str, reason: str | None) -> None:
    """Switch a strategy (or all) back on at runtime; deployment settings still win."""
    target = _target(target)
    _set(target, enabled=True, reason=reason)
    echo_ran(target=target)
    click.echo(f"Runtime flag set: {target} on.")
    still_off = {name: current for name, current in _states_of(target).items()
                 if not current.enabled}
    for name, current in _states_of(target).items():
        click.echo(_describe(name, current))
    if still_off:
        for name, current in still_off.items():
            click.secho(f"WARNING: {name} is STILL OFF: {_holding_it_off(current)}",
                        fg="red", bold=True, err=True)
        sys.exit(STILL_OFF)


def _holding_it_off(current: kill_switch.StrategyState) -> str:
    if current.disabled_by == kill_switch.DEPLOYMENT:
        return ("the deployment setting TSD_DISCOVERY_DISABLED holds it off, and nothing at "
                "runtime can override that. Change the setting (environment or "
                "instance/config.py) and restart to switch it on.")
    if current.disabled_by == kill_switch.RUNTIME:
        return (f"the runtime switch for 'all' is off ({for_terminal(current.reason or '')}); "
                "run 'flask discovery enable all' to clear it.")
    return for_terminal(current.reason or str(current.disabled_by))


def _states_of(target: str) -> dict[str, kill_switch.StrategyState]:
    states = kill_switch.all_states(fresh=True)
    return states if target == kill_switch.ALL else {target: states[target]}


def _set(target: str, *, enabled: bool, reason: str | None) -> None:
    try:
        kill_switch.set_flag(target, enabled=enabled, reason=reason, actor=CLI_ACTOR)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    except SQLAlchemyError as error:
        raise click.ClickException(
            f"could not write the flag (database error: {type(error).__name__}); if the "
            "database is down every strategy already counts as off. To hold one off "
            "regardless, set TSD_DISCOVERY_DISABLED and restart.") from None


# --- incident ---------------------------------------------------------------------------

def _time(_ctx, param, value: str) -> datetime:
    try:
        return incident.parse_time(value)
    except ValueError as error:
        raise click.BadParameter(str(error), param=param) from None


def _window_options(command):
    command = click.option("--until", required=True, callback=_time, help=(
        "End of the window, EXCLUSIVE (ISO 8601; UTC if no offset)."))(command)
    command = click.option("--since", required=True, callback=_time, help=(
        "Start of the window, inclusive (ISO 8601; UTC if no offset)."))(command)
    return click.option("--strategy", required=True,
                        help="The strategy that misbehaved, or 'all'.")(command)


def _window(strategy: str, since: datetime, until: datetime, *,
            ended: bool = False) -> incident.Window:
    """The window; with ``ended``, only one whose end has come (what a revoke needs)."""
    try:
        window = incident.Window(_target(strategy), since, until)
        if ended:
            incident.check_ended(window)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    return window


@incident_cli.command("affected")
@_window_options
@click.option("--format", "output", type=click.Choice(["table", "csv", "json"]),
              default="table", show_default=True)
def affected_command(strategy: str, since: datetime, until: datetime, output: str) -> None:
    """Accounts and devices linked in [SINCE, UNTIL) by STRATEGY."""
    window = _window(strategy, since, until)
    rows = incident.affected(window.strategy, window.since, window.until)
    click.echo(render(rows, output, window), nl=False)


@incident_cli.command("revoke")
@_window_options
@click.option("--yes", is_flag=True, help="Really revoke (without it: a dry run).")
def revoke_command(strategy: str, since: datetime, until: datetime, yes: bool) -> None:
    """Revoke the tokens of devices linked in the window and mark them for re-link, and
    withdraw the links set in motion in the window that have not happened yet."""
    window = _window(strategy, since, until, ended=True)
    if not yes:
        rows = incident.affected(window.strategy, window.since, window.until)
        click.echo(render(rows, "table", window), nl=False)
        to_revoke = [row for row in rows if row.will_revoke]
        click.secho(f"DRY RUN: would revoke {len(to_revoke)} device(s) and withdraw the links "
                    "set in motion in the window that have not happened yet. Nothing "
                    "changed; add --yes to revoke.", fg="yellow", err=True)
        click.echo(render_notices(incident.people_to_notify(to_revoke)), nl=False)
        return
    result = incident.revoke(window.strategy, window.since, window.until, actor=CLI_ACTOR)
    echo_ran(strategy=window.strategy, since=utc_text(window.since), until=utc_text(window.until))
    click.echo(f"Revoked {len(result.revoked)} device(s); their owners must link them again.")
    click.echo(f"Withdrew {result.withdrawn} link(s) set in motion in the window that had not "
               "happened yet.")
    click.echo(render_notices(result.notify), nl=False)


@incident_cli.command("revoke-account")
@click.argument("email", type=CLI_TEXT)
@click.option("--reason", required=True, type=CLI_TEXT, help="Why (kept in the audit log).")
@click.option("--yes", is_flag=True, help="Really revoke (without it: a dry run).")
def revoke_account_command(email: str, reason: str, yes: bool) -> None:
    """Revoke every printer token of the account EMAIL, mark them for re-link and end every
    session of the account (a leaked password needs ``set-password`` as well)."""
    user, reason = account_and_reason(email, reason)
    if not yes:
        active = devices.active_devices_of(user)
        click.echo(f"Printers of {for_terminal(user.email)} with a working token: {len(active)}")
        for device in active:
            click.echo(f"  {for_terminal(device.name)}  ({for_terminal(device.device_uid)}, "
                       f"{device.linked_via}, linked {device.linked_at.isoformat()})")
        click.secho(f"DRY RUN: would revoke {len(active)} device(s) and end every session "
                    "of the account. Nothing changed; add --yes to revoke.", fg="yellow",
                    err=True)
        return
    revoked = incident.revoke_account(user, actor=CLI_ACTOR, reason=reason)
    echo_ran()
    click.echo(f"Revoked {len(revoked)} device(s) of {for_terminal(user.email)}; they must be "
               "linked again.")
    click.echo("Every session of the account ended. If its password leaked, set a new one: "
               "flask --app tsd_server set-password EMAIL")
    if revoked:
        click.echo(render_notices([incident.Notice(
            account_id=user.id, email=user.email, display_name=user.display_name,
            device_names=[device.name for device in revoked])]), nl=False)


def account_and_reason(email: str, reason: str) -> tuple[User, str]:
    """The account an operator's command names, and its checked ``--reason``: a usage error
    (exit status 2) for the reason, exit status 1 for an unknown email, before anything
    changes."""
    try:
        reason = incident.checked_reason(reason)
    except ValueError as error:
        raise click.UsageError(f"--reason: {error}") from None
    user = accounts.find_user(email)
    if user is None:
        raise click.ClickException(f"no account has the email {for_terminal(email)!r}")
    return user, reason


def render(rows: list[incident.AffectedDevice], output: str, window: incident.Window) -> str:
    if output == "json":
        return json.dumps({"window": window.to_json(),
                           "affected": [row.to_json() for row in rows]}, indent=2) + "\n"
    if output == "csv":
        return incident_csv.to_csv(rows)
    return _table(rows, window)


def _table(rows: list[incident.AffectedDevice], window: incident.Window) -> str:
    header = (f"Devices linked by {window.strategy} in [{window.since.isoformat()}, "
              f"{window.until.isoformat()}): {len(rows)}\n")
    if not rows:
        return header
    cells = [list(incident.COLUMNS)] + [[for_terminal(v) for v in row.cells()] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(incident.COLUMNS))]
    lines = ["  ".join(value.ljust(width)
                       for value, width in zip(line, widths, strict=True)).rstrip()
             for line in cells]
    return header + "\n".join(lines) + "\n"


def render_notices(notices: list[incident.Notice]) -> str:
    if not notices:
        return "Nobody to notify.\n"
    lines = [f"Notify {len(notices)} account(s):"]
    for notice in notices:
        names = ", ".join(for_terminal(name) for name in notice.device_names)
        lines.append(f"  {for_terminal(notice.email)}  "
                     f"({for_terminal(notice.display_name)}): {names}")
    return "\n".join(lines) + "\n"


def register_commands(app: Flask) -> None:
    app.cli.add_command(discovery_cli)
    app.cli.add_command(incident_cli)
