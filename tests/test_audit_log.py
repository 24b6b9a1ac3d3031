"""The audit log page: newest first, filters, pages; rows written with the change they record."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, select

from tsd_server import audit
from tsd_server.admin import audit_log
from tsd_server.client_address import ClientAddress
from tsd_server.extensions import db
from tsd_server.models import AuditEvent

START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ROW_ID = re.compile(r'data-event-id="(\d+)"')


@pytest.fixture
def admin(app, make_user, login):
    """An admin's browser. Its own ``login`` row is taken out again: the listings below
    hold the test's events only."""
    _, email, password = make_user("root@example.org", is_admin=True)
    session = login(email, password)
    with app.app_context():
        db.session.execute(delete(AuditEvent).where(AuditEvent.event == "login"))
        db.session.commit()
    return session


@pytest.fixture
def events(app, clock, make_user):
    """Five events a minute apart; returns their ids oldest first."""
    alice, _, _ = make_user("Alice@Example.org")
    address = ClientAddress(client_ip="9.9.9.9", peer_ip="1.1.1.1",
                            forwarded_for=("9.9.9.9",), household="9.9.9.9/32")
    specs = [
        ("link", "ok", f"user:{alice}", alice, "ip_match"),
        ("link_failed", "strategy_disabled", f"user:{alice}", alice, "qr_code"),
        ("flag_toggle", "disabled", "admin:1", None, "ip_match"),
        ("flag_toggle", "enabled", "cli", None, "all"),
        ("breaker_trip", "ok", "auto", None, "ip_match"),
    ]
    ids = []
    with app.app_context():
        for index, (event, outcome, actor, user_id, strategy) in enumerate(specs):
            clock.now = START + timedelta(minutes=index)
            row = audit.record(event, actor=actor, outcome=outcome, user_id=user_id,
                               strategy=strategy, address=address, detail=f"detail {index}")
            db.session.commit()
            ids.append(row.id)
    return ids


def listed(session, **query) -> list[int]:
    response = session.get("/admin/audit", query_string=query)
    assert response.status_code == 200, response.get_data(as_text=True)
    return [int(i) for i in ROW_ID.findall(response.get_data(as_text=True))]


def test_newest_first_with_every_column(admin, events):
    assert listed(admin) == list(reversed(events))
    page = admin.get("/admin/audit").get_data(as_text=True)
    for value in ("9.9.9.9", "1.1.1.1", "9.9.9.9/32", "alice@example.org", "detail 4",
                  "2026-06-01 12:04:00"):
        assert value in page


@pytest.mark.parametrize(("query", "expected"), [
    ({"event": "flag_toggle"}, [3, 2]),
    ({"strategy": "ip_match"}, [4, 2, 0]),
    ({"outcome": "strategy_disabled"}, [1]),
    ({"actor": "auto"}, [4]),
    ({"actor": "admin:1"}, [2]),
    ({"email": "ALICE@example.org "}, [1, 0]),
    ({"email": "nobody@example.org"}, []),
    ({"event": "flag_toggle", "actor": "cli"}, [3]),
    # since inclusive, until exclusive
    ({"since": "2026-06-01T12:02:00Z"}, [4, 3, 2]),
    ({"until": "2026-06-01T12:02:00Z"}, [1, 0]),
    ({"since": "2026-06-01T12:01:00", "until": "2026-06-01T12:01:00.000001"}, [1]),
    ({"since": "2026-06-01T14:02:00+02:00"}, [4, 3, 2]),
])
def test_filters(admin, events, query, expected):
    assert listed(admin, **query) == [events[i] for i in expected]


@pytest.mark.parametrize("query", [
    {"since": "yesterday"}, {"until": "2026-13-01"}, {"event": "x" * 33},
    # Valid ISO 8601, but outside datetime's range once converted to UTC.
    {"since": "0001-01-01T00:00+01:00"}, {"until": "9999-12-31T23:59-01:00"},
])
def test_bad_filters_are_form_errors_not_500(admin, events, query):
    response = admin.get("/admin/audit", query_string=query)
    assert response.status_code == 400
    assert ROW_ID.findall(response.get_data(as_text=True)) == []
    assert 'class="error"' in response.get_data(as_text=True)


def test_pagination_keeps_filters_and_order(app, admin, clock):
    total = audit_log.PER_PAGE + 7
    with app.app_context():
        for index in range(total):
            clock.now = START + timedelta(seconds=index)
            audit.record("link", actor="cli", strategy="qr_code", detail=str(index))
        audit.record("link", actor="cli", strategy="ip_match")
        db.session.commit()
    first = admin.get("/admin/audit", query_string={"strategy": "qr_code"})
    first_ids = [int(i) for i in ROW_ID.findall(first.get_data(as_text=True))]
    assert len(first_ids) == audit_log.PER_PAGE
    html = first.get_data(as_text=True)
    assert f"{total} event(s), page 1 of 2" in html
    assert "page=2" in html and "strategy=qr_code" in html
    second_ids = listed(admin, strategy="qr_code", page="2")
    assert len(second_ids) == 7
    assert first_ids + second_ids == sorted(first_ids + second_ids, reverse=True)
    # Keys that are not filters stay out of the pager's links: url_for would take them as
    # its own arguments (a TypeError for endpoint, a BuildError for _method: 500s).
    stray = {"endpoint": "x", "_method": "POST", "_external": "1", "_scheme": "https",
             "junk": "1"}
    answer = admin.get("/admin/audit", query_string={"strategy": "qr_code", **stray})
    assert answer.status_code == 200
    links = re.findall(r'href="(/admin/audit\?[^"]*)"', answer.get_data(as_text=True))
    assert links and all("strategy=qr_code" in link for link in links)
    assert not any(key in link for link in links for key in stray)
    # Out-of-range and junk page numbers land on a real page.
    assert listed(admin, strategy="qr_code", page="99") == second_ids
    assert listed(admin, strategy="qr_code", page="-1") == first_ids
    assert listed(admin, strategy="qr_code", page="abc") == first_ids


def test_the_count_stops_where_the_pages_stop(app, admin, clock, monkeypatch):
    """A log past the last page is not counted to its end (a scan that grows with it): the
    page says "More than", and ``until`` reaches the older rows."""
    monkeypatch.setattr(audit_log, "MAX_PAGE", 1)
    with app.app_context():
        for index in range(audit_log.PER_PAGE + 3):
            clock.now = START + timedelta(seconds=index)
            audit.record("link", actor="cli", strategy="qr_code", detail=str(index))
        db.session.commit()
    html = admin.get("/admin/audit").get_data(as_text=True)
    assert f"More than {audit_log.PER_PAGE} event(s). Newest first." in html
    assert 'rel="next"' not in html
    first_ids = listed(admin)
    assert len(first_ids) == audit_log.PER_PAGE
    assert listed(admin, page="2") == first_ids
    older = admin.get("/admin/audit", query_string={
        "until": (START + timedelta(seconds=3)).isoformat()})
    assert "3 event(s). Newest first." in older.get_data(as_text=True)
    assert "More than" not in older.get_data(as_text=True)
    assert set(ROW_ID.findall(older.get_data(as_text=True))).isdisjoint(map(str, first_ids))


def test_attacker_chosen_text_is_escaped(app, admin, clock):
    with app.app_context():
        audit.record("link_failed", actor="device:1", outcome="refused",
                     device_uid="<img src=x onerror=alert(1)>",
                     detail="<script>alert(1)</script>")
        db.session.commit()
    page = admin.get("/admin/audit").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page and "<img src=x" not in page
    assert "&lt;script&gt;" in page


def test_non_admin_cannot_read_the_audit_log(make_user, login, events):
    _, email, password = make_user("member@example.org")
    assert login(email, password).get("/admin/audit").status_code == 403


@pytest.mark.parametrize("explicit_address", [True, False])
def test_record_now_writes_the_row_record_adds(app, clock, make_user, explicit_address):
    """``record_now`` (one statement, committed at once) keeps ``record``'s every field:
    the address given or the request's, the owner, and the detail cut to MAX_DETAIL."""
    from tsd_server.models import AuditEvent

    user_id, _, _ = make_user()
    address = ClientAddress(client_ip="9.9.9.9", peer_ip="1.1.1.1",
                            forwarded_for=("9.9.9.9",), household="9.9.9.9/32")
    fields = dict(actor=f"user:{user_id}", outcome="refused", user_id=user_id,
                  device_uid="printer-0001", strategy="pairing_code",
                  address=address if explicit_address else None,
                  detail="x" * (audit.MAX_DETAIL + 10))
    with app.test_request_context(environ_base={"REMOTE_ADDR": "8.8.4.4"}):
        audit.record("probe", **fields)
        db.session.commit()
        audit.record_now("probe", **fields)
        first, second = [
            {column: getattr(row, column) for column in AuditEvent.__table__.columns.keys()
             if column != "id"}
            for row in db.session.scalars(select(AuditEvent).where(AuditEvent.event == "probe")
                                          .order_by(AuditEvent.id))]
    assert first == second
    assert first["client_ip"] == ("9.9.9.9" if explicit_address else "8.8.4.4")
    assert len(first["detail"]) == audit.MAX_DETAIL and first["at"] == clock()


# Functions whose first argument is the event they write (audit.record and the
# wrappers that pass theirs on), and constants that name an event written elsewhere.
WRITERS = {"record", "record_now", "record_many", "_refuse", "_checked_user"}


def events_written_by_the_code() -> set[str]:
    import ast
    from pathlib import Path

    from tsd_server import audit_retention
    from tsd_server.discovery.pairing import failure_breaker

    root = Path(audit_log.__file__).resolve().parent.parent
    events = {audit_retention.PRUNED, failure_breaker.EVENT}
    for path in root.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = getattr(node.func, "attr", getattr(node.func, "id", None))
            first = node.args[0]
            if (name in WRITERS and isinstance(first, ast.Constant)
                    and isinstance(first.value, str)):
                events.add(first.value)
    return events


def test_the_page_names_every_event_the_server_writes(admin):
    written = events_written_by_the_code()
    assert len(written) >= 30  # the scan finds the writers at all
    assert written == set(audit_log.KNOWN_EVENTS)
    hint = admin.get("/admin/audit").get_data(as_text=True)
    for event in written:
        assert re.search(rf"[ ,]{event}[,.]", hint), event
