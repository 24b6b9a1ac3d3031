"""The kill switch: two layers, every process within a second, unreadable means off."""

from __future__ import annotations

import time

import pytest
from flask import Blueprint, jsonify
from sqlalchemy import event, select, text

from tests.support.apps import another_app, flags_table_renamed
from tsd_server.discovery import kill_switch, registry
from tsd_server.extensions import db
from tsd_server.models import AuditEvent, StrategyFlag

STRATEGIES = {"ip_match", "pairing_code", "qr_code"}


@pytest.fixture
def second(app, database):
    """Another server process on the same database."""
    with another_app(database) as application:
        yield application


def guard_probe(application, strategy: str = "qr_code") -> None:
    """Give an app one JSON and one HTML route owned by ``strategy`` (before any request)."""
    probe = Blueprint(f"probe_{strategy}", __name__)

    @probe.get(f"/api/v1/probe/{strategy}")
    def api_probe():
        return jsonify({"reached": True})

    @probe.get(f"/probe/{strategy}")
    def page_probe():
        return "reached"

    application.register_blueprint(probe)
    registry.guard_blueprint(application, probe.name, strategy)


def states(application, fresh=True) -> dict[str, kill_switch.StrategyState]:
    with application.app_context():
        return kill_switch.all_states(fresh=fresh)


def wait_until(predicate, deadline_seconds: float) -> bool:
    """Poll ``predicate`` until it holds or the deadline passes (no duration is asserted)."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


# --- propagation between processes --------------------------------------------------------

def test_toggle_in_one_process_is_honoured_by_another_within_one_second(app, second):
    guard_probe(app)
    client = app.test_client()
    assert client.get("/api/v1/probe/qr_code").status_code == 200  # cached as on in `app`

    with second.app_context():
        kill_switch.set_flag("qr_code", enabled=False, reason="drill", actor="cli")
    assert wait_until(lambda: client.get("/api/v1/probe/qr_code").status_code == 503, 1.0), \
        "the other process still served qr_code a second after the switch-off"
    body = client.get("/api/v1/probe/qr_code").get_json()
    assert body["error"] == "strategy_disabled" and body["disabled_by"] == "runtime"

    with second.app_context():
        kill_switch.set_flag("qr_code", enabled=True, reason="drill over", actor="cli")
    assert wait_until(lambda: client.get("/api/v1/probe/qr_code").status_code == 200, 1.0)


def test_switching_all_off_reaches_the_other_process_and_every_strategy(app, second):
    client = app.test_client()
    assert all(s["enabled"] for s in
               client.get("/api/v1/discovery/status").get_json()["strategies"].values())
    with second.app_context():
        kill_switch.set_flag("all", enabled=False, reason="emergency", actor="cli")

    def all_off():
        body = client.get("/api/v1/discovery/status").get_json()["strategies"]
        return not any(s["enabled"] for s in body.values())

    assert wait_until(all_off, 1.0)


def test_guard_answers_503_on_api_routes_and_a_page_elsewhere(app):
    guard_probe(app, "pairing_code")
    with app.app_context():
        kill_switch.set_flag("pairing_code", enabled=False, reason="secret reason 10.1.2.3",
                             actor="cli")
    client = app.test_client()
    api = client.get("/api/v1/probe/pairing_code")
    assert api.status_code == 503
    assert api.get_json() == {"error": "strategy_disabled", "strategy": "pairing_code",
                              "disabled_by": "runtime",
                              "message": "Linking by pairing_code is switched off on this server."}
    assert "Retry-After" not in api.headers  # an operator's decision, not an outage
    page = client.get("/probe/pairing_code")
    assert page.status_code == 503 and "text/html" in page.content_type
    html = page.get_data(as_text=True)
    assert "switched off" in html and "reached" not in html
    assert "secret reason" not in html  # the operator's own words stay internal


def test_guard_covers_nested_blueprints(app):
    parent = Blueprint("probe_parent", __name__, url_prefix="/api/v1/nested")
    child = Blueprint("child", __name__)

    @child.get("/inner")
    def inner():
        return jsonify({"reached": True})

    parent.register_blueprint(child)
    app.register_blueprint(parent)
    registry.guard_blueprint(app, "probe_parent", "ip_match")
    with app.app_context():
        kill_switch.set_flag("ip_match", enabled=False, reason="test", actor="cli")
    assert app.test_client().get("/api/v1/nested/inner").status_code == 503


# --- deployment layer ---------------------------------------------------------------------

@pytest.mark.parametrize(("setting", "off"), [
    ("all", STRATEGIES),
    ("ip_match,qr_code", {"ip_match", "qr_code"}),
    (" IP_MATCH , qr_code ", {"ip_match", "qr_code"}),
    (["pairing_code"], {"pairing_code"}),
    # A typo must not leave everything on: an unknown name holds every strategy off.
    ("ip-match", STRATEGIES),
    (True, STRATEGIES),
    (17, STRATEGIES),
])
def test_deployment_setting(app, database, setting, off):
    with another_app(database, DISCOVERY_DISABLED=setting) as application:
        current = states(application)
    assert {name for name, s in current.items() if not s.enabled} == off
    assert all(current[name].disabled_by == "deployment" for name in off)


def test_environment_variable_switch_cannot_be_overridden_at_runtime(app, database, monkeypatch):
    monkeypatch.setenv("TSD_DISCOVERY_DISABLED", "ip_match,qr_code")
    with another_app(database) as application:
        with application.app_context():
            kill_switch.set_flag("all", enabled=True, reason="try to override", actor="cli")
            kill_switch.set_flag("ip_match", enabled=True, reason="try again", actor="cli")
        current = states(application)
        assert not current["ip_match"].enabled and current["ip_match"].disabled_by == "deployment"
        assert not current["qr_code"].enabled
        assert current["pairing_code"].enabled
        guard_probe(application, "ip_match")
        response = application.test_client().get("/api/v1/probe/ip_match")
        assert response.status_code == 503
        assert response.get_json()["disabled_by"] == "deployment"


def test_bad_cache_setting_stops_start_up(database):
    from tsd_server.config import ConfigurationError

    with pytest.raises(ConfigurationError, match="KILL_SWITCH_CACHE_SECONDS"):
        with another_app(database, KILL_SWITCH_CACHE_SECONDS="soon"):
            pass


# --- unreadable flag store ----------------------------------------------------------------

@pytest.fixture
def flags_table_gone(app):
    with flags_table_renamed(app):
        yield


def test_unreadable_flag_store_disables_everything_without_a_500(app, flags_table_gone):
    guard_probe(app)
    client = app.test_client()
    response = client.get("/api/v1/discovery/status")
    assert response.status_code == 200
    for name, entry in response.get_json()["strategies"].items():
        assert entry["enabled"] is False, name
        assert entry["disabled_by"] == "flag_store_unreadable"
    probe = client.get("/api/v1/probe/qr_code")
    assert probe.status_code == 503 and probe.get_json()["disabled_by"] == "flag_store_unreadable"
    assert probe.headers["Retry-After"] == "5"  # temporary: a printer asks again, not gives up
    # The failed read happened on its own connection: the session still works.
    with app.app_context():
        assert kill_switch.is_enabled("pairing_code", fresh=True) is False
        assert db.session.execute(text("SELECT 1")).scalar() == 1


def test_store_readable_again_brings_strategies_back(app):
    with flags_table_renamed(app), app.app_context():
        assert not kill_switch.is_enabled("qr_code", fresh=True)
    with app.app_context():
        assert kill_switch.is_enabled("qr_code", fresh=True)


def test_app_on_a_database_without_the_flags_table(tmp_path):
    """A deployment that forgot `flask db upgrade`: discovery is off, nothing crashes."""
    url = f"sqlite:///{tmp_path / 'not-migrated.sqlite3'}"
    with another_app(url) as application:
        response = application.test_client().get("/api/v1/discovery/status")
        assert response.status_code == 200
        body = response.get_json()["strategies"]
        assert set(body) == STRATEGIES
        assert all(not s["enabled"] and s["disabled_by"] == "flag_store_unreadable"
                   for s in body.values())


def test_database_down_means_disabled():
    url = "postgresql+psycopg2://nobody@127.0.0.1:1/none"  # nothing listens on port 1
    with another_app(url, SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"connect_timeout": 2}}) \
            as application:
        assert not any(s.enabled for s in states(application).values())


# --- set_flag -----------------------------------------------------------------------------

def test_set_flag_is_audited_with_actor_and_reason(app):
    with app.app_context():
        kill_switch.set_flag("ip_match", enabled=False, reason="  LB broken  ", actor="admin:7")
        row = db.session.scalar(select(AuditEvent).where(AuditEvent.event == "flag_toggle"))
        assert (row.actor, row.strategy, row.outcome, row.detail) == \
            ("admin:7", "ip_match", "disabled", "LB broken")
        flag = db.session.get(StrategyFlag, "ip_match")
        assert (flag.enabled, flag.changed_by, flag.reason) == (False, "admin:7", "LB broken")
        current = kill_switch.state("ip_match")
        assert (current.changed_by, current.reason) == ("admin:7", "LB broken")
        assert current.changed_at is not None and current.changed_at.tzinfo is not None


@pytest.mark.parametrize(("target", "enabled", "reason", "message"), [
    ("ip_match", False, None, "reason is required"),
    ("ip_match", False, "   ", "reason is required"),
    ("ip_match", False, "x" * 501, "longer than"),
    ("ip-match", False, "typo", "unknown strategy"),
    ("", True, "empty", "unknown strategy"),
])
def test_set_flag_refuses_bad_input_and_changes_nothing(app, target, enabled, reason, message):
    with app.app_context():
        with pytest.raises(ValueError, match=message):
            kill_switch.set_flag(target, enabled=enabled, reason=reason, actor="cli")
        assert db.session.scalar(select(StrategyFlag)) is None
        assert db.session.scalar(select(AuditEvent)) is None


def test_enable_all_clears_every_runtime_switch_off_and_says_so(app):
    with app.app_context():
        kill_switch.set_flag("ip_match", enabled=False, reason="a", actor="auto")
        kill_switch.set_flag("all", enabled=False, reason="b", actor="cli")
        assert not any(kill_switch.all_states(fresh=True)[n].enabled for n in STRATEGIES)
        kill_switch.set_flag("all", enabled=True, reason="incident over", actor="cli")
        assert all(s.enabled for s in kill_switch.all_states(fresh=True).values())
        last = db.session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
        assert "also cleared: ip_match" in last.detail


def test_enabling_one_strategy_leaves_the_all_switch_in_force(app):
    with app.app_context():
        kill_switch.set_flag("all", enabled=False, reason="stop", actor="cli")
        kill_switch.set_flag("qr_code", enabled=True, reason="only qr", actor="cli")
        assert not kill_switch.is_enabled("qr_code", fresh=True)


def test_unknown_strategy_name_counts_as_disabled(app):
    with app.app_context():
        current = kill_switch.state("ip-match")
        assert not current.enabled and current.disabled_by == "unknown_strategy"
        with pytest.raises(kill_switch.StrategyDisabled):
            kill_switch.require_enabled("no_such_strategy")


def test_concurrent_creation_of_the_same_flag_row_is_not_a_500(app, second):
    """Both processes see no row; the other one inserts it just before this one takes the
    switches' lock (PostgreSQL's advisory lock; on SQLite the write that starts its write
    transaction), as a second switch change would wait for it. This one's write lands as an
    update: no IntegrityError, last write wins, both audited."""
    interleaved = []
    first_write = ("UPDATE STRATEGY_FLAGS", "SELECT PG_ADVISORY_XACT_LOCK(")

    def other_process_inserts_first(conn, cursor, statement, parameters, context, many):
        if interleaved or not statement.lstrip().upper().startswith(first_write):
            return
        interleaved.append(True)
        with second.app_context():
            kill_switch.set_flag("qr_code", enabled=False, reason="from B", actor="cli")

    with app.app_context():
        engine = db.engine
        assert db.session.get(StrategyFlag, "qr_code") is None
    event.listen(engine, "before_cursor_execute", other_process_inserts_first)
    try:
        with app.app_context():
            kill_switch.set_flag("qr_code", enabled=False, reason="from A", actor="admin:1")
    finally:
        event.remove(engine, "before_cursor_execute", other_process_inserts_first)
    assert interleaved, "the interleaving did not happen; the test proves nothing"
    with app.app_context():
        assert db.session.get(StrategyFlag, "qr_code").reason == "from A"
        toggles = db.session.scalars(select(AuditEvent.actor).where(
            AuditEvent.event == "flag_toggle").order_by(AuditEvent.id)).all()
        assert toggles == ["cli", "admin:1"]


def test_set_flag_commits_what_the_caller_had_pending(app):
    """A breaker records its own audit row, then switches off: both land."""
    from tsd_server import audit

    with app.app_context():
        audit.record("breaker_trip", actor="auto", strategy="ip_match", detail="pending")
        kill_switch.set_flag("ip_match", enabled=False, reason="breaker", actor="auto")
        db.session.rollback()
        events = db.session.scalars(select(AuditEvent.event).order_by(AuditEvent.id)).all()
    assert events == ["breaker_trip", "flag_toggle"]
