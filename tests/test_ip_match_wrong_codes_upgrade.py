"""Migration 0009: counts of voided offers (0007) become counts of wrong codes, and a
printer locked before the upgrade stays locked until the same moment. Both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask_migrate import downgrade, upgrade
from sqlalchemy import text

from tests.test_upgrade_path import fresh_url, old_app  # noqa: F401 - fixtures

SINCE = datetime(2026, 6, 1, 12, 0)  # stored naive UTC
AT = "2026-06-01 12:00:00"


def add_announcement(conn, number: int, voids: int) -> None:
    conn.execute(text(
        "INSERT INTO ip_match_announcements (id, device_uid, secret_hash, household, "
        "client_ip, name, first_seen_at, last_seen_at, wrong_code_voids, "
        "wrong_code_voids_since) VALUES (:id, :uid, :hash, '8.8.8.8/32', '8.8.8.8', "
        "'Printer', :at, :at, :voids, :since)"),
        {"id": number, "uid": f"tsd-upgrade-{number}", "hash": "0" * 64, "at": SINCE,
         "voids": voids, "since": SINCE if voids else None})


def counts(db, count: str, time: str) -> list[tuple]:
    """(id, count, time) with the time as text: SQLite's raw rows give it as text."""
    with db.engine.connect() as conn:
        rows = conn.execute(text(
            f"SELECT id, {count}, {time} FROM ip_match_announcements ORDER BY id"))
        return [(number, value, at if at is None else str(at)[:19])
                for number, value, at in rows]


def test_upgrade_0009_carries_the_counts_over_and_back(old_app):  # noqa: F811
    from tsd_server.discovery.ip_match import wrong_codes
    from tsd_server.extensions import db
    from tsd_server.models.ip_match import Announcement

    with old_app.app_context():
        upgrade(revision="0008")
        with db.engine.begin() as conn:
            for number, voids in enumerate((3, 1, 0), start=1):
                add_announcement(conn, number, voids)
        upgrade(revision="0009")
        assert counts(db, "wrong_codes", "last_wrong_code_at") == [
            (1, 9, AT), (2, 3, AT), (3, 0, None)]
        later = SINCE.replace(tzinfo=UTC) + timedelta(hours=1)
        locked = db.session.get(Announcement, 1)
        assert wrong_codes.locked_until(locked, later) == SINCE.replace(tzinfo=UTC) + \
            wrong_codes.WINDOW  # as 0007 had it: a day after the first void
        assert wrong_codes.locked_until(db.session.get(Announcement, 2), later) is None
        db.session.remove()
        downgrade(revision="0008")
        assert counts(db, "wrong_code_voids", "wrong_code_voids_since") == [
            (1, 3, AT), (2, 1, AT), (3, 0, None)]
