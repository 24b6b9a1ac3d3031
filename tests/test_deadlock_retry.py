"""Operator actions that PostgreSQL ends as a deadlock's victim run again, and finish.

``flask delete-account`` locks the account's row, then its printers; an incident revoke
locks the printers of its window, then (its audit rows' foreign key) takes a share of their
owners' rows. Run on the same account at the same moment, each waits for the other, and
PostgreSQL rolls one back whole. Before, that one ended in a traceback, and the operator
had to notice and run it again; on SQLite the one writer's lock keeps them apart.
"""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from tests.support import held_requests
from tests.support.held_requests import Running, wait_until_waiting_for_a_lock
from tsd_server import deadlock_retry, devices, incident
from tsd_server.auth import accounts
from tsd_server.extensions import db
from tsd_server.models import AuditEvent, Device, User

hold = held_requests.hold


def events(app, name: str) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(AuditEvent)
                                 .where(AuditEvent.event == name))


def test_a_deletion_and_an_incident_revoke_of_the_same_account_both_finish(
        app, clock, monkeypatch, hold, make_user, link_device, caplog):
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        pytest.skip("PostgreSQL only: SQLite's one writer at a time cannot deadlock")
    owner, _, _ = make_user("leaving@example.org")
    since = clock()
    clock.advance(minutes=1)
    link_device(owner, device_uid="printer-1", strategy="ip_match")
    clock.advance(minutes=1)
    until = clock()
    clock.now = until + incident.SETTLED
    # The deletion holds the account's row and stops before it locks the printers ...
    held = hold("delete")
    monkeypatch.setattr(devices, "revoke_all", held.wrap(devices.revoke_all, before=True))

    def delete() -> int:
        with app.app_context():
            return accounts.delete_account(db.session.get(User, owner), actor="cli",
                                           reason="owner asked")

    def revoke() -> incident.RevokeResult:
        with app.app_context():
            return incident.revoke("ip_match", since, until, actor="cli")

    deleting = Running("delete", delete)
    deleting.start()
    assert held.reached.wait(30)
    # ... the revoke locks the printer, then waits for the account's row ...
    revoking = Running("revoke", revoke)
    revoking.start()
    wait_until_waiting_for_a_lock(app, revoking)
    # ... and the deletion goes on to the printer: each waits for the other.
    with caplog.at_level(logging.WARNING, logger=deadlock_retry.log.name):
        held.release.set()
        assert deleting.result() == 1
        result = revoking.result()
    retries = [record for record in caplog.records if record.name == deadlock_retry.log.name]
    assert len(retries) == 1, "the two never deadlocked: the test shows nothing"
    assert "running it again" in retries[0].getMessage()
    # Whichever ran again found the other's work done: the account and its printer are gone,
    # each command audited once, and the revoke named what it revoked, if anything.
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Device)) == 0
        assert db.session.get(User, owner) is None
    assert events(app, "account_deleted") == 1
    assert events(app, "incident_revoke") == 1
    assert [row.device_uid for row in result.revoked] in ([], ["printer-1"])


def test_an_error_that_is_not_a_deadlock_is_raised_at_once(app, make_user):
    """A refused statement is a bug or bad input, not a race: running it again would only
    repeat it (and its side effects before it)."""
    make_user("taken@example.org")
    calls = []

    @deadlock_retry.retried_on_deadlock
    def duplicate_account() -> None:
        calls.append(1)
        db.session.add(User(email="taken@example.org", password_hash="x", display_name="x"))
        db.session.commit()

    with app.app_context(), pytest.raises(IntegrityError):
        duplicate_account()
    assert calls == [1]
