"""Single use under concurrency, on PostgreSQL: of two simultaneous uses exactly one wins;
and of two simultaneous links of one printer to one account, one links and one re-links.

To make the race certain rather than likely, a separate connection holds the row lock
(``SELECT ... FOR UPDATE``) while both requests run: each reads the row as unused, then waits
at its write. The lock is released only when PostgreSQL shows both requests waiting, so both
have passed every check that could have told them apart. An implementation that checked
and then wrote (without a conditional UPDATE or a lock) would let both through here.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import psycopg2
import pytest
from sqlalchemy.engine import make_url

from tests.support.link_race import TWIN_TOKEN, twin_committed_before_the_insert
from tests.support.pairing import (
    LOOSE_LIMITS,
    audit_rows,
    authorize,
    decide,
    enter_code,
    issue_code,
    me,
    poll,
    redeem,
    started,
)


@pytest.fixture
def app_config():
    return dict(LOOSE_LIMITS)


@pytest.fixture(autouse=True)
def postgresql_only(app):
    if not app.config["DATABASE_URL"].startswith("postgresql"):
        pytest.skip("the race is run against the real PostgreSQL database")


def _connect(app):
    url = make_url(app.config["DATABASE_URL"])
    return psycopg2.connect(host=url.host, port=url.port, user=url.username,
                            dbname=url.database)


def waiting_for_locks(app) -> int:
    """How many connections to the test database are waiting for a lock right now."""
    with _connect(app) as probe, probe.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                    "current_database() AND wait_event_type = 'Lock'")
        count = cur.fetchone()[0]
    probe.close()
    return count


@contextmanager
def row_locked(app, table: str, row_id: int):
    """Hold the row's lock until the block asks ``release()``."""
    conn = _connect(app)
    with conn.cursor() as cur:
        cur.execute(f"SELECT id FROM {table} WHERE id = %s FOR UPDATE", (row_id,))  # noqa: S608
        assert cur.fetchone() is not None

    def release(after_waiters: int) -> None:
        deadline = time.monotonic() + 20
        while waiting_for_locks(app) < after_waiters:
            assert time.monotonic() < deadline, "the requests never reached the locked row"
            time.sleep(0.02)
        conn.rollback()

    try:
        yield release
    finally:
        conn.close()


def run_together(*calls):
    """Run the calls in threads; return their results in order."""
    results: list = [None] * len(calls)
    errors: list = []

    def worker(index, call):
        try:
            results[index] = call()
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    return threads, results, errors


def join(threads, errors):
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert not errors, errors


def only_row_id(app, model) -> int:
    from tsd_server.extensions import db

    with app.app_context():
        return db.session.query(model).one().id


def two_polls_at_once(app, device_code: str) -> list:
    """Two token polls that both read the row before either writes it."""
    from tsd_server.models import DeviceAuthorization

    with row_locked(app, "device_authorizations",
                    only_row_id(app, DeviceAuthorization)) as release:
        threads, results, errors = run_together(
            lambda: poll(app.test_client(), device_code),
            lambda: poll(app.test_client(), device_code))
        release(after_waiters=2)
        join(threads, errors)
    return results


def test_two_simultaneous_redemptions_of_one_code_exactly_one_wins(app, make_user, login):
    from tsd_server.models import PairingCode

    uid, email, password = make_user()
    code = issue_code(login(email, password))["code"]
    with row_locked(app, "pairing_codes", only_row_id(app, PairingCode)) as release:
        threads, results, errors = run_together(
            lambda: redeem(app.test_client(), code, device_id="printer-aaaa", ip="8.8.8.8"),
            lambda: redeem(app.test_client(), code, device_id="printer-bbbb", ip="9.9.9.9"))
        release(after_waiters=2)
        join(threads, errors)
    statuses = sorted(r.status_code for r in results)
    assert statuses == [201, 400], [r.get_json() for r in results]
    loser = next(r for r in results if r.status_code == 400)
    assert loser.get_json()["error"] == "invalid_code"
    assert len(audit_rows(app, "link")) == 1


def test_two_simultaneous_approvals_exactly_one_wins(app, make_user, login, clock):
    """Two browsers of one account (another account cannot reach the request: see
    tests/test_device_flow_binding.py, which races two accounts too)."""
    from tsd_server.models import DeviceAuthorization

    client = app.test_client()
    answer = authorize(client).get_json()
    sessions = []
    _, email, password = make_user()
    for ip in ("1.1.1.1", "9.9.9.9"):
        session = login(email, password, REMOTE_ADDR=ip)
        assert enter_code(session, answer["user_code"]).status_code == 302
        sessions.append(session)
    with row_locked(app, "device_authorizations",
                    only_row_id(app, DeviceAuthorization)) as release:
        threads, results, errors = run_together(
            lambda: decide(sessions[0], "approve"), lambda: decide(sessions[1], "approve"))
        release(after_waiters=2)
        join(threads, errors)
    assert sorted(r.status_code for r in results) == [302, 409]
    assert sorted(row.outcome for row in audit_rows(app, "device_flow_decision")) == [
        "approved", "too_late"]


def test_two_simultaneous_token_polls_get_one_token(app, make_user, login, clock):
    client = app.test_client()
    answer = authorize(client).get_json()
    _, email, password = make_user()
    session = login(email, password)
    enter_code(session, answer["user_code"])
    decide(session, "approve")
    results = two_polls_at_once(app, answer["device_code"])
    assert sorted(r.status_code for r in results) == [200, 400]
    assert next(r for r in results if r.status_code == 400).get_json()["error"] == \
        "invalid_grant"
    assert len(audit_rows(app, "link")) == 1


def test_two_simultaneous_pending_polls_one_is_on_time_the_other_slow_down(app, clock):
    """Both read the row as never polled; only one on-time write can land (RFC 8628 §3.5:
    the other did not wait the interval)."""
    client = app.test_client()
    answer = authorize(client).get_json()
    results = two_polls_at_once(app, answer["device_code"])
    answers = sorted((r.get_json()["error"], r.get_json().get("interval")) for r in results)
    assert answers == [("authorization_pending", None), ("slow_down", answer["interval"] + 5)]


def test_many_simultaneous_redemptions_of_one_code_one_wins(app, make_user, login):
    _, email, password = make_user()
    code = issue_code(login(email, password))["code"]
    barrier = threading.Barrier(8)

    def attempt(index: int):
        client = app.test_client()
        barrier.wait()
        return redeem(client, code, device_id=f"printer-{index:04d}", ip=f"8.8.4.{index + 1}")

    threads, results, errors = run_together(*(lambda i=i: attempt(i) for i in range(8)))
    join(threads, errors)
    assert sorted(r.status_code for r in results) == [201] + [400] * 7


# One row per printer and account, under concurrency ----------------------------------------


def test_two_links_of_one_printer_to_one_account_at_once_end_as_link_and_relink(
        app, make_user, login):
    """Two codes of one account redeemed by the same printer at once: both wait at the
    owner's lock, then one links and the other re-links the same row. Without the lock both
    would insert, and the unique index would refuse the second (409)."""
    from tsd_server.extensions import db
    from tsd_server.models import Device

    uid, email, password = make_user()
    session = login(email, password)
    first, second = issue_code(session)["code"], issue_code(session)["code"]
    with row_locked(app, "users", uid) as release:
        threads, results, errors = run_together(
            lambda: redeem(app.test_client(), first, device_id="printer-twin", ip="8.8.8.8"),
            lambda: redeem(app.test_client(), second, device_id="printer-twin", ip="9.9.9.9"))
        release(after_waiters=2)
        join(threads, errors)
    assert [r.status_code for r in results] == [201, 201], [r.get_json() for r in results]
    tokens = [r.get_json()["access_token"] for r in results]
    assert sorted(me(app.test_client(), token).status_code for token in tokens) == [200, 401]
    with app.app_context():
        assert [(d.owner_id, d.device_uid) for d in db.session.query(Device)] == \
            [(uid, "printer-twin")]
    links = audit_rows(app, "link")
    assert sorted("re-linked" in (row.detail or "") for row in links) == [False, True]
    assert audit_rows(app, "link_failed") == []


def test_a_conflicting_link_answers_409_and_leaves_the_code_unused(app, make_user, login):
    """The index's refusal as the device sees it: a JSON 409, the code not spent, the
    attempt audited; trying again re-links the printer's one row."""
    from tsd_server.extensions import db
    from tsd_server.models import Device

    uid, email, password = make_user()
    code = issue_code(login(email, password))["code"]
    with twin_committed_before_the_insert(uid, "printer-twin") as inserted:
        refused = redeem(app.test_client(), code, device_id="printer-twin")
    assert inserted
    assert refused.status_code == 409, refused.get_json()
    assert refused.get_json()["error"] == "link_conflict"
    assert [r.outcome for r in audit_rows(app, "link_failed")] == ["conflict"]
    again = redeem(app.test_client(), code, device_id="printer-twin")
    assert again.status_code == 201, again.get_json()
    assert me(app.test_client(), TWIN_TOKEN).status_code == 401
    assert me(app.test_client(), again.get_json()["access_token"]).status_code == 200
    with app.app_context():
        assert db.session.query(Device).count() == 1


def test_a_code_redeemed_while_the_account_unlinks_all_links_and_is_revoked(
        app, make_user, login):
    """The withdrawal of unused codes (tsd_server/pending_links.py) against a redemption in
    flight: the redemption holds the account's lock and is about to claim the code when
    "Unlink all printers" starts. Unlink-all waits for the lock, the redemption links and
    commits, then unlink-all revokes the new printer and has nothing left to withdraw. Both
    take the account's lock before touching a code, so neither can hold a row the other
    waits for."""
    from sqlalchemy import event

    from tsd_server.extensions import db

    uid, email, password = make_user()
    owner = login(email, password)
    code = issue_code(owner)["code"]
    redeemer = threading.get_ident()
    started_unlink: list = []

    def unlink_all_now(conn, cursor, statement, parameters, context, executemany) -> None:
        if (started_unlink or threading.get_ident() != redeemer
                or not statement.lstrip().upper().startswith("UPDATE PAIRING_CODES")):
            return
        # The redemption holds the account's lock and is about to claim the code.
        started_unlink.append(run_together(
            lambda: owner.form_post("/printers/unlink-all", {"confirm": "y"})))
        deadline = time.monotonic() + 20
        while waiting_for_locks(app) < 1:
            assert time.monotonic() < deadline, "unlink-all never waited for the lock"
            time.sleep(0.02)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", unlink_all_now)
    try:
        linked = redeem(app.test_client(), code, device_id="printer-late")
    finally:
        event.remove(engine, "before_cursor_execute", unlink_all_now)
    [(threads, results, errors)] = started_unlink
    join(threads, errors)
    assert linked.status_code == 201, linked.get_json()
    assert results[0].status_code == 302
    assert me(app.test_client(), linked.get_json()["access_token"]).status_code == 401
    assert [row.outcome for row in audit_rows(app, "revocation")] == ["ok"]  # none withdrawn


def test_a_locked_approval_does_not_hold_up_a_switch_off(app, make_user, login, clock):
    """A link in progress holds its approval's row (claimed, and linking) for a while.
    The switch-off must take effect at once all the same: it is committed before the
    waiting links are withdrawn, and the withdrawal waits for the row instead."""
    from tsd_server.discovery import kill_switch
    from tsd_server.models import DeviceAuthorization

    _, email, password = make_user()
    session = login(email, password)
    flow = started(app.test_client())
    enter_code(session, flow["user_code"])
    assert decide(session, "approve").status_code == 302

    def switch_off():
        with app.test_request_context():
            kill_switch.set_flag("pairing_code", enabled=False, reason="test", actor="cli")

    with row_locked(app, "device_authorizations",
                    only_row_id(app, DeviceAuthorization)) as release:
        threads, _, errors = run_together(switch_off)
        deadline = time.monotonic() + 20
        while True:  # another process sees the switch-off while the row is still locked
            with app.test_request_context():
                if not kill_switch.state("pairing_code", fresh=True).enabled:
                    break
            assert time.monotonic() < deadline, "the switch-off waited for the locked row"
            time.sleep(0.05)
        release(after_waiters=1)
        join(threads, errors)
    clock.advance(seconds=10)
    assert poll(app.test_client(), flow["device_code"]).get_json()["error"] == "access_denied"
    assert [row.outcome for row in audit_rows(app, "revocation")] == ["withdrawn"]
