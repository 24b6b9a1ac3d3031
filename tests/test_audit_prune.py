"""``flask --app tsd_server audit prune --before YYYY-MM-DD [--dry-run]``: old rows of
everyday and anonymous traffic go, in batches; every other event (the links incident
response reads, approvals, the security record, and any event not classified yet) stays
whatever its age; a date under 30 days ago changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, select

from tsd_server import audit, audit_retention, incident
from tsd_server.auth import accounts
from tsd_server.discovery import kill_switch
from tsd_server.discovery.link_service import link_device
from tsd_server.discovery.pairing import failure_breaker
from tsd_server.extensions import db
from tsd_server.models import AuditEvent, User

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
BEFORE = "2026-04-01"
CUTOFF = datetime(2026, 4, 1, tzinfo=UTC)
OLD = datetime(2026, 2, 10, 9, 30, tzinfo=UTC)
US = timedelta(microseconds=1)
PRUNEABLE = audit_retention.PRUNED_EVENTS
# Kept at any age, among them a name no code writes yet: a new event is kept until it is
# classified as everyday record.
KEPT = ("link", "link_failed", "confirmation", "device_flow_decision", "ip_match_nearby",
        "revocation", "incident_revoke", "flag_toggle", "breaker_trip", "account_locked",
        "account_unlocked", "password_changed", audit_retention.PRUNED,
        "a_future_security_event")
SOURCE = Path(audit_retention.__file__).resolve().parent


@pytest.fixture
def write(app, clock):
    """Write an audit row through the app's helper at a given moment; returns its id."""

    def factory(event_name: str, at: datetime, **fields) -> int:
        clock.now = at
        with app.app_context():
            row = audit.record(event_name, actor=fields.pop("actor", "anonymous"), **fields)
            db.session.commit()
            row_id = row.id
        clock.now = NOW
        return row_id

    return factory


def rows(app) -> list[tuple[int, str, datetime]]:
    with app.app_context():
        return [tuple(row) for row in db.session.execute(
            select(AuditEvent.id, AuditEvent.event, AuditEvent.at).order_by(AuditEvent.id))]


def run(app, *args: str):
    return app.test_cli_runner().invoke(args=["audit", "prune", *args])


def prune_rows(app) -> list[AuditEvent]:
    with app.app_context():
        found = db.session.scalars(select(AuditEvent).where(
            AuditEvent.event == audit_retention.PRUNED).order_by(AuditEvent.id)).all()
        for row in found:
            db.session.expunge(row)
        return found


def test_old_rows_go_the_security_record_and_recent_rows_stay(app, write):
    moments = {"old": OLD, "last before": CUTOFF - US, "at cutoff": CUTOFF, "new": NOW}
    ids = {(name, label): write(name, at, detail=label)
           for name in (*KEPT, *PRUNEABLE)
           for label, at in moments.items()}

    result = run(app, "--before", BEFORE)

    assert result.exit_code == 0, result.output
    gone = {ids[name, label] for name in PRUNEABLE for label in ("old", "last before")}
    left = {row_id for row_id, _, _ in rows(app)}
    assert left.isdisjoint(gone)
    assert set(ids.values()) - gone <= left  # kept kinds at any age, everything from CUTOFF on
    assert f"Deleted {2 * len(PRUNEABLE)} row(s) from before {BEFORE} (UTC)" in result.output
    for name in PRUNEABLE:
        assert f"  {name:<32} 2\n" in result.output
    started, own = prune_rows(app)[-2:]
    assert (started.outcome, started.detail) == ("started", f"rows before {BEFORE} (UTC)")
    assert (own.actor, own.at, own.outcome) == ("cli", NOW, "ok")
    assert own.detail.startswith(f"rows before {BEFORE} (UTC): deleted {2 * len(PRUNEABLE)} (")
    assert "login_failed 2" in own.detail


def test_the_security_record_the_server_writes_outlives_a_prune(app, client, clock, make_user,
                                                               login):
    """The security record, each event made by the code that writes it, long ago: a
    prune afterwards leaves every one of them."""
    from tests.support.pairing import LOOSE_LIMITS, decide, enter_code, started

    app.config.update(LOOSE_LIMITS)
    app.config["PAIRING_FAILURE_BREAKER_PER_MINUTE"] = 1
    uid, email, password = make_user("owner@example.org")
    clock.now = OLD
    approver = login(email, password, REMOTE_ADDR="1.1.1.1")
    enter_code(approver, started(client)["user_code"])
    decide(approver, "approve")  # device_flow_decision
    with app.test_request_context():
        owner = db.session.get(User, uid)
        link_device(owner=owner, device_uid="printer-1", name="P", model=None,
                    strategy="pairing_code", actor=f"user:{uid}", address=None)
        incident.revoke_account(owner, actor="cli", reason="password leaked")
        accounts.set_password(owner, "a brand new passphrase", actor="cli")
        accounts.lock(owner, actor="cli", reason="takeover")
        accounts.unlock(owner, actor="cli", reason="owner verified")
        for _ in range(2):  # over the limit of 1: the breaker trips and switches it off
            failure_breaker.record_invalid_code(where="test", actor="anonymous")
        kill_switch.set_flag("pairing_code", enabled=True, reason="understood", actor="cli")
    clock.now = OLD + audit_retention.MIN_AGE  # a prune long ago, itself on record
    with app.app_context():
        audit_retention.prune(OLD, actor="cli")
    clock.now = NOW
    written = {name for _, name, _ in rows(app)}
    record = {"link", "device_flow_decision", "revocation", "incident_revoke",
              "password_changed", "account_locked", "account_unlocked", "breaker_trip",
              "flag_toggle", audit_retention.PRUNED}
    assert record <= written

    assert run(app, "--before", BEFORE).exit_code == 0

    old_left = {name for _, name, at in rows(app) if at < CUTOFF}
    assert record <= old_left and not old_left & set(PRUNEABLE)
    assert "code_invalid" in written  # a pruneable row was there too


def test_incident_affected_finds_old_links_after_a_prune(app, clock, make_user, write):
    """A printer linked by ip_match in an old window and re-linked by pairing_code later:
    only the window's `link` row says so, and it survives the prune."""
    uid, email, _ = make_user("owner@example.org")
    since, until = OLD - timedelta(hours=1), OLD + timedelta(hours=1)
    for at, strategy in ((OLD, "ip_match"), (OLD + timedelta(days=5), "pairing_code")):
        clock.now = at
        with app.test_request_context(environ_base={"REMOTE_ADDR": "9.9.9.9"}):
            link_device(owner=db.session.get(User, uid), device_uid="printer-7", name="Voron",
                        model=None, strategy=strategy, actor=f"user:{uid}", address=None)
    write("link_failed", OLD, strategy="ip_match")
    clock.now = NOW

    assert run(app, "--before", BEFORE).exit_code == 0
    listed = app.test_cli_runner().invoke(args=[
        "incident", "affected", "--strategy", "ip_match", "--since", since.isoformat(),
        "--until", until.isoformat(), "--format", "csv"])

    assert listed.exit_code == 0, listed.output
    assert [line.split(",")[1] for line in listed.output.splitlines()[1:]] == [email]
    assert "printer-7" in listed.output and "ip_match" in listed.output


def test_a_dry_run_counts_and_deletes_nothing(app, write):
    for name, count in (("login_failed", 3), ("device_flow_requested", 2), ("link", 1)):
        for _ in range(count):
            write(name, OLD)
    write("login_failed", NOW)
    before = rows(app)

    result = run(app, "--before", BEFORE, "--dry-run")

    assert result.exit_code == 0, result.output
    assert "a prune would delete: 5" in result.output
    assert f"  {'device_flow_requested':<32} 2\n  {'login_failed':<32} 3\n" in result.output
    assert "DRY RUN: nothing deleted" in result.output
    assert rows(app) == before  # nor was the dry run itself audited


REFUSED = {
    "2026-05-03": "less than 30 days ago",  # 29.5 days before NOW
    "2026-06-01": "less than 30 days ago",  # today
    "2027-01-01": "less than 30 days ago",
    **dict.fromkeys(("2026-4-1", "20260401", "2026-04-01T00:00", "01.04.2026", "2026-02-30",
                     "yesterday", "", "\uff12\uff10\uff12\uff16-\uff10\uff14-\uff10\uff11"),
                    "is not a date such as 2026-01-31 (YYYY-MM-DD)"),
}


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_refused_date_changes_nothing_and_exits_2(app, write, dry_run):
    write("login_failed", OLD)
    before = rows(app)
    for value, why in REFUSED.items():
        result = run(app, "--before", value, *(["--dry-run"] if dry_run else []))

        assert result.exit_code == 2, (value, result.output)
        assert why in result.output, (value, result.output)
        assert rows(app) == before


def test_the_minimum_age_is_30_days_to_the_microsecond(app, clock):
    clock.now = datetime(2026, 6, 1, tzinfo=UTC)
    with app.app_context():
        assert audit_retention.would_prune(audit_retention.parse_date("2026-05-02")) == {}
        with pytest.raises(ValueError, match="less than 30 days ago"):
            audit_retention.prune(audit_retention.parse_date("2026-05-03"), actor="cli")
    assert audit_retention.MIN_AGE >= 1000 * failure_breaker.WINDOW  # what the breaker reads
    assert prune_rows(app) == []


def test_rows_go_in_batches_each_its_own_transaction(app, write, monkeypatch):
    monkeypatch.setattr(audit_retention, "BATCH_SIZE", 3)
    pruneable, kept = [], []
    for index in range(10):  # kept rows between them: batches go on past them
        pruneable.append(write("login_failed", OLD + timedelta(minutes=index)))
        kept.append(write("link", OLD + timedelta(minutes=index)))
    commits: list = []
    counted = commits.append
    with app.app_context():
        engine = db.engine
    event.listen(engine, "commit", counted)
    try:
        result = run(app, "--before", BEFORE)
    finally:
        event.remove(engine, "commit", counted)

    assert result.exit_code == 0, result.output
    assert "Deleted 10 row(s)" in result.output and "in 4 batch(es)" in result.output
    assert [row_id for row_id, _, _ in rows(app)][:-2] == kept  # and the prune's own rows
    assert len(commits) >= 1 + 4 + 1  # its start on record, a transaction a batch, its end
    assert prune_rows(app)[1].detail.endswith("deleted 10 (login_failed 10)")


def test_a_batch_size_that_divides_the_rows_exactly(app, write):
    for index in range(6):
        write("rate_limited", OLD + timedelta(seconds=index))
    with app.app_context():
        result = audit_retention.prune(CUTOFF, actor="cli", batch_size=3)
    assert (result.deleted, result.batches, result.total) == ({"rate_limited": 6}, 2, 6)
    assert [name for _, name, _ in rows(app)] == [audit_retention.PRUNED] * 2


def test_every_pruned_event_is_one_the_server_writes():
    """A misspelt name in PRUNED_EVENTS would prune nothing and say nothing."""
    code = "".join(path.read_text() for path in SOURCE.rglob("*.py")
                   if path.name != "audit_retention.py" and "migrations" not in path.parts)
    assert [name for name in PRUNEABLE if f'"{name}"' not in code] == []


def test_a_prune_that_fails_half_way_is_on_record(app, write, monkeypatch):
    """Its first batch committed, the second failed: the rows already gone are not
    gone without a trace, and a second run finishes the job."""
    for index in range(6):
        write("login_failed", OLD + timedelta(seconds=index))
    real_commit, commits = db.session.commit, []

    def failing_second_batch():
        commits.append(1)
        if len(commits) == 3:  # the start's row, the first batch, then this
            raise RuntimeError("the database went away")
        real_commit()

    with app.app_context():
        monkeypatch.setattr(db.session, "commit", failing_second_batch)
        with pytest.raises(RuntimeError):
            audit_retention.prune(CUTOFF, actor="cli", batch_size=3)
        monkeypatch.undo()
        db.session.rollback()
    assert [(row.outcome, row.detail) for row in prune_rows(app)] == [
        ("started", "rows before 2026-04-01 (UTC)")]
    assert run(app, "--before", BEFORE).exit_code == 0
    assert [name for _, name, _ in rows(app)] == [audit_retention.PRUNED] * 3
