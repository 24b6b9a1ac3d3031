"""Unlinking one printer from the dashboard asks first: ``GET /printers/<pk>/unlink`` names
the printer and holds the POST form (CSRF token) and a Cancel link; the POST unlinks, once,
for its owner only. A repeat or a printer revoked meanwhile gets a clear message, not a 404
or a 500. tests/browser/test_unlinking.py walks the same pages in chromium.
"""

from __future__ import annotations

import re
from html import unescape

import pytest
from sqlalchemy import event, func, select, update

from tests.support.pairing import me
from tsd_server.clock import utcnow
from tsd_server.extensions import db
from tsd_server.models import AuditEvent, Device

NOT_LINKED = "The printer “all printers” is not linked any more; nothing was changed."


@pytest.fixture
def owner(make_user, login, link_device):
    """(logged-in session, printer pk, its token) of a printer named "all printers"."""
    user_id, email, password = make_user()
    pk, token = link_device(user_id, name="all printers")
    return login(email, password), pk, token


def page_text(response) -> str:
    return unescape(response.get_data(as_text=True))


def revocations(app, pk: int) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.event == "revocation", AuditEvent.device_id == pk))


def test_the_dashboard_only_links_to_the_page_that_asks(app, owner):
    session, pk, _ = owner
    html = page_text(session.get("/"))
    assert f'action="/printers/{pk}/unlink"' not in html  # no one-press unlink left
    assert re.search(rf'<a class="button secondary" href="/printers/{pk}/unlink"\s+'
                     r'aria-label="Unlink the printer “all printers”">Unlink</a>', html)


def test_the_asking_page_names_the_printer_and_unlinks_nothing(app, client, owner):
    session, pk, token = owner
    page = session.get(f"/printers/{pk}/unlink")
    assert page.status_code == 200
    html = page_text(page).split("<main>", 1)[1]  # not the header's Log out form
    assert "<h1>Unlink the printer “all printers”?</h1>" in html
    form = re.search(r'<form method="post" action="([^"]+)"[^>]*>(.*?)</form>', html, re.S)
    assert form and form.group(1) == f"/printers/{pk}/unlink"
    assert 'name="csrf_token"' in form.group(2)
    assert "Yes, unlink the printer “all printers”</button>" in form.group(2)
    assert '<a class="button secondary" href="/">Cancel</a>' in form.group(2)
    assert me(client, token).status_code == 200
    assert revocations(app, pk) == 0


def test_the_confirmation_unlinks_once_and_a_repeat_says_so(app, client, owner):
    session, pk, token = owner
    first = session.form_post(f"/printers/{pk}/unlink", {})
    assert first.status_code == 302 and first.location == "/"
    assert "The printer “all printers” is unlinked" in page_text(session.get("/"))
    assert me(client, token).status_code == 401

    # The same form sent again (a second tab, a double press without JavaScript).
    again = session.form_post(f"/printers/{pk}/unlink", {})
    assert again.status_code == 302 and again.location == "/"
    assert NOT_LINKED in page_text(session.get("/"))
    asked = session.get(f"/printers/{pk}/unlink")  # the asking page, opened again
    assert asked.status_code == 302 and asked.location == "/"
    assert NOT_LINKED in page_text(session.get("/"))
    assert revocations(app, pk) == 1  # audited once


def test_a_printer_revoked_by_an_incident_keeps_its_relink_badge(app, owner):
    from tsd_server import devices

    session, pk, _ = owner
    with app.app_context():
        devices.revoke_token(db.session.get(Device, pk), actor="cli", detail="incident",
                             needs_relink=True)
        db.session.commit()
    answer = session.form_post(f"/printers/{pk}/unlink", {})
    assert answer.status_code == 302
    assert NOT_LINKED in page_text(session.get("/"))
    with app.app_context():
        assert db.session.get(Device, pk).needs_relink is True
    assert revocations(app, pk) == 1  # the incident's only


def unlink_with_a_change_before_its_first_write(app, session, pk: int, **values):
    """POST the unlink, and just before its first write (after it has read the printer)
    commit ``values`` to the printer's row on another connection, as the CLI or another
    request would. Returns the answer."""
    changed = []

    def change_first(conn, cursor, statement, parameters, context, executemany):
        if changed or not statement.lstrip().upper().startswith(("UPDATE", "INSERT")):
            return
        changed.append(True)  # before its own UPDATE passes through here
        with db.engine.connect() as other:
            other.execute(update(Device).where(Device.id == pk).values(**values))
            other.commit()

    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", change_first)
        try:
            answer = session.form_post(f"/printers/{pk}/unlink", {})
        finally:
            event.remove(db.engine, "before_cursor_execute", change_first)
    assert changed  # the interleaving really happened
    return answer


def test_an_incident_revoke_between_the_unlinks_read_and_its_write_keeps_the_badge(app, owner):
    """The race the docstring of ``devices.unlink`` names: an incident revoke (which takes
    no account lock) commits on another connection after the unlink has read the printer
    and just before the unlink's first write. The unlink must then change nothing: before
    the write decided it, it cleared the incident's re-link badge and audited a second
    revocation (on SQLite and on PostgreSQL alike)."""
    session, pk, _ = owner
    answer = unlink_with_a_change_before_its_first_write(
        app, session, pk, token_hash=None, needs_relink=True, revoked_at=utcnow())
    assert answer.status_code == 302
    assert NOT_LINKED in page_text(session.get("/"))
    with app.app_context():
        assert db.session.get(Device, pk).needs_relink is True
    assert revocations(app, pk) == 0  # no "unlinked by owner" row for a printer it did not unlink


def test_the_unlinks_audit_row_names_the_way_the_printer_is_linked_at_the_write(app, owner):
    """Re-linked in place through another way (here: its QR code) after the unlink read
    it: the unlink revokes the new link, and its audit row says so, not the old way."""
    session, pk, _ = owner
    answer = unlink_with_a_change_before_its_first_write(
        app, session, pk, linked_via="qr_code", token_hash="0" * 64)
    assert answer.status_code == 302
    with app.app_context():
        row = db.session.scalars(select(AuditEvent).where(
            AuditEvent.event == "revocation", AuditEvent.device_id == pk)).one()
    assert (row.strategy, row.detail) == ("qr_code", "unlinked by owner")


def test_forged_or_foreign_unlinks_change_nothing(app, client, owner, make_user, login):
    session, pk, token = owner
    assert session.client.post(f"/printers/{pk}/unlink").status_code == 400  # no CSRF token
    assert session.client.post(f"/printers/{pk}/unlink",
                               data={"csrf_token": "forged"}).status_code == 400
    _, email, password = make_user()
    stranger = login(email, password)
    assert stranger.get(f"/printers/{pk}/unlink").status_code == 404
    assert stranger.form_post(f"/printers/{pk}/unlink", {}).status_code == 404
    for number in ("0", str(2**31), "9" * 40):
        assert session.get(f"/printers/{number}/unlink").status_code == 404
    assert client.get(f"/printers/{pk}/unlink").status_code == 302  # logged out: log in
    assert me(client, token).status_code == 200
    assert revocations(app, pk) == 0
