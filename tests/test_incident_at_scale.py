"""Incident response at the scale of a real incident: what changed so that a window of tens
of thousands of devices can be listed and revoked (docs/performance.md, "Incident response
at scale"). Behaviour only; how fast is the bench's business (bench/incident_scale.py)."""

from __future__ import annotations

import csv
import io
import secrets
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, insert, select

from tsd_server import incident
from tsd_server.admin import views
from tsd_server.discovery.link_service import link_device
from tsd_server.extensions import db
from tsd_server.models import AuditEvent, Device, PairingCode, User

SINCE = datetime(2026, 6, 1, 13, 0, tzinfo=UTC)
UNTIL = datetime(2026, 6, 1, 21, 0, tzinfo=UTC)
WINDOW = {"strategy": "ip_match", "since": "2026-06-01T13:00:00Z",
          "until": "2026-06-01T21:00:00Z"}
DEVICES = 5
SHOWN = 3
WEB_CODES = 4


@pytest.fixture
def window_of_five(app, make_user, clock):
    """Five printers of five accounts linked by ip_match in the window; the last one linked
    again by pairing_code later in the window (its token is still from before ``until``)."""
    pks = []
    for index in range(DEVICES):
        owner, _, _ = make_user(f"owner{index}@example.org")
        clock.now = SINCE + timedelta(minutes=10 * (index + 1))
        pks.append(_link(app, owner, f"printer-{index}", "ip_match"))
    clock.now = SINCE + timedelta(hours=2)
    _link(app, owner, f"printer-{DEVICES - 1}", "pairing_code")
    clock.now = UNTIL + incident.SETTLED
    return pks


def _link(app, owner: int, device_uid: str, strategy: str) -> int:
    with app.test_request_context(environ_base={"REMOTE_ADDR": "203.0.113.10"}):
        return link_device(owner=db.session.get(User, owner), device_uid=device_uid,
                           name=f"Name {device_uid}", model=None, strategy=strategy,
                           actor=f"user:{owner}", address=None).device.id


@pytest.fixture
def loads(app):
    """How many Device and User objects the ORM builds from rows meanwhile."""
    counted = {"Device": 0, "User": 0}

    def count(target, _context) -> None:
        counted[type(target).__name__] += 1

    event.listen(Device, "load", count)
    event.listen(User, "load", count)
    yield counted
    event.remove(Device, "load", count)
    event.remove(User, "load", count)


def test_listing_and_revoking_a_window_builds_no_object_per_device(app, window_of_five,
                                                                    loads, monkeypatch):
    """At 50,000 devices an ORM object per device and per owner was most of a revoke's
    time and memory; the rows are read as columns and written in bulk, a chunk at a time."""
    monkeypatch.setattr(incident, "CHUNK", 2)
    with app.app_context():
        assert len(incident.affected("ip_match", SINCE, UNTIL)) == DEVICES
        result = incident.revoke("ip_match", SINCE, UNTIL, actor="cli")
    assert len(result.revoked) == DEVICES
    assert loads == {"Device": 0, "User": 0}


def test_a_revoke_builds_one_audit_object_however_many_rows_it_writes(app, window_of_five):
    """Thousands of withdrawn links and revoked devices: their audit rows go in bulk, and
    only the run's own ``incident_revoke`` row is an ORM object."""
    with app.app_context():
        owner = db.session.scalar(select(User.id).limit(1))
        db.session.execute(insert(PairingCode), [
            {"code_hash": secrets.token_hex(32), "user_id": owner,
             "created_at": UNTIL - timedelta(minutes=1),
             "expires_at": UNTIL + timedelta(minutes=10)} for _ in range(WEB_CODES)])
        db.session.commit()
    built = []

    def note(_target, _args, kwargs) -> None:
        built.append(kwargs.get("event"))

    event.listen(AuditEvent, "init", note)
    try:
        with app.app_context():
            result = incident.revoke("all", SINCE, UNTIL, actor="cli")
            withdrawn = db.session.scalars(select(AuditEvent.detail).where(
                AuditEvent.outcome == "withdrawn")).all()
    finally:
        event.remove(AuditEvent, "init", note)
    assert len(result.revoked) == DEVICES and result.withdrawn == WEB_CODES
    assert len(withdrawn) == WEB_CODES
    assert all(detail.startswith("unused web code issued") for detail in withdrawn)
    assert built == ["incident_revoke"]


def test_a_bulk_revoke_leaves_each_device_and_audit_row_as_revoking_it_alone_did(
        app, window_of_five, monkeypatch):
    monkeypatch.setattr(incident, "CHUNK", 2)
    with app.app_context():
        incident.revoke("ip_match", SINCE, UNTIL, actor="cli")
        for device in db.session.scalars(select(Device).where(Device.id.in_(window_of_five))):
            assert device.token_hash is None and device.needs_relink
            assert device.revoked_at == UNTIL + incident.SETTLED
        rows = db.session.scalars(select(AuditEvent).where(
            AuditEvent.event == "revocation").order_by(AuditEvent.device_id)).all()
        owners = {device.id: device.owner_id for device in db.session.scalars(select(Device))}
    assert [row.device_id for row in rows] == sorted(window_of_five)
    for index, row in enumerate(rows):
        assert row.user_id == owners[row.device_id]
        assert row.device_uid == f"printer-{index}"
        assert row.actor == "cli" and row.outcome == "ok"
        assert row.detail.startswith("incident revoke: ip_match links in [")
    # The audit row names the device's current way of linking, as revoke_token did.
    assert [row.strategy for row in rows] == ["ip_match"] * (DEVICES - 1) + ["pairing_code"]


def test_the_incident_page_lists_at_most_so_many_and_links_to_the_full_csv(
        admin, window_of_five, monkeypatch):
    monkeypatch.setattr(views, "SHOWN_ROWS", SHOWN)
    page = admin.get("/admin/incident", query_string=WINDOW).get_data(as_text=True)
    assert f"{DEVICES} device(s) linked by ip_match" in page
    assert page.count("data-device-pk=") == SHOWN
    assert f"Showing the first {SHOWN} of {DEVICES} devices" in page
    assert "/admin/incident/affected.csv?" in page
    assert f"Revoke {DEVICES} device(s)" in page


def test_the_csv_download_holds_every_device_of_the_window(admin, window_of_five,
                                                           monkeypatch):
    monkeypatch.setattr(views, "SHOWN_ROWS", SHOWN)
    answer = admin.get("/admin/incident/affected.csv", query_string=WINDOW)
    assert answer.status_code == 200 and answer.mimetype == "text/csv"
    assert "attachment" in answer.headers["Content-Disposition"]
    assert answer.headers["Cache-Control"] == "no-store"
    rows = list(csv.DictReader(io.StringIO(answer.get_data(as_text=True))))
    assert sorted(int(row["device_pk"]) for row in rows) == sorted(window_of_five)
    assert {row["email"] for row in rows} == {f"owner{i}@example.org" for i in range(DEVICES)}


def test_an_invalid_csv_query_goes_back_to_the_page(admin, window_of_five):
    answer = admin.get("/admin/incident/affected.csv", query_string={**WINDOW, "since": "x"})
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/admin/incident")


def test_confirmation_and_result_pages_count_everything_and_show_at_most_so_many(
        app, admin, window_of_five, monkeypatch):
    monkeypatch.setattr(views, "SHOWN_ROWS", SHOWN)
    confirm = admin.form_post("/admin/incident/revoke", WINDOW).get_data(as_text=True)
    assert f"Revoke {DEVICES} device(s)?" in confirm
    assert f"Yes, revoke {DEVICES} device(s)" in confirm
    assert confirm.count("data-device-pk=") == SHOWN
    assert confirm.count("<li><strong>owner") == SHOWN
    assert f"People to notify ({DEVICES})" in confirm
    assert f"Showing the first {SHOWN} of {DEVICES} accounts to notify" in confirm
    done = admin.form_post("/admin/incident/revoke", {**WINDOW, "confirm": "yes"})
    page = done.get_data(as_text=True)
    assert done.status_code == 200 and f"Revoked {DEVICES} device(s)" in page
    assert page.count("data-device-pk=") == SHOWN
    assert page.count("<li><strong>owner") == SHOWN
    assert "/admin/incident/affected.csv?" in page
    with app.app_context():  # every one revoked, not only those shown
        assert db.session.scalar(select(db.func.count()).select_from(Device).where(
            Device.needs_relink.is_(True))) == DEVICES


@pytest.fixture
def admin(make_user, login):
    _, email, password = make_user("root@example.org", is_admin=True)
    return login(email, password)
