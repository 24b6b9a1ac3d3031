"""Incident response: find devices linked in [since, until), revoke them, say who to tell."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, select, update

from tsd_server import incident
from tsd_server.discovery.link_service import link_device as link_service_link
from tsd_server.extensions import db
from tsd_server.models import AuditEvent, Device, User

US = timedelta(microseconds=1)
SINCE = datetime(2026, 6, 1, 13, 0, tzinfo=UTC)
UNTIL = datetime(2026, 6, 1, 21, 0, tzinfo=UTC)


@pytest.fixture
def link_at(app, clock):
    """Link a device at an exact moment; returns its pk and token."""

    def factory(owner_id: int, at: datetime, device_uid: str, strategy: str = "ip_match",
                name: str = "Printer"):
        clock.now = at
        with app.test_request_context(environ_base={"REMOTE_ADDR": "9.9.9.9"}):
            result = link_service_link(owner=db.session.get(User, owner_id),
                                       device_uid=device_uid, name=name, model=None,
                                       strategy=strategy, actor=f"user:{owner_id}",
                                       address=None)
            return result.device.id, result.access_token

    return factory


def affected(app, strategy="ip_match", since=SINCE, until=UNTIL):
    with app.app_context():
        return incident.affected(strategy, since, until)


def run(app, *args):
    return app.test_cli_runner().invoke(args=list(args))


def window_ended(clock) -> None:
    """Revokes run once the window has ended, a minute ago (``incident.check_ended``)."""
    clock.now = max(clock.now, UNTIL + incident.SETTLED)


def revoke(app, clock, strategy="ip_match"):
    window_ended(clock)
    with app.app_context():
        return incident.revoke(strategy, SINCE, UNTIL, actor="cli")


WINDOW = ["--since", SINCE.isoformat(), "--until", UNTIL.isoformat()]


# --- window semantics -----------------------------------------------------------------------

def test_window_boundaries_since_inclusive_until_exclusive(app, make_user, link_at):
    uid, _, _ = make_user()
    moments = {"before-since": SINCE - US, "at-since": SINCE, "after-since": SINCE + US,
               "before-until": UNTIL - US, "at-until": UNTIL, "after-until": UNTIL + US}
    for label, at in moments.items():
        link_at(uid, at, device_uid=f"dev-{label}")
    found = {row.device_uid: row for row in affected(app)}
    assert set(found) == {"dev-at-since", "dev-after-since", "dev-before-until"}
    assert found["dev-at-since"].linked_at == SINCE
    assert found["dev-before-until"].linked_at == UNTIL - US


def test_boundaries_hold_from_the_device_table_alone(app, make_user, link_at):
    """Without audit rows (the safety net) the same window rules apply."""
    uid, _, _ = make_user()
    for label, at in {"a": SINCE - US, "b": SINCE, "c": UNTIL - US, "d": UNTIL}.items():
        link_at(uid, at, device_uid=f"dev-{label}")
    with app.app_context():
        db.session.execute(delete(AuditEvent))
        db.session.commit()
    assert {row.device_uid for row in affected(app)} == {"dev-b", "dev-c"}


def test_times_without_offset_are_utc_and_offsets_are_honoured():
    assert incident.parse_time("2026-06-01T13:00") == SINCE
    assert incident.parse_time("2026-06-01T13:00:00Z") == SINCE
    assert incident.parse_time("2026-06-01T15:00:00+02:00") == SINCE
    assert incident.parse_time("2026-06-01") == datetime(2026, 6, 1, tzinfo=UTC)
    for bad in ("", "yesterday", "2026-13-01", "13:00",
                "0001-01-01T00:00+01:00", "9999-12-31T23:59-01:00"):  # past UTC's range
        with pytest.raises(ValueError):
            incident.parse_time(bad)


def test_empty_or_backwards_window_is_refused(app):
    with app.app_context():
        for since, until in ((SINCE, SINCE), (UNTIL, SINCE)):
            with pytest.raises(ValueError):
                incident.affected("ip_match", since, until)


def test_strategy_filter_and_all(app, make_user, link_at):
    uid, _, _ = make_user()
    link_at(uid, SINCE + timedelta(hours=1), "dev-ip", strategy="ip_match")
    link_at(uid, SINCE + timedelta(hours=2), "dev-code", strategy="pairing_code")
    assert [r.device_uid for r in affected(app, "ip_match")] == ["dev-ip"]
    assert [r.device_uid for r in affected(app, "pairing_code")] == ["dev-code"]
    assert {r.device_uid for r in affected(app, "all")} == {"dev-ip", "dev-code"}


# --- which source is authoritative ------------------------------------------------------------

def test_link_in_window_found_through_audit_after_relink_by_another_strategy(
        app, make_user, link_at):
    """Linked by ip_match in the window, re-linked by pairing_code in the window: the device
    row says pairing_code, the audit log remembers ip_match. The device must be found."""
    uid, _, _ = make_user()
    link_at(uid, SINCE + timedelta(hours=1), "dev-1", strategy="ip_match")
    link_at(uid, SINCE + timedelta(hours=2), "dev-1", strategy="pairing_code")
    rows = affected(app, "ip_match")
    assert [(r.device_uid, r.linked_via, r.status) for r in rows] == \
        [("dev-1", "ip_match", "active")]
    assert rows[0].linked_at == SINCE + timedelta(hours=1)
    assert rows[0].linked_from_ip == "9.9.9.9"


def test_relinked_after_the_window_is_listed_but_not_revoked(app, make_user, link_at, client,
                                                              clock):
    uid, _, _ = make_user()
    link_at(uid, SINCE + timedelta(hours=1), "dev-1")
    _, fresh_token = link_at(uid, UNTIL + timedelta(hours=1), "dev-1", strategy="pairing_code")
    rows = affected(app)
    assert [(r.device_uid, r.status, r.will_revoke) for r in rows] == \
        [("dev-1", "relinked_after", False)]
    result = revoke(app, clock)
    assert result.revoked == [] and result.notify == []
    assert client.get("/api/v1/device/me", headers={
        "Authorization": f"Bearer {fresh_token}"}).status_code == 200


def test_device_relinked_inside_the_window_from_before_it_is_affected(app, make_user, link_at):
    uid, _, _ = make_user()
    link_at(uid, SINCE - timedelta(days=3), "dev-1", strategy="pairing_code")
    link_at(uid, SINCE + timedelta(hours=1), "dev-1", strategy="ip_match")
    assert [(r.device_uid, r.status) for r in affected(app)] == [("dev-1", "active")]


# --- revoke ---------------------------------------------------------------------------------

def test_revoke_then_device_call_is_401_and_owner_sees_needs_relink(
        app, make_user, link_at, client, login, clock):
    victim_uid, victim_email, password = make_user("owner@example.org")
    stranger_uid, stranger_email, _ = make_user("stranger@example.org")
    _, outside_token = link_at(victim_uid, SINCE - timedelta(hours=1), "dev-outside",
                               name="Outside")
    pk, token = link_at(stranger_uid, SINCE + timedelta(hours=1), "dev-x", name="Voron")
    _, own_token = link_at(victim_uid, SINCE + timedelta(hours=2), "dev-y", name="Prusa")

    result = revoke(app, clock)
    assert sorted(r.device_uid for r in result.revoked) == ["dev-x", "dev-y"]
    assert [(n.email, n.device_names) for n in result.notify] == \
        [("owner@example.org", ["Prusa"]), ("stranger@example.org", ["Voron"])]

    for revoked in (token, own_token):
        response = client.get("/api/v1/device/me",
                              headers={"Authorization": f"Bearer {revoked}"})
        assert response.status_code == 401 and response.get_json()["error"] == "invalid_token"
    assert client.get("/api/v1/device/me", headers={
        "Authorization": f"Bearer {outside_token}"}).status_code == 200

    with app.app_context():
        device = db.session.get(Device, pk)
        assert device.token_hash is None and device.needs_relink and device.revoked_at
        rows = db.session.scalars(select(AuditEvent).where(
            AuditEvent.event.in_(["revocation", "incident_revoke"]))).all()
        assert sorted(r.event for r in rows) == ["incident_revoke", "revocation", "revocation"]
        assert all(r.actor == "cli" for r in rows)
        summary = next(r for r in rows if r.event == "incident_revoke")
        assert "revoked 2 device(s) of 2 account(s)" in summary.detail

    page = login(victim_email, password).get("/").get_data(as_text=True)
    assert "Needs re-link" in page
    assert page.count("Needs re-link") == 1  # "Outside" still works and has no badge


def test_needs_relink_disappears_after_the_owner_links_again(
        app, make_user, link_at, login, clock):
    uid, email, password = make_user()
    link_at(uid, SINCE + timedelta(hours=1), "dev-1")
    revoke(app, clock)
    session = login(email, password)
    assert "Needs re-link" in session.get("/").get_data(as_text=True)
    link_at(uid, UNTIL + timedelta(days=1), "dev-1", strategy="pairing_code")
    assert "Needs re-link" not in session.get("/").get_data(as_text=True)
    listed = session.get("/api/v1/devices").get_json()["devices"]
    assert [(d["id"], d["needs_relink"], d["active"]) for d in listed] == [("dev-1", False, True)]


def test_revoke_twice_is_harmless(app, make_user, link_at, clock):
    uid, _, _ = make_user()
    link_at(uid, SINCE + timedelta(hours=1), "dev-1")
    assert len(revoke(app, clock).revoked) == 1
    again = revoke(app, clock)
    assert again.revoked == [] and again.notify == []
    assert [r.status for r in affected(app)] == ["needs_relink"]


def test_unlinked_devices_are_listed_as_revoked_and_not_notified(app, make_user, link_at, clock):
    from tsd_server import devices

    uid, _, _ = make_user()
    pk, _ = link_at(uid, SINCE + timedelta(hours=1), "dev-1")
    with app.app_context():
        devices.unlink(db.session.get(Device, pk), db.session.get(User, uid))
    result = revoke(app, clock)
    assert result.revoked == []
    assert [r.status for r in affected(app)] == ["revoked"]


# --- CLI ------------------------------------------------------------------------------------

def test_cli_affected_formats(app, make_user, link_at):
    uid, email, _ = make_user("someone@example.org")
    link_at(uid, SINCE, "dev-1", name="=HYPERLINK(\"http://evil\")")
    link_at(uid, SINCE + timedelta(minutes=5), "dev-2", name="Plain\x1b[31mRed")

    table = run(app, "incident", "affected", "--strategy", "ip_match", *WINDOW)
    assert table.exit_code == 0, table.output
    assert "someone@example.org" in table.output and "dev-1" in table.output
    assert "\x1b" not in table.output  # no terminal escapes from device-chosen names

    as_csv = run(app, "incident", "affected", "--strategy", "ip_match", *WINDOW,
                 "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.output)))
    assert [r["device_uid"] for r in rows] == ["dev-1", "dev-2"]
    assert rows[0]["name"].startswith("'=")  # a spreadsheet will not run it as a formula
    assert rows[0]["email"] == email and rows[0]["account_id"] == str(uid)

    as_json = json.loads(run(app, "incident", "affected", "--strategy", "ip_match", *WINDOW,
                             "--format", "json").output)
    assert as_json["window"]["since"] == SINCE.isoformat()
    assert as_json["window"]["until_inclusive"] is False
    assert [r["device_uid"] for r in as_json["affected"]] == ["dev-1", "dev-2"]
    assert as_json["affected"][0]["linked_at"] == SINCE.isoformat()
    assert as_json["affected"][0]["linked_from_ip"] == "9.9.9.9"


def test_cli_affected_csv_cleans_control_characters_of_old_rows(app, make_user, link_at):
    """A name or email stored before the control-character rule reaches the CSV cleaned as
    the table cleans it: the CSV is read with cat and less too, and an OSC sequence or a
    C1 CSI is not stripped by anything on the way (an escape could retitle, recolour or
    rewrite the operator's terminal)."""
    uid, _, _ = make_user("someone@example.org")
    pk, _ = link_at(uid, SINCE, "dev-1")
    with app.app_context():  # as an older release could have stored them
        db.session.execute(update(Device).where(Device.id == pk).values(
            name="ok\x1b]0;pwned\x07\x9b2J\r\nEVIL \u05e9\u200f\xa0\U0001f468\u200d\U0001f469"))
        db.session.execute(update(User).where(User.id == uid).values(
            email="some\x1b[8mone@example.org"))
        db.session.commit()
    as_csv = run(app, "incident", "affected", "--strategy", "ip_match", *WINDOW,
                 "--format", "csv")
    assert as_csv.exit_code == 0, as_csv.output
    [row] = list(csv.DictReader(io.StringIO(as_csv.output)))
    # What names may hold (a right-to-left mark, a no-break space, an emoji joiner) stays.
    assert (row["name"], row["email"]) == (
        "ok?]0;pwned??2J??EVIL \u05e9\u200f\xa0\U0001f468\u200d\U0001f469",
        "some?[8mone@example.org")
    assert not any(ch in as_csv.output for ch in "\x1b\x07\x9b")


def test_cli_times_without_offset_mean_utc(app, make_user, link_at):
    uid, _, _ = make_user()
    link_at(uid, SINCE, "dev-1")
    out = run(app, "incident", "affected", "--strategy", "all", "--since", "2026-06-01T13:00",
              "--until", "2026-06-01T13:00:00.000001", "--format", "json").output
    assert [r["device_uid"] for r in json.loads(out)["affected"]] == ["dev-1"]
    out = run(app, "incident", "affected", "--strategy", "all",
              "--since", "2026-06-01T15:00:00.000001+02:00", "--until", "2026-06-02",
              "--format", "json").output
    assert json.loads(out)["affected"] == []


def test_cli_revoke_is_a_dry_run_without_yes(app, make_user, link_at, client, clock):
    uid, _, _ = make_user("owner@example.org")
    _, token = link_at(uid, SINCE + timedelta(hours=1), "dev-1", name="Prusa")
    window_ended(clock)
    dry = run(app, "incident", "revoke", "--strategy", "ip_match", *WINDOW)
    assert dry.exit_code == 0, dry.output
    assert "DRY RUN" in dry.output and "owner@example.org" in dry.output
    assert client.get("/api/v1/device/me", headers={
        "Authorization": f"Bearer {token}"}).status_code == 200

    real = run(app, "incident", "revoke", "--strategy", "ip_match", *WINDOW, "--yes")
    assert real.exit_code == 0, real.output
    assert "Revoked 1 device(s)" in real.output
    assert "owner@example.org" in real.output and "Prusa" in real.output
    assert client.get("/api/v1/device/me", headers={
        "Authorization": f"Bearer {token}"}).status_code == 401


@pytest.mark.parametrize("args", [
    ["--strategy", "ip-match", *WINDOW],
    ["--strategy", "ip_match", "--since", "noon", "--until", UNTIL.isoformat()],
    ["--strategy", "ip_match", "--since", UNTIL.isoformat(), "--until", SINCE.isoformat()],
    ["--strategy", "ip_match", "--since", SINCE.isoformat()],
    ["--strategy", "ip_match", "--since", "0001-01-01T00:00+01:00", "--until",
     UNTIL.isoformat()],
])
def test_cli_bad_arguments_are_usage_errors_and_change_nothing(app, make_user, link_at, args,
                                                              clock):
    uid, _, _ = make_user()
    _, token = link_at(uid, SINCE + timedelta(hours=1), "dev-1")
    window_ended(clock)
    result = run(app, "incident", "revoke", *args, "--yes")
    assert result.exit_code == 2, result.output
    with app.app_context():
        assert db.session.scalar(select(Device)).token_hash is not None


def test_many_devices_are_read_in_chunks_without_losing_any(app, make_user, link_at,
                                                           monkeypatch, clock):
    monkeypatch.setattr(incident, "CHUNK", 2)
    uid, _, _ = make_user()
    for index in range(5):
        link_at(uid, SINCE + timedelta(minutes=index), f"dev-{index}")
    assert [r.device_uid for r in affected(app)] == [f"dev-{i}" for i in range(5)]
    assert len(revoke(app, clock).revoked) == 5
