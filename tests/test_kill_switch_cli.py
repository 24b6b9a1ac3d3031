"""The kill switch's commands: `flask discovery disable|enable|status`, as an operator
types them during an incident."""

from __future__ import annotations

from sqlalchemy import select

from tests.support.apps import another_app, flags_table_renamed
from tsd_server.discovery import kill_switch
from tsd_server.extensions import db
from tsd_server.models import AuditEvent, StrategyFlag


def enabled(application, strategy: str) -> bool:
    with application.app_context():
        return kill_switch.all_states(fresh=True)[strategy].enabled


def run(application, *args):
    """Invoke a CLI command; ``output`` holds stdout and stderr."""
    return application.test_cli_runner().invoke(args=list(args))


def test_cli_disable_needs_a_reason_and_changes_nothing_without(app):
    result = run(app, "discovery", "disable", "ip_match")
    assert result.exit_code != 0 and "--reason" in result.output
    assert enabled(app, "ip_match")


def test_cli_disable_enable_and_status(app):
    result = run(app, "discovery", "disable", "ip_match", "--reason", "LB lost client IPs")
    assert result.exit_code == 0, result.output
    assert not enabled(app, "ip_match")
    status = run(app, "discovery", "status")
    assert status.exit_code == 0
    line = next(line for line in status.output.splitlines() if line.startswith("ip_match"))
    assert "OFF" in line and "runtime by cli" in line and "LB lost client IPs" in line
    assert any(line.startswith("qr_code") and line.endswith("ON")
               for line in status.output.splitlines())
    with app.app_context():
        row = db.session.scalar(select(AuditEvent).where(AuditEvent.event == "flag_toggle"))
        assert row.actor == "cli"

    result = run(app, "discovery", "enable", "ip_match", "--reason", "fixed")
    assert result.exit_code == 0, result.output
    assert enabled(app, "ip_match")


def test_cli_status_shows_no_terminal_escapes_from_a_reason(app):
    """A reason can come from an admin's web form; printed raw, an escape sequence in it
    would rewrite the operator's terminal (hide lines, fake a status)."""
    hostile = "ok\x1b[2K\x1b[1A\rip_match ON"
    with app.test_request_context():
        kill_switch.set_flag("ip_match", enabled=False, reason=hostile, actor="admin:1")
        kill_switch.set_flag("all", enabled=False, reason=hostile, actor="admin:1")
    status = run(app, "discovery", "status")
    assert status.exit_code == 0
    assert "\x1b" not in status.output and "\r" not in status.output
    assert "ok?[2K?[1A?ip_match ON" in status.output
    enable = run(app, "discovery", "enable", "ip_match")  # still held off by 'all'
    assert enable.exit_code == 3 and "\x1b" not in enable.output


def test_cli_rejects_unknown_strategy(app):
    result = run(app, "discovery", "disable", "ip-match", "--reason", "typo")
    assert result.exit_code == 2 and "not one of" in result.output
    with app.app_context():
        assert db.session.scalar(select(StrategyFlag)) is None


def test_cli_enable_warns_and_exits_3_when_deployment_holds_it_off(app, database):
    with another_app(database, DISCOVERY_DISABLED="qr_code") as application:
        result = run(application, "discovery", "enable", "qr_code", "--reason", "please")
        assert result.exit_code == 3
        assert "STILL OFF" in result.output and "TSD_DISCOVERY_DISABLED" in result.output
        status = run(application, "discovery", "status")
        assert "qr_code" in status.output and "[deployment]" in status.output


def test_cli_enable_warns_when_the_all_switch_holds_it_off(app):
    run(app, "discovery", "disable", "all", "--reason", "stop")
    result = run(app, "discovery", "enable", "pairing_code")
    assert result.exit_code == 3 and "enable all" in result.output


def test_cli_status_with_unreadable_store(app):
    with flags_table_renamed(app):
        result = run(app, "discovery", "status")
    assert result.exit_code == 0
    assert "UNREADABLE" in result.output
    assert result.output.count("[flag_store_unreadable]") == 3


def test_cli_disable_with_database_down_is_a_clear_error():
    url = "postgresql+psycopg2://nobody@127.0.0.1:1/none"
    with another_app(url, SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"connect_timeout": 2}}) \
            as application:
        result = run(application, "discovery", "disable", "all", "--reason", "db down")
    assert result.exit_code == 1
    assert "could not write the flag" in result.output and "Traceback" not in result.output
