"""Command-line entry points (``flask --app tsd_server ...``), registered on the app."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import with_appcontext

from tsd_server.auth.accounts import AccountError, create_user
from tsd_server.discovery import cli as discovery_cli
from tsd_server.proxy_check import proxy_check_command


@click.command("create-user")
@click.argument("email")
@click.option("--admin", is_flag=True, help="Give the account the admin role.")
@click.option("--name", "display_name", default=None, help="Display name shown to printers.")
@click.password_option(prompt="Password", help="Prompted twice when not given (or from stdin).")
@with_appcontext
def create_user_command(email: str, admin: bool, display_name: str | None, password: str) -> None:
    """Create an account (the only way to make the first admin)."""
    try:
        user = create_user(email, password, display_name=display_name, is_admin=admin)
    except AccountError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"Created {'admin ' if user.is_admin else ''}account {user.email} (id {user.id}).")


def register_commands(app: Flask) -> None:
    app.cli.add_command(create_user_command)
    discovery_cli.register_commands(app)
    app.cli.add_command(proxy_check_command)
