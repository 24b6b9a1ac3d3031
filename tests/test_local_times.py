"""Times on the pages are written in UTC, saying so, inside <time datetime="...Z"> for
static/local_time.js to rewrite into the reader's zone (tests/browser/test_local_times.py
runs it); the script is a file, so the Content-Security-Policy stays as strict.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import update

from tsd_server.extensions import db
from tsd_server.models import Device
from tsd_server.security_headers import CSP
from tsd_server.web import times

LINKED_AT = datetime(2026, 1, 15, 20, 45, 10, tzinfo=UTC)


def test_a_time_reads_in_utc_whatever_zone_it_comes_in():
    kolkata = LINKED_AT.astimezone(timezone(timedelta(hours=5, minutes=30)))
    for at in (LINKED_AT, kolkata, LINKED_AT.replace(tzinfo=None)):
        assert times.utc_datetime_attribute(at) == "2026-01-15T20:45:10Z"
        assert times.utc_text(at) == "2026-01-15 20:45 UTC"
        assert times.utc_text(at, "seconds") == "2026-01-15 20:45:10 UTC"
        assert times.utc_text(at, "time") == "20:45:10 UTC"


def test_my_printers_writes_link_times_for_the_script(app, make_user, login, link_device):
    user_id, email, password = make_user()
    pk, _ = link_device(user_id)
    with app.app_context():
        db.session.execute(update(Device).where(Device.id == pk).values(linked_at=LINKED_AT))
        db.session.commit()
    html = login(email, password).get("/").get_data(as_text=True)
    assert ('<time datetime="2026-01-15T20:45:10Z" data-local-time="datetime">'
            '2026-01-15 20:45 UTC</time>') in html


def test_the_script_is_a_file_and_the_policy_allows_no_inline_script(app, client):
    response = client.get("/login")
    html = response.get_data(as_text=True)
    assert re.search(r'<script src="/static/local_time\.js\?v=[0-9a-f]{16}" defer></script>',
                     html)
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []  # none inline
    assert response.headers["Content-Security-Policy"] == CSP
    assert "script-src 'self';" in CSP and "unsafe" not in CSP
