"""Each operator command that changes the security record prints, once it has acted, when
it ran and a command line that runs it again (tsd_server/command_record.py): after a
restore from a backup, that line is the record of what to redo (docs/production.md).

The line is parsed back and run again here, so it must be exact: a reason with spaces and
quotes survives, a time means the same moment, a password never appears, and a dry run
(which changes nothing) prints no such line.
"""

from __future__ import annotations

import re
import shlex
from datetime import UTC, datetime

import pytest

from tsd_server import incident
from tsd_server.command_record import PROGRAM

RAN = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) ran: (.+)$", re.MULTILINE)
REASON = "ticket 7: \"stolen\" cookie; it's $HOME `x`"
PASSWORD = "a new horse battery staple"
SINCE, UNTIL = "2026-06-01T13:00:00+02:00", "2026-06-01T21:00:00Z"
NOW = datetime(2026, 6, 2, 9, 30, 15, 123456, tzinfo=UTC)


@pytest.fixture
def owner(app, clock, make_user, link_device):
    clock.now = NOW
    user_id, email, _ = make_user("owner@example.org")
    link_device(user_id)
    return email


def run(app, args, **kwargs):
    return app.test_cli_runner().invoke(args=args, **kwargs)


def ran_line(result) -> list[str]:
    """The record line's command, split as a shell would; checks its time."""
    assert result.exit_code == 0, result.output
    lines = RAN.findall(result.output)
    assert len(lines) == 1, result.output
    at, command = lines[0]
    assert at == "2026-06-02T09:30:15Z"
    argv = shlex.split(command)
    assert argv[:len(PROGRAM)] == list(PROGRAM)
    return argv[len(PROGRAM):]


@pytest.mark.parametrize("args, line", [
    (["lock-account", "owner@example.org", "--reason", REASON],
     ["lock-account", "--reason", REASON, "--", "owner@example.org"]),
    (["incident", "revoke-account", "owner@example.org", "--reason", REASON, "--yes"],
     ["incident", "revoke-account", "--reason", REASON, "--yes", "--", "owner@example.org"]),
    (["delete-account", "--yes", "owner@example.org", "--reason", REASON],
     ["delete-account", "--reason", REASON, "--yes", "--", "owner@example.org"]),
    (["discovery", "disable", "ip_match", "--reason", REASON],
     ["discovery", "disable", "--reason", REASON, "--", "ip_match"]),
    (["discovery", "enable", "all", "--reason", REASON],
     ["discovery", "enable", "--reason", REASON, "--", "all"]),
])
def test_the_line_repeats_the_command(app, owner, args, line):
    """Options first, then ``--`` and the arguments: an email that starts with a dash is
    still an email when the line is run again."""
    assert ran_line(run(app, args)) == line


def test_an_email_that_starts_with_a_dash_runs_again_from_the_line(app, owner, make_user):
    _, email, _ = make_user("-x@example.org")
    argv = ran_line(run(app, ["lock-account", "--reason", "test", "--", email]))
    assert argv == ["lock-account", "--reason", "test", "--", email]
    assert run(app, ["unlock-account", "--reason", "test", "--", email]).exit_code == 0
    assert ran_line(run(app, argv)) == argv  # pasted back, it locks it again


def test_run_as_python_m_flask_the_line_still_says_flask(app, owner):
    """click names the program after how it was started ("python -m flask"): the line
    names the commands only, after the project's own ``flask --app tsd_server``."""
    result = app.test_cli_runner().invoke(
        args=["lock-account", "--reason", "test", "--", "owner@example.org"],
        prog_name="python -m flask")
    assert ran_line(result) == ["lock-account", "--reason", "test", "--", "owner@example.org"]


def test_a_revoke_names_its_window_in_utc_and_runs_again_from_the_line(app, owner):
    argv = ran_line(run(app, ["incident", "revoke", "--strategy", "pairing_code",
                              "--since", SINCE, "--until", UNTIL, "--yes"]))
    assert argv == ["incident", "revoke", "--strategy", "pairing_code",
                    "--since", "2026-06-01T11:00:00Z", "--until", "2026-06-01T21:00:00Z",
                    "--yes"]  # no arguments, no "--"
    window = incident.parse_time(argv[5]), incident.parse_time(argv[7])
    assert window == (incident.parse_time(SINCE), incident.parse_time(UNTIL))
    assert ran_line(run(app, argv)) == argv  # pasted back, it runs (a second revoke is harmless)


def test_a_prune_names_its_day(app, owner):
    assert ran_line(run(app, ["audit", "prune", "--before", "2026-01-31"])) == [
        "audit", "prune", "--before", "2026-01-31"]


def test_a_new_password_is_never_in_the_line(app, owner):
    result = run(app, ["set-password", "owner@example.org"], input=f"{PASSWORD}\n{PASSWORD}\n")
    assert ran_line(result) == ["set-password", "--", "owner@example.org"]  # asked again
    assert PASSWORD not in result.output
    given = run(app, ["set-password", "owner@example.org", "--password", PASSWORD + "!"])
    assert ran_line(given) == ["set-password", "--", "owner@example.org"]
    assert PASSWORD not in given.output


@pytest.mark.parametrize("args", [
    ["incident", "revoke-account", "owner@example.org", "--reason", REASON],
    ["delete-account", "owner@example.org", "--reason", REASON],
    ["incident", "revoke", "--strategy", "all", "--since", SINCE, "--until", UNTIL],
    ["audit", "prune", "--before", "2026-01-31", "--dry-run"],
])
def test_a_dry_run_prints_no_line(app, owner, args):
    result = run(app, args)
    assert result.exit_code == 0, result.output
    assert "DRY RUN" in result.output
    assert RAN.search(result.output) is None


def test_a_refused_command_prints_no_line(app, owner):
    result = run(app, ["lock-account", "nobody@example.org", "--reason", REASON])
    assert result.exit_code == 1
    assert RAN.search(result.output) is None
