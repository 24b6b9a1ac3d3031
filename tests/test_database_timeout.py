"""A stalled PostgreSQL ends each web request within TSD_DATABASE_TIMEOUT with the outage's
503, and never cuts a command short (tsd_server/database_timeout.py).

The stall is real: a second session holds a lock (LOCK TABLE, the switches' advisory lock)
in an open transaction. PostgreSQL ends that session after a while too
(idle_in_transaction_session_timeout), so a run without the bound fails instead of
hanging. Upper bounds are three times the configured bound; lower bounds only say that a
command waited for as long as the lock was held.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import requests
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from tests.support import clean_env, servers
from tests.support.apps import another_app
from tests.support.cut_off_network import database_behind_a_link
from tests.support.held_requests import Running
from tests.support.sent_statements import SINGLE, sent_statements
from tsd_server import create_app, database_timeout, idle_transactions
from tsd_server.config import ConfigurationError
from tsd_server.discovery import kill_switch
from tsd_server.extensions import db
from tsd_server.models import StrategyFlag

BOUND = 1  # seconds: TSD_DATABASE_TIMEOUT for these tests
WITHIN = 3 * BOUND  # a stalled request answers within this
HELD = 2.5  # seconds a command is kept waiting: longer than the bound
KEY = "k" * 32
LOCK_DEVICES = "LOCK TABLE devices IN ACCESS EXCLUSIVE MODE"
SHARE_SWITCH_LOCK = f"SELECT pg_advisory_xact_lock_shared({kill_switch.SWITCH_LOCK_KEY})"
HOLDER_ENDS_AFTER = "20s"  # a lock holder's longest life, so a test never hangs

instance = clean_env.instance


@pytest.fixture
def app_config():
    return {"DATABASE_TIMEOUT": BOUND}


@pytest.fixture
def postgres(database):
    if not database.startswith("postgresql"):
        pytest.skip("PostgreSQL only: SQLite has no statement timeout (its busy timeout is "
                    "tested below)")
    return database


@contextmanager
def held(url: str, statement: str) -> Iterator[Any]:
    """A second session that has run ``statement`` in a transaction it keeps open (yields
    its psycopg2 connection: ``rollback()`` releases); PostgreSQL ends it after
    ``HOLDER_ENDS_AFTER`` anyway."""
    with closing(psycopg2.connect(url.replace("postgresql+psycopg2", "postgresql"))) as holder:
        with holder.cursor() as cursor:
            cursor.execute(f"SET idle_in_transaction_session_timeout = '{HOLDER_ENDS_AFTER}'")
            cursor.execute(statement)
        try:
            yield holder
        finally:
            with suppress(psycopg2.Error):  # already released, or ended by the server
                holder.rollback()


def released_after(holder, seconds: float) -> None:
    threading.Timer(seconds, holder.rollback).start()


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


def device_me(client, token: str):
    return client.get("/api/v1/device/me", headers={"Authorization": f"Bearer {token}"})


def unavailable(response) -> None:
    assert response.status_code == 503, (response.status_code, response.get_data(as_text=True))
    assert response.headers["Retry-After"] == "5"


@contextmanager
def connections_opened(application) -> Iterator[list[str]]:
    """The names of the engines that open a new connection while inside."""
    opened: list[str] = []
    with application.app_context():
        engines = dict(db.engines)
    listeners = [(engine, lambda *_args, name=name: opened.append(str(name)))
                 for name, engine in engines.items()]
    for engine, listener in listeners:
        event.listen(engine, "connect", listener)
    try:
        yield opened
    finally:
        for engine, listener in listeners:
            event.remove(engine, "connect", listener)


@pytest.fixture
def linked(app, make_user, link_device, login):
    """A printer's token and its owner's logged-in session, both used once already."""
    user_id, email, password = make_user()
    _, token = link_device(user_id)
    person = login(email, password)
    assert device_me(app.test_client(), token).status_code == 200
    assert person.get("/").status_code == 200
    return token, person


# --- requests -------------------------------------------------------------------------------


@pytest.mark.parametrize("table", ["devices", "users"])
def test_a_locked_table_answers_503_within_the_bound_and_the_next_request_works(
        postgres, app, linked, caplog, table):
    """A device call (autocommit bind) and a page (the ORM session's transaction) both
    meet the lock: each answers the outage's 503 in time, logged once; once the lock is
    gone the same pooled connections serve again, the session's included."""
    token, person = linked
    printer = app.test_client()
    with connections_opened(app) as opened, caplog.at_level(
            logging.ERROR, logger="tsd_server.api.errors"):
        with held(postgres, f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"):
            for _ in range(2):
                answer, seconds = timed(lambda: device_me(printer, token))
                unavailable(answer)
                assert answer.get_json()["error"] == "database_unavailable"
                assert seconds < WITHIN
            with sent_statements(app) as sent:
                page, seconds = timed(lambda: person.get("/"))
            unavailable(page)
            # The account is read once: the error page does not wait for it a second time.
            assert sent[SINGLE] == ["SELECT"]
            assert page.mimetype == "text/html"
            assert "Temporarily unavailable" in page.get_data(as_text=True)
            assert seconds < WITHIN
        assert device_me(printer, token).status_code == 200
        assert person.get("/").status_code == 200
    assert opened == []  # a cancelled statement leaves its connection usable
    lines = [record.getMessage() for record in caplog.records
             if record.name == "tsd_server.api.errors"]
    assert len(lines) == 1, lines
    assert f"a statement ran past TSD_DATABASE_TIMEOUT ({BOUND} s)" in lines[0]


def test_without_the_bound_the_same_request_waits_for_the_lock(postgres, app, linked):
    """The control: with TSD_DATABASE_TIMEOUT=0 the request is still waiting where the
    bound would have answered, and ends only when the lock does."""
    token, _ = linked
    with another_app(postgres, DATABASE_TIMEOUT=0) as unbound:
        with held(postgres, LOCK_DEVICES) as holder:
            waiting = Running("device/me", lambda: device_me(unbound.test_client(), token))
            waiting.start()
            waiting.join(WITHIN)
            assert waiting.is_alive()
            holder.rollback()
            assert waiting.result().status_code == 200


def test_a_connection_carries_the_bound_only_while_it_serves_a_request(postgres, app):
    """Outside a request (a command, a migration) the same pooled connection has the
    server's own setting back, and the bound again in the next request."""
    with app.app_context():
        engines = dict(db.engines)
    for name, engine in engines.items():
        seen = []
        for context in (app.test_request_context, app.app_context, app.test_request_context):
            with context(), engine.connect() as connection:
                seen.append(tuple(connection.execute(text(
                    "SELECT current_setting('statement_timeout'), pg_backend_pid()")).one()))
        assert [setting for setting, _ in seen] == [f"{BOUND}s", "0", f"{BOUND}s"], name
        assert len({pid for _, pid in seen}) == 1, name


def test_the_bound_is_sent_once_per_connection_not_per_request(postgres, app, linked,
                                                               monkeypatch):
    """The hot paths pay nothing: a connection gets its SET when it first serves a
    request, and keeps it (a device call uses the autocommit bind, the dashboard the
    session's engine: one connection each)."""
    token, person = linked
    with app.app_context():
        for engine in db.engines.values():
            engine.dispose()  # fresh connections from here
    sent = []
    send = database_timeout.send_statement_timeout
    monkeypatch.setattr(database_timeout, "send_statement_timeout",
                        lambda connection, milliseconds: (sent.append(milliseconds),
                                                          send(connection, milliseconds)))
    printer = app.test_client()
    for _ in range(10):
        assert device_me(printer, token).status_code == 200
        assert person.get("/").status_code == 200
    assert sent == [BOUND * 1000] * 2


def test_sqlite_keeps_its_own_busy_timeout(app, database):
    if not database.startswith("sqlite"):
        pytest.skip("SQLite's own bound")
    with app.app_context():
        engines = dict(db.engines)
    for name, engine in engines.items():
        with app.test_request_context(), engine.connect() as connection:
            assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 5000, name


def test_a_database_that_accepts_and_never_answers_costs_a_request_the_bound(instance):
    """The connect is bounded too (libpq's connect_timeout, at least 2 s). The control,
    started at the same moment without the bound, is still connecting afterwards: it
    would wait for ever, here until the listener goes away."""
    silent = socket.create_server(("127.0.0.1", 0))
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{silent.getsockname()[1]}/tsd"
    calls = {}
    for bound in (2, 0):
        application = create_app({"TESTING": True, "SECRET_KEY": KEY, "DATABASE_URL": url,
                                  "RATELIMIT_STORAGE_URI": "memory://",
                                  "DATABASE_TIMEOUT": bound})
        client = application.test_client()
        calls[bound] = Running(f"bound {bound}", partial(
            timed, partial(device_me, client, "tsd_at_" + "A" * 43)))
        calls[bound].start()
    try:
        answer, seconds = calls[2].result()
        unavailable(answer)
        assert seconds < 3 * 2
        assert calls[0].is_alive()
    finally:
        silent.close()  # the control's connect is refused now
    unavailable(calls[0].result()[0])


# --- a database the network cuts off after the connect -------------------------------------

CUT_BOUND = 2  # seconds: TSD_DATABASE_TIMEOUT here (libpq's connect_timeout is at least 2)
# A silent peer is given up after the bound and the probes; then a reconnect may take the
# bound again. With a margin for a busy machine; without the settings it is minutes.
GIVEN_UP_WITHIN = 2 * CUT_BOUND + database_timeout.KEEPALIVE_PROBES + 3


@pytest.fixture
def behind_a_link(postgres):
    """(the test database's URL across a link of the test's own, the link)."""
    with database_behind_a_link(postgres) as (url, link):
        yield url, link


def within(seconds: float, name: str, call: Callable[[], Any]) -> Any:
    """``call``'s result if it returns (or raises) within ``seconds``; a failure if it is
    still waiting then (left behind in its daemon thread)."""
    running = Running(name, call)
    running.start()
    return running.result(seconds)


def test_a_database_cut_off_after_the_connect_costs_a_request_the_bound(behind_a_link, linked):
    """The database's host froze, or the link to it went, while a pooled connection was
    open: its statement is never acknowledged, and PostgreSQL cannot cancel what it never
    received. libpq's tcp_user_timeout ends the connection: the request answers the
    outage's 503 in a few seconds, and once the link is back the next request is served.
    Without it Linux retransmits for about 15 minutes, and gunicorn kills the worker at
    30 s with no answer."""
    url, link = behind_a_link
    token, _ = linked
    with another_app(url, DATABASE_TIMEOUT=CUT_BOUND) as application:
        printer = application.test_client()
        assert device_me(printer, token).status_code == 200  # a connection across the link
        link.cut()
        try:
            answer = within(GIVEN_UP_WITHIN, "device/me", partial(device_me, printer, token))
        finally:
            link.restore()
        unavailable(answer)
        assert device_me(printer, token).status_code == 200


def test_a_command_gives_up_connecting_to_a_cut_off_database(behind_a_link):
    """A command (``flask incident revoke`` in an incident, say) tells the operator within
    seconds that the database cannot be reached, instead of after Linux's two minutes of
    SYN retries: the connect bound is every connection's, not only requests'."""
    url, link = behind_a_link
    with another_app(url, DATABASE_TIMEOUT=CUT_BOUND) as application:
        def connect() -> None:
            with application.app_context():
                db.session.execute(text("SELECT 1"))

        link.cut()
        try:
            with pytest.raises(OperationalError, match="timeout expired"):
                within(GIVEN_UP_WITHIN, "command", connect)
        finally:
            link.restore()
        connect()


def test_a_live_database_is_not_cut_short_by_the_liveness_bounds(behind_a_link):
    """The other side of the same settings: a command's statement that runs well past the
    bound across the same link completes, even with the answer to the first keepalive
    probe lost on the way. While it runs, the server's kernel acknowledges and answers the
    probes; one lost answer is not a dead peer (with the user timeout only as long as the
    probes' silence, Linux ended this connection a second after the first probe)."""
    url, link = behind_a_link
    first_probe = CUT_BOUND  # seconds after the statement went out and was acknowledged
    # Nothing else comes back in between: from well before the first probe to just after
    # it, so that a late start still loses that probe's answer, and the second is answered.
    lose_from, lose_until = 0.3, first_probe + 0.8
    sleep = CUT_BOUND + database_timeout.KEEPALIVE_PROBES + 3

    def answers_lost_for_a_moment() -> None:
        time.sleep(lose_from)
        with link.answers_dropped():
            time.sleep(lose_until - lose_from)

    with another_app(url, DATABASE_TIMEOUT=CUT_BOUND) as application, \
            application.app_context():
        db.session.execute(text("SELECT 1"))  # connected: the next statement is the one
        losing = threading.Thread(target=answers_lost_for_a_moment, daemon=True)
        started = time.monotonic()
        losing.start()
        db.session.execute(text("SELECT pg_sleep(:seconds)"), {"seconds": sleep})
        assert time.monotonic() - started >= sleep
        losing.join()
        db.session.rollback()


def connection_parameters(url: str, **config: Any) -> dict[str, str]:
    """What libpq connected with, for an app on ``url`` bound to CUT_BOUND."""
    with another_app(url, DATABASE_TIMEOUT=CUT_BOUND, **config) as application, \
            application.app_context():
        return db.session.connection().connection.dbapi_connection.get_dsn_parameters()


def test_every_connection_carries_the_liveness_settings(postgres):
    """Outside any request, as a command connects: the connect bound and the probes, with
    a user timeout as long as the probes' silence (not shorter, or one lost probe ends it)."""
    sent = connection_parameters(postgres)
    assert {name: sent.get(name) for name in ("connect_timeout", "keepalives",
            "keepalives_idle", "keepalives_interval", "keepalives_count",
            "tcp_user_timeout")} == {
        "connect_timeout": "2", "keepalives": "1", "keepalives_idle": "2",
        "keepalives_interval": "1", "keepalives_count": "3", "tcp_user_timeout": "5000"}


def test_liveness_settings_in_the_url_are_left_to_the_operator(postgres):
    """One of them in the URL, and the others are not added around it: a user timeout of
    ours beside a longer keepalive idle would end a connection at its first lost probe."""
    sent = connection_parameters(f"{postgres}?keepalives_idle=60&connect_timeout=9")
    assert (sent["keepalives_idle"], sent["connect_timeout"]) == ("60", "9")
    assert "tcp_user_timeout" not in sent and "keepalives_count" not in sent


def test_liveness_settings_in_a_connection_string_are_left_to_the_operator(postgres):
    """The same given as a libpq connection string in connect_args: psycopg2 lets keyword
    arguments win over it, so ours, added beside it, would have replaced the operator's."""
    sent = connection_parameters(postgres, SQLALCHEMY_ENGINE_OPTIONS={
        "connect_args": {"dsn": "keepalives_idle=60 connect_timeout=9"}})
    assert (sent["keepalives_idle"], sent["connect_timeout"]) == ("60", "9")
    assert "tcp_user_timeout" not in sent and "keepalives_count" not in sent


def test_an_older_libpq_connects_without_the_user_timeout_and_says_so(
        postgres, monkeypatch, caplog):
    """libpq before 12 refuses to connect at all with ``tcp_user_timeout`` ("invalid
    connection option"): the server leaves that one out, keeps the probes, and warns."""
    monkeypatch.setattr(database_timeout, "libpq_version", lambda: 110022)
    with caplog.at_level(logging.WARNING, logger=database_timeout.log.name):
        sent = connection_parameters(postgres)
    assert "tcp_user_timeout" not in sent
    assert {name: sent.get(name) for name in ("connect_timeout", "keepalives",
            "keepalives_idle", "keepalives_count")} == {
        "connect_timeout": "2", "keepalives": "1", "keepalives_idle": "2",
        "keepalives_count": "3"}
    warned = [record.getMessage() for record in caplog.records
              if record.name == database_timeout.log.name]
    assert len(warned) == 1 and "libpq 110022 is older than 12" in warned[0]


# --- what is not cut short ----------------------------------------------------------------


def test_a_command_under_the_lock_waits_and_completes(postgres, app, linked):
    """``incident revoke-account`` meets the locked devices table on a pooled connection
    that served requests a moment ago: it waits past the bound, and revokes after the
    lock is released."""
    token, _ = linked
    with app.app_context():
        email = db.session.scalar(text("SELECT email FROM users"))
    with held(postgres, LOCK_DEVICES) as holder:
        released_after(holder, HELD)
        result, seconds = timed(lambda: app.test_cli_runner().invoke(
            args=["incident", "revoke-account", email, "--reason", "stolen", "--yes"]))
    assert result.exit_code == 0, result.output
    assert seconds >= HELD  # it waited for the lock rather than being cancelled
    assert device_me(app.test_client(), token).status_code == 401


def test_discovery_disable_waits_for_the_switches_lock_past_the_bound(postgres, app,
                                                                      linked):
    """The command waits for the links being committed (the switches' lock, held shared
    here by another session), however long that takes."""
    with held(postgres, SHARE_SWITCH_LOCK) as holder:
        released_after(holder, HELD)
        result, seconds = timed(lambda: app.test_cli_runner().invoke(
            args=["discovery", "disable", "pairing_code", "--reason", "incident"]))
    assert result.exit_code == 0, result.output
    assert seconds >= HELD
    with app.app_context():
        assert db.session.get(StrategyFlag, "pairing_code").enabled is False


def test_a_switch_off_on_the_admin_page_outwaits_the_bound(postgres, app, make_user, login):
    """A request changing a switch waits for the links in progress beyond the bound, up to
    longer than PostgreSQL lets a link's transaction sit idle: a worker cut off in the
    middle of a link cannot make the switch-off fail."""
    idle_seconds = int(idle_transactions.IDLE_TRANSACTION_TIMEOUT.removesuffix("s"))
    assert kill_switch.SWITCH_LOCK_WAIT_SECONDS > idle_seconds
    _, email, password = make_user("root@example.org", is_admin=True)
    admin = login(email, password)
    with held(postgres, SHARE_SWITCH_LOCK) as holder:
        released_after(holder, HELD)
        answer, seconds = timed(lambda: admin.form_post("/admin/kill-switches", {
            "target": "ip_match", "action": "disable", "reason": "LB lost client IPs"}))
    assert answer.status_code == 302, answer.get_data(as_text=True)
    assert seconds >= HELD
    with app.app_context():
        assert db.session.get(StrategyFlag, "ip_match").enabled is False


# --- the setting ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["-1", "26", "1.5", "5s", "true", "[5]", ""])
def test_a_bad_value_stops_start_up_in_one_line(instance, monkeypatch, value):
    monkeypatch.setenv("TSD_DATABASE_TIMEOUT", value)
    with pytest.raises(ConfigurationError, match="TSD_DATABASE_TIMEOUT") as refused:
        create_app({"SECRET_KEY": KEY})
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("value", ["0", "25"])
def test_no_bound_and_the_largest_start(instance, monkeypatch, value):
    monkeypatch.setenv("TSD_DATABASE_TIMEOUT", value)
    assert create_app({"SECRET_KEY": KEY}).config["DATABASE_TIMEOUT"] == int(value)


# --- under gunicorn -------------------------------------------------------------------------

GUNICORN_TIMEOUT = 6  # seconds: the worker timeout these servers run with (30 s shipped)


def workers_of(master_pid: int) -> set[int]:
    workers = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == master_pid:
                workers.add(int(stat.parent.name))
    return workers


@pytest.fixture
def printer_token(postgres, app, make_user, link_device) -> str:
    user_id, _, _ = make_user()
    return link_device(user_id)[1]


@contextmanager
def gunicorn_with(tmp_path, monkeypatch, url: str, bound: int) -> Iterator[Any]:
    monkeypatch.setenv("GUNICORN_CMD_ARGS", f"--timeout {GUNICORN_TIMEOUT}")
    with servers.gunicorn(tmp_path / "gunicorn", database_url=url, workers=1,
                          settings={"DATABASE_TIMEOUT": bound}) as running:
        yield running


def test_under_gunicorn_a_stall_answers_503_in_time_and_the_worker_lives(
        postgres, printer_token, tmp_path, monkeypatch):
    """Requests keep meeting the lock for longer than the worker timeout: each answers 503
    within the bound, the worker is never killed, and serves again once the lock is gone."""
    bearer = {"Authorization": f"Bearer {printer_token}"}
    with gunicorn_with(tmp_path, monkeypatch, postgres, 2) as running:
        me = running.base_url + "/api/v1/device/me"
        assert requests.get(me, headers=bearer, timeout=10).status_code == 200
        (worker,) = workers_of(running.process.pid)
        with held(postgres, LOCK_DEVICES):
            started = time.monotonic()
            while time.monotonic() - started < GUNICORN_TIMEOUT + 1:
                answer, seconds = timed(lambda: requests.get(me, headers=bearer, timeout=10))
                assert answer.status_code == 503, answer.text
                assert answer.headers["Retry-After"] == "5"
                assert answer.json()["error"] == "database_unavailable"
                assert seconds < 3 * 2
        assert requests.get(me, headers=bearer, timeout=10).status_code == 200
        assert workers_of(running.process.pid) == {worker}
    assert "WORKER TIMEOUT" not in running.log_path.read_text()


def test_under_gunicorn_without_the_bound_the_stall_kills_the_worker(
        postgres, printer_token, tmp_path, monkeypatch):
    """The control, and the problem the bound solves: no answer, and a killed worker."""
    bearer = {"Authorization": f"Bearer {printer_token}"}
    with gunicorn_with(tmp_path, monkeypatch, postgres, 0) as running:
        me = running.base_url + "/api/v1/device/me"
        with held(postgres, LOCK_DEVICES), pytest.raises(requests.ConnectionError):
            requests.get(me, headers=bearer, timeout=4 * GUNICORN_TIMEOUT)
    assert "WORKER TIMEOUT" in running.log_path.read_text()
