"""PostgreSQL restarts while a printer waits for approval: the printer waits it out and
links afterwards, and nobody sees a 500: not a linked printer's call, not a logged-in
person's page.

Real components: gunicorn (the project's gunicorn.conf.py) on PostgreSQL through a TCP
relay that the test cuts (every connection closed, new ones hung up on, as a restarting
database does) and restores; the real ``tsd-agent link`` in a thread; the person's side
over HTTP. While the database is away the server answers 503 with Retry-After: the token
poll reads the kill switch first, so it meets ``strategy_disabled`` by
``flag_store_unreadable``, which the agent waits out (tsd_agent/pacing.py); other calls meet
``database_unavailable`` (the agent's wait for that one: the hostile-server tests).
"""

from __future__ import annotations

import re
import secrets
import time

import pytest
from sqlalchemy.engine import make_url

from tests.support import db_backends, servers
from tests.support.agent_runs import USER_CODE_LINE, AgentRun
from tests.support.apps import another_app
from tests.support.ip_match_world import HttpEndpoint, Person
from tests.support.pairing import LOOSE_LIMITS, shown_request
from tests.support.skips import skip_loudly
from tests.support.tcp_relay import tcp_relay
from tsd_agent import messages as m
from tsd_agent.state import load

WAITED_OUT = re.compile(r"(the server's database cannot be reached|the server cannot read its "
                        r"kill switch) right now: the server asks to retry in 5 seconds")
SETTINGS = {**LOOSE_LIMITS, "DEVICE_FLOW_INTERVAL": 1, "KILL_SWITCH_CACHE_SECONDS": 0}


@pytest.fixture(scope="module")
def restart_database():
    role = db_backends.find_postgres()
    if role is None:
        skip_loudly("PostgreSQL is NOT reachable at 127.0.0.1:5432: the database restart "
                    "test is SKIPPED.", "TSD_TEST_REQUIRE_POSTGRES")
    with db_backends.migrated_postgres_database(role, "tsd_restart") as url:
        yield url


@pytest.fixture
def relay():
    with tcp_relay(db_backends.PG_HOST, db_backends.PG_PORT) as running:
        yield running


@pytest.fixture
def server(restart_database, relay, tmp_path):
    through_relay = make_url(restart_database).set(port=relay.port).render_as_string(
        hide_password=False)
    with servers.gunicorn(tmp_path, database_url=through_relay, settings=SETTINGS,
                          workers=1) as running:
        yield running


def until_answered(request, attempts: int = 3):
    """A request right after the database came back may meet a pooled connection that
    died with it: one 503 per pool (docs/production.md), never a 500."""
    for _ in range(attempts):
        reply = request()
        if reply.status != 503:
            return reply
        assert reply.body["error"] in ("database_unavailable", "strategy_disabled"), reply.body
        time.sleep(0.2)
    return reply


def test_a_printer_waiting_for_approval_outlives_a_database_restart(restart_database, relay,
                                                                    server, tmp_path):
    email, password = f"owner-{secrets.token_hex(4)}@example.org", "correct horse battery"
    with another_app(restart_database) as app, app.app_context():
        from tsd_server.auth.accounts import create_user

        user_id = create_user(email, password, display_name="Owner").id
    person = Person(HttpEndpoint(server.base_url, "127.0.0.1"), "127.0.0.1", user_id, email,
                    password, "Owner")
    with another_app(restart_database) as app, app.test_request_context():
        from tsd_server.discovery.link_service import link_device
        from tsd_server.extensions import db
        from tsd_server.models import User

        linked_token = link_device(owner=db.session.get(User, user_id), device_uid="linked-1",
                                   name="Already linked", model=None, strategy="pairing_code",
                                   actor=f"user:{user_id}", address=None).access_token
    state = tmp_path / "state.json"
    run = AgentRun.in_process(["--server", server.base_url, "--state", str(state),
                               "--name", "Restart printer", "link", "--no-qr"])
    try:
        user_code = run.out.wait_for(USER_CODE_LINE).group(1)
    except AssertionError:
        raise AssertionError(run.err.text) from None

    relay.cut()  # PostgreSQL goes away while the printer polls
    run.err.wait_for(WAITED_OUT)
    # Meanwhile: a linked printer's call and a logged-in person's page answer 503, not 500
    # (the page's navigation would read the person's account from the database).
    me = person.endpoint.request("GET", "/api/v1/device/me",
                                 headers={"Authorization": f"Bearer {linked_token}"})
    assert (me.status, me.body["error"], me.headers["Retry-After"]) == (
        503, "database_unavailable", "5"), me.body
    page = person.endpoint.request("GET", "/")
    assert page.status == 503 and "Temporarily unavailable" in page.body, server.log_tail(40)
    relay.restore()

    typed = until_answered(lambda: person.endpoint.request(
        "POST", "/link", data={"code": user_code, "csrf_token": person.csrf}))
    assert typed.status == 302, typed.body
    page = until_answered(lambda: person.endpoint.request("GET", "/link/confirm"))
    approved = person.endpoint.request("POST", "/link/confirm", data={
        "decision": "approve", "authorization": shown_request(page.body),
        "csrf_token": person.csrf})
    assert approved.status == 302, approved.body

    assert run.finish() == m.EXIT_OK, run.err.text
    saved = load(state, warn=pytest.fail)
    me = person.endpoint.request("GET", "/api/v1/device/me",
                                 headers={"Authorization": f"Bearer {saved.access_token}"})
    assert me.status == 200 and me.body["device"]["name"] == "Restart printer", me.body
    log = server.log_path.read_text(errors="replace")
    assert "unhandled error" not in log and "Error handling request" not in log, \
        server.log_tail(80)
    assert '" 500 ' not in log, server.log_tail(80)
    assert log.count("database unavailable on") == 1, server.log_tail(80)  # once a minute
