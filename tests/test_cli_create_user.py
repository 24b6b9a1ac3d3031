"""``flask --app tsd_server create-user EMAIL [--admin]``: password prompted twice (so it can
come from stdin), the same rules as sign-up, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import select

from tests.conftest import ROOT
from tsd_server.auth.accounts import find_user
from tsd_server.extensions import db
from tsd_server.models import User

PASSWORD = "a long enough password"


def run(app, *args: str, stdin: str):
    return app.test_cli_runner().invoke(args=["create-user", *args], input=stdin)


def all_users(app) -> list[tuple[str, bool]]:
    with app.app_context():
        return [(u.email, u.is_admin) for u in db.session.scalars(select(User).order_by(User.id))]


def test_create_admin_from_stdin(app):
    result = run(app, "Admin@Example.org", "--admin", stdin=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert "Created admin account admin@example.org" in result.output
    assert PASSWORD not in result.output  # the prompt does not echo it
    assert all_users(app) == [("admin@example.org", True)]
    with app.app_context():
        assert find_user("admin@example.org").check_password(PASSWORD)


def test_create_plain_user_with_name(app):
    result = run(app, "bob@example.org", "--name", "Bob", stdin=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert all_users(app) == [("bob@example.org", False)]
    with app.app_context():
        assert db.session.scalar(select(User.display_name)) == "Bob"


@pytest.mark.parametrize("args, stdin, message", [
    (["bob@example.org"], "short\nshort\n", "at least 10 characters"),
    # The login form takes at most 200: a longer one could never be typed in to log in.
    (["bob@example.org"], f"{'p' * 201}\n{'p' * 201}\n", "at most 200 characters"),
    (["not-an-email"], f"{PASSWORD}\n{PASSWORD}\n", "Enter an email address"),
    (["bob@example.org"], f"{PASSWORD}\n{PASSWORD}x\n", "do not match"),
    (["bob@example.org"], "", "Aborted"),
])
def test_refusals_create_nothing(app, args, stdin, message):
    result = run(app, *args, stdin=stdin)
    assert result.exit_code != 0
    assert message in result.output
    assert all_users(app) == []


def test_existing_email_is_refused(app, make_user):
    make_user("bob@example.org")
    result = run(app, "BOB@example.org", "--admin", stdin=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 1
    assert "already exists" in result.output
    assert all_users(app) == [("bob@example.org", False)]  # not promoted to admin


def command_line(database: str, tmp_path, *args: str | bytes, command: str = "create-user",
                 secret_key: str | None = "k" * 32):
    env = {key: value for key, value in os.environ.items() if not key.startswith("TSD_")}
    env.update(TSD_DATABASE_URL=database, TSD_INSTANCE_PATH=str(tmp_path / "instance"))
    if secret_key is not None:
        env.update(TSD_SECRET_KEY=secret_key)
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "tsd_server", *command.split(), *args],
        input=f"{PASSWORD}\n{PASSWORD}\n".encode(), capture_output=True, env=env, cwd=ROOT,
        timeout=60)


def test_real_command_line(app, database, tmp_path):
    result = command_line(database, tmp_path, "ops@example.org", "--admin")
    assert result.returncode == 0, result.stderr.decode()
    assert all_users(app) == [("ops@example.org", True)]


def test_an_email_that_is_not_utf8_is_a_usage_error(app, database, tmp_path):
    """The shell passes bytes; Python turns 0xff into a lone surrogate that the database
    driver cannot encode. It was a UnicodeEncodeError traceback."""
    result = command_line(database, tmp_path, b"a\xff@example.org")
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 2, stderr
    assert "Invalid value for 'EMAIL': is not valid UTF-8 text" in stderr
    assert "Traceback" not in stderr
    assert all_users(app) == []


@pytest.mark.parametrize("command", ["create-user", "db upgrade"])
def test_settings_the_server_refuses_are_one_line_not_a_traceback(database, tmp_path, command):
    """Production settings without TSD_SECRET_KEY: the command says so in one line."""
    args = ["ops@example.org"] if command == "create-user" else []
    result = command_line(database, tmp_path, *args, command=command, secret_key=None)
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert stderr.startswith("Error: TSD_SECRET_KEY is required") and stderr.count("\n") == 1
