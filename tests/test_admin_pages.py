"""Admin pages: only admins, CSRF on every change, actor "admin:<id>" in the audit log."""

from __future__ import annotations

import html
import re
import shlex
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from tsd_server.command_record import PROGRAM
from tsd_server.discovery import kill_switch
from tsd_server.discovery.link_service import link_device
from tsd_server.extensions import db
from tsd_server.incident import SETTLED
from tsd_server.models import AuditEvent, Device, StrategyFlag, User

PAGES = ["/admin/", "/admin/kill-switches", "/admin/audit", "/admin/incident"]
SINCE = datetime(2026, 6, 1, 13, 0, tzinfo=UTC)
UNTIL = datetime(2026, 6, 1, 21, 0, tzinfo=UTC)
WINDOW = {"strategy": "ip_match", "since": "2026-06-01T13:00:00Z",
          "until": "2026-06-01T21:00:00Z"}


@pytest.fixture
def admin(make_user, login):
    uid, email, password = make_user("root@example.org", is_admin=True)
    session = login(email, password)
    session.uid = uid
    return session


@pytest.fixture
def member(make_user, login):
    _, email, password = make_user("member@example.org")
    return login(email, password)


def flag(app, name):
    with app.app_context():
        return db.session.get(StrategyFlag, name)


# --- access -------------------------------------------------------------------------------

@pytest.mark.parametrize("path", PAGES)
def test_anonymous_is_sent_to_login(client, path):
    response = client.get(path)
    assert response.status_code == 302 and "/login" in response.headers["Location"]


@pytest.mark.parametrize("path", PAGES)
def test_logged_in_non_admin_gets_403(member, path):
    assert member.get(path).status_code == 403


def test_non_admin_cannot_toggle_or_revoke(app, member):
    response = member.form_post("/admin/kill-switches", {
        "target": "ip_match", "action": "disable", "reason": "x"})
    assert response.status_code == 403
    assert member.form_post("/admin/incident/revoke", {**WINDOW, "confirm": "yes"}
                            ).status_code == 403
    assert flag(app, "ip_match") is None


def test_admin_role_taken_away_takes_effect_at_once(app, admin):
    assert admin.get("/admin/kill-switches").status_code == 200
    with app.app_context():
        db.session.get(User, admin.uid).is_admin = False
        db.session.commit()
    assert admin.get("/admin/kill-switches").status_code == 403


def test_admin_required_decorator(app, make_user, login):
    """For admin routes outside the admin blueprint: same rules as the blueprint's guard."""
    from tsd_server.admin.access import admin_required

    @app.get("/probe-admin-only")
    @admin_required
    def probe():
        return "secret"

    assert app.test_client().get("/probe-admin-only").status_code == 302
    _, member_email, password = make_user("m2@example.org")
    assert login(member_email, password).get("/probe-admin-only").status_code == 403
    _, admin_email, password = make_user("a2@example.org", is_admin=True)
    response = login(admin_email, password).get("/probe-admin-only")
    assert response.status_code == 200 and response.get_data(as_text=True) == "secret"


@pytest.mark.parametrize("path", PAGES[1:])
def test_admin_sees_pages(admin, path):
    assert admin.get(path).status_code == 200


@pytest.mark.parametrize("path", PAGES[1:])
def test_every_label_names_one_field(admin, path):
    """Two forms on one page with fields of one name: a label would name the other's field
    (the incident page's lock form did, until its fields got ids of their own)."""
    page = admin.get(path).get_data(as_text=True)
    ids = re.findall(r'\sid="([^"]+)"', page)
    labelled = re.findall(r'<label[^>]*\sfor="([^"]+)"', page)
    assert labelled and {name: ids.count(name) for name in labelled} == dict.fromkeys(
        labelled, 1)


def test_admin_link_in_nav_only_for_admins(admin, member):
    assert 'href="/admin/"' in admin.get("/").get_data(as_text=True)
    assert 'href="/admin/"' not in member.get("/").get_data(as_text=True)


# --- kill switches --------------------------------------------------------------------------

def test_admin_switches_a_strategy_off_and_on(app, admin, client):
    response = admin.form_post("/admin/kill-switches", {
        "target": "ip_match", "action": "disable", "reason": "LB lost client IPs"})
    assert response.status_code == 302
    row = flag(app, "ip_match")
    assert (row.enabled, row.changed_by, row.reason) == \
        (False, f"admin:{admin.uid}", "LB lost client IPs")
    status = client.get("/api/v1/discovery/status").get_json()["strategies"]["ip_match"]
    assert status["enabled"] is False
    page = admin.get("/admin/kill-switches").get_data(as_text=True)
    assert "LB lost client IPs" in page and f"admin:{admin.uid}" in page

    assert admin.form_post("/admin/kill-switches", {
        "target": "ip_match", "action": "enable", "reason": "fixed"}).status_code == 302
    assert flag(app, "ip_match").enabled is True
    with app.app_context():
        actors = db.session.scalars(select(AuditEvent.actor).where(
            AuditEvent.event == "flag_toggle")).all()
    assert actors == [f"admin:{admin.uid}"] * 2


def test_toggle_without_csrf_token_is_refused(app, admin):
    response = admin.client.post("/admin/kill-switches", data={
        "target": "ip_match", "action": "disable", "reason": "no token"})
    assert response.status_code == 400
    assert flag(app, "ip_match") is None


@pytest.mark.parametrize("data", [
    {"target": "ip_match", "action": "disable", "reason": ""},
    {"target": "ip_match", "action": "disable", "reason": "   "},
    {"target": "ip_match", "action": "disable"},
    {"target": "ip_match", "action": "disable", "reason": "x" * 501},
    {"target": "ip-match", "action": "disable", "reason": "typo"},
    {"target": "ip_match", "action": "explode", "reason": "odd action"},
])
def test_toggle_with_bad_input_changes_nothing(app, admin, data):
    response = admin.form_post("/admin/kill-switches", data)
    assert response.status_code == 400
    assert flag(app, "ip_match") is None
    with app.app_context():
        assert db.session.scalar(select(AuditEvent).where(AuditEvent.event != "login")) is None


def test_enabling_a_strategy_held_off_by_deployment_warns(app, database, make_user):
    from tests.conftest import UserSession
    from tests.support.apps import another_app

    with another_app(database, DISCOVERY_DISABLED="qr_code") as application:
        _, email, password = make_user("ops@example.org", is_admin=True)
        ops = UserSession(application.test_client(), email, password)
        page = ops.get("/admin/kill-switches").get_data(as_text=True)
        assert "Held off by the deployment settings: qr_code" in page
        response = ops.form_post("/admin/kill-switches", {
            "target": "qr_code", "action": "enable", "reason": "try"}, follow_redirects=True)
        assert "STILL OFF" in response.get_data(as_text=True)


# --- incident -------------------------------------------------------------------------------

@pytest.fixture
def linked(app, make_user, clock):
    """A stranger's device linked by ip_match in the window, and one outside it."""
    stranger, _, _ = make_user("stranger@example.org")
    other, _, _ = make_user("other@example.org")
    pks = {}
    for owner, uid_, at in ((stranger, "dev-in", SINCE + timedelta(hours=1)),
                            (other, "dev-out", UNTIL)):
        clock.now = at
        with app.test_request_context():
            pks[uid_] = link_device(owner=db.session.get(User, owner), device_uid=uid_,
                                    name=f"Name {uid_}", model=None, strategy="ip_match",
                                    actor=f"user:{owner}", address=None).device.id
    clock.now = UNTIL + SETTLED  # the window ended a minute ago: it can be revoked
    return pks


def active(app, pk) -> bool:
    with app.app_context():
        return db.session.get(Device, pk).token_hash is not None


def test_incident_page_lists_affected_devices(admin, linked):
    page = admin.get("/admin/incident", query_string=WINDOW).get_data(as_text=True)
    assert f'data-device-pk="{linked["dev-in"]}"' in page
    assert f'data-device-pk="{linked["dev-out"]}"' not in page
    assert "stranger@example.org" in page and "Revoke 1 device(s)" in page


def test_incident_page_with_bad_window_shows_errors(admin, linked):
    response = admin.get("/admin/incident", query_string={**WINDOW, "since": "noon"})
    assert response.status_code == 400
    assert "not an ISO 8601 time" in response.get_data(as_text=True)
    response = admin.get("/admin/incident", query_string={
        **WINDOW, "since": WINDOW["until"], "until": WINDOW["since"]})
    assert response.status_code == 400 and "later than" in response.get_data(as_text=True)
    response = admin.get("/admin/incident", query_string={
        **WINDOW, "since": "0001-01-01T00:00+01:00"})  # before year 1 once in UTC
    assert response.status_code == 400 and "out of range" in response.get_data(as_text=True)


def test_revoke_needs_a_confirmation_step(app, admin, linked, client):
    first = admin.form_post("/admin/incident/revoke", WINDOW)
    assert first.status_code == 200
    page = first.get_data(as_text=True)
    assert "Revoke 1 device(s)?" in page and "stranger@example.org" in page
    assert 'name="confirm" type="hidden" value="yes"' in page
    assert active(app, linked["dev-in"]), "the first press must not revoke anything"

    done = admin.form_post("/admin/incident/revoke", {**WINDOW, "confirm": "yes"})
    assert done.status_code == 200
    page = done.get_data(as_text=True)
    assert "Revoked 1 device(s)" in page
    # Listed as they are now, not as they were before the revoke.
    assert re.findall(r'data-status="([a-z_]+)"', page) == ["needs_relink"]
    assert "<th>Status now</th>" in page
    assert not active(app, linked["dev-in"]) and active(app, linked["dev-out"])
    with app.app_context():
        rows = db.session.scalars(select(AuditEvent).where(
            AuditEvent.event.in_(["revocation", "incident_revoke"]))).all()
    assert {r.actor for r in rows} == {f"admin:{admin.uid}"} and len(rows) == 2


def test_revoke_without_csrf_token_is_refused(app, admin, linked):
    response = admin.client.post("/admin/incident/revoke", data={**WINDOW, "confirm": "yes"})
    assert response.status_code == 400
    assert active(app, linked["dev-in"])


@pytest.mark.parametrize("override", [
    {"since": "garbage"}, {"strategy": "ip-match"}, {"until": ""},
    {"since": "2026-06-02T00:00:00Z"},
])
def test_revoke_with_bad_window_changes_nothing(app, admin, linked, override):
    response = admin.form_post("/admin/incident/revoke", {**WINDOW, **override,
                                                          "confirm": "yes"})
    assert response.status_code == 302
    assert active(app, linked["dev-in"])
    # Back to the query the revoke came from, so the admin need not type it again.
    expected = {k: v for k, v in {**WINDOW, **override}.items() if v}
    assert parse_qs(urlsplit(response.location).query) == {k: [v] for k, v in expected.items()}


def test_confirmation_form_carries_the_window_it_showed(admin, linked):
    page = admin.form_post("/admin/incident/revoke", WINDOW).get_data(as_text=True)
    hidden = dict(re.findall(r'name="(strategy|since|until)" type="hidden" value="([^"]*)"',
                             page))
    assert hidden == WINDOW


ACCOUNT = {"email": "Stranger@Example.org", "reason": "password leaked"}


def test_account_revoke_needs_a_confirmation_step(app, admin, linked):
    first = admin.form_post("/admin/incident/revoke-account", ACCOUNT)
    assert first.status_code == 200
    page = first.get_data(as_text=True)
    assert "Revoke 1 device(s) of stranger@example.org and log it out?" in page
    assert "Name dev-in" in page
    assert "Name dev-out" not in page  # another account's printer
    assert 'name="confirm" type="hidden" value="yes"' in page
    hidden = dict(re.findall(r'name="(email|reason)"[^>]* type="hidden" value="([^"]*)"',
                             page))
    assert hidden == {"email": "stranger@example.org", "reason": "password leaked"}
    assert active(app, linked["dev-in"]), "the first press must not revoke anything"

    done = admin.form_post("/admin/incident/revoke-account", {**hidden, "confirm": "yes"})
    assert done.status_code == 302
    assert "Revoked 1 device(s) of stranger@example.org" in \
        admin.get("/admin/incident").get_data(as_text=True)
    assert not active(app, linked["dev-in"]) and active(app, linked["dev-out"])
    with app.app_context():
        rows = db.session.scalars(select(AuditEvent).where(
            AuditEvent.event.in_(["revocation", "incident_revoke"]))).all()
        assert db.session.get(Device, linked["dev-in"]).needs_relink is True
    assert {r.actor for r in rows} == {f"admin:{admin.uid}"} and len(rows) == 2


@pytest.mark.parametrize("fields, words", [
    ({"email": "nobody@example.org", "reason": "x"}, "No account has that email"),
    ({"email": "stranger@example.org", "reason": "  "}, "Say why"),
    ({"email": "", "reason": "x"}, "Give the email of the account"),
])
def test_account_revoke_with_bad_fields_changes_nothing(app, admin, linked, fields, words):
    response = admin.form_post("/admin/incident/revoke-account", {**fields, "confirm": "yes"})
    assert response.status_code == 302
    assert words in admin.get("/admin/incident").get_data(as_text=True)
    assert active(app, linked["dev-in"])


def test_account_revoke_needs_an_admin_and_the_csrf_token(app, admin, member, linked):
    assert member.form_post("/admin/incident/revoke-account",
                            {**ACCOUNT, "confirm": "yes"}).status_code == 403
    assert admin.client.post("/admin/incident/revoke-account",
                             data={**ACCOUNT, "confirm": "yes"}).status_code == 400
    assert active(app, linked["dev-in"])


def test_kill_switch_page_shows_unreadable_store(app, admin):
    from tests.support.apps import flags_table_renamed

    with flags_table_renamed(app):
        response = admin.get("/admin/kill-switches")
        assert response.status_code == 200
        assert "cannot be read" in response.get_data(as_text=True)
    with app.app_context():
        assert kill_switch.is_enabled("ip_match", fresh=True)


# --- the record line of an admin page's action ----------------------------------------------

def recorded_command(app, caplog, response) -> list[str]:
    """The command an admin page logged and showed for its action, split as a shell would,
    without ``flask --app tsd_server``; the page shows the same line as the log."""
    lines = [r.getMessage().split("the command that does the same: ", 1)[1]
             for r in caplog.records if r.name == "tsd_server.command_record"]
    assert len(lines) == 1, lines
    assert lines[0] in html.unescape(response.get_data(as_text=True))
    argv = shlex.split(lines[0].split(" ran: ", 1)[1])
    assert argv[:len(PROGRAM)] == list(PROGRAM)
    return argv[len(PROGRAM):]


def test_admin_actions_log_the_command_that_redoes_them(app, admin, linked, caplog):
    """A restore undoes what the admin pages did, audit rows and all (docs/production.md):
    each action logs the command line that does the same, which is run here after the
    action was undone, and does it again."""
    caplog.set_level("WARNING", logger="tsd_server.command_record")
    reason = "ticket 9: \"cookie\" $HOME"
    page = admin.form_post("/admin/kill-switches", {
        "target": "ip_match", "action": "disable", "reason": reason}, follow_redirects=True)
    argv = recorded_command(app, caplog, page)
    assert argv == ["discovery", "disable", "--reason", reason, "--", "ip_match"]
    with app.app_context():
        db.session.delete(db.session.get(StrategyFlag, "ip_match"))  # as a restore would
        db.session.commit()
    assert app.test_cli_runner().invoke(args=argv).exit_code == 0
    assert flag(app, "ip_match").enabled is False and flag(app, "ip_match").reason == reason

    caplog.clear()
    page = admin.form_post("/admin/incident/lock-account", {
        "email": "stranger@example.org", "reason": reason, "action": "lock"},
        follow_redirects=True)
    argv = recorded_command(app, caplog, page)
    assert argv == ["lock-account", "--reason", reason, "--", "stranger@example.org"]
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == "stranger@example.org"))
        user.locked_at = None
        db.session.commit()
    assert app.test_cli_runner().invoke(args=argv).exit_code == 0
    with app.app_context():
        assert db.session.scalar(select(User.locked_at).where(
            User.email == "stranger@example.org")) is not None

    caplog.clear()
    page = admin.form_post("/admin/incident/revoke", {**WINDOW, "confirm": "yes"})
    assert recorded_command(app, caplog, page) == [
        "incident", "revoke", "--strategy", "ip_match", "--since", WINDOW["since"],
        "--until", WINDOW["until"], "--yes"]
    caplog.clear()
    page = admin.form_post("/admin/incident/revoke-account", {
        "email": "other@example.org", "reason": reason, "confirm": "yes"}, follow_redirects=True)
    argv = recorded_command(app, caplog, page)
    assert argv == ["incident", "revoke-account", "--reason", reason, "--yes", "--",
                    "other@example.org"]
    assert app.test_cli_runner().invoke(args=argv).exit_code == 0  # nothing left: still fine


def test_a_reason_with_a_line_break_is_refused_like_on_the_command_line(app, admin, linked):
    """The command line refuses control characters; a reason the page took with one could
    not be redone from its record line (and would split the log line)."""
    page = admin.form_post("/admin/kill-switches", {
        "target": "ip_match", "action": "disable", "reason": "ok\n2026 ran: forged"})
    assert page.status_code == 400 and "Control characters" in page.get_data(as_text=True)
    assert flag(app, "ip_match") is None
