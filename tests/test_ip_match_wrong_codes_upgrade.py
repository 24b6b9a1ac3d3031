"""Migrations 0009 and 0010: counts of voided offers (0007) become counts of wrong codes
(0009), which then move from the announcements to a table keyed by device_uid (0010); a
printer locked before the upgrades stays locked until the same moment. Both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, text

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
    from tsd_server.extensions import db

    with old_app.app_context():
        upgrade(revision="0008")
        with db.engine.begin() as conn:
            for number, voids in enumerate((3, 1, 0), start=1):
                add_announcement(conn, number, voids)
        upgrade(revision="0009")
        assert counts(db, "wrong_codes", "last_wrong_code_at") == [
            (1, 9, AT), (2, 3, AT), (3, 0, None)]
        downgrade(revision="0008")
        assert counts(db, "wrong_code_voids", "wrong_code_voids_since") == [
            (1, 3, AT), (2, 1, AT), (3, 0, None)]


def count_rows(db) -> list[tuple]:
    """(device_uid, count, time) of ip_match_wrong_codes, the time as text."""
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT device_uid, wrong_codes, last_wrong_code_at "
                                 "FROM ip_match_wrong_codes ORDER BY device_uid"))
        return [(uid, value, at if at is None else str(at)[:19]) for uid, value, at in rows]


def test_upgrade_0010_moves_the_counts_to_their_own_table_and_back(old_app):  # noqa: F811
    """0010: the counts leave the announcements for a table keyed by device_uid; a printer
    locked before the upgrade stays locked until the same moment (as 0007 had it, a day
    after the first void); the downgrade puts them back on the same device's announcement."""
    from tsd_server.discovery.ip_match import wrong_codes
    from tsd_server.extensions import db

    with old_app.app_context():
        upgrade(revision="0008")
        with db.engine.begin() as conn:
            for number, voids in enumerate((3, 1, 0), start=1):
                add_announcement(conn, number, voids)
        upgrade(revision="0009")
        upgrade(revision="0010")
        assert count_rows(db) == [("tsd-upgrade-1", 9, AT), ("tsd-upgrade-2", 3, AT)]
        columns = {c["name"] for c in inspect(db.engine).get_columns("ip_match_announcements")}
        assert not columns & {"wrong_codes", "last_wrong_code_at"}
        later = SINCE.replace(tzinfo=UTC) + timedelta(hours=1)
        assert wrong_codes.locked_until("tsd-upgrade-1", later) == \
            SINCE.replace(tzinfo=UTC) + wrong_codes.WINDOW
        assert wrong_codes.locked_until("tsd-upgrade-2", later) is None
        # The app counts in the new table: one more wrong code for printer 2, and one for a
        # device that has no announcement (linked since, say): that count is lost downgrading.
        for uid in ("tsd-upgrade-2", "tsd-upgrade-9"):
            assert wrong_codes.hold(uid, later)
            wrong_codes.count_wrong(uid, later)
        db.session.commit()
        at_later = str(later.replace(tzinfo=None))[:19]
        assert count_rows(db) == [("tsd-upgrade-1", 9, AT), ("tsd-upgrade-2", 4, at_later),
                                  ("tsd-upgrade-9", 1, at_later)]
        db.session.remove()
        downgrade(revision="0009")
        assert "ip_match_wrong_codes" not in inspect(db.engine).get_table_names()
        assert counts(db, "wrong_codes", "last_wrong_code_at") == [
            (1, 9, AT), (2, 4, at_later), (3, 0, None)]
        upgrade(revision="0010")  # and up again
        assert count_rows(db) == [("tsd-upgrade-1", 9, AT), ("tsd-upgrade-2", 4, at_later)]
