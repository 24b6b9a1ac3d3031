"""GET /api/v1/discovery/status: anyone can see which ways of linking are on."""

from __future__ import annotations

from tests.support.apps import another_app
from tsd_server.discovery import kill_switch


def test_all_on_by_default(client):
    response = client.get("/api/v1/discovery/status")
    assert response.status_code == 200
    strategies = response.get_json()["strategies"]
    assert set(strategies) == {"ip_match", "pairing_code", "qr_code"}
    for entry in strategies.values():
        assert entry["enabled"] is True
        assert entry["disabled_by"] is None and entry["reason"] is None
        assert entry["title"]


def test_reports_runtime_switch_off_without_the_operators_words(app, client):
    with app.app_context():
        kill_switch.set_flag("ip_match", enabled=False,
                             reason="stranger alice@example.org from 9.9.9.9", actor="admin:1")
    response = client.get("/api/v1/discovery/status")
    entry = response.get_json()["strategies"]["ip_match"]
    assert entry["enabled"] is False and entry["disabled_by"] == "runtime"
    assert entry["reason"] == "Switched off by an administrator."
    text = response.get_data(as_text=True)
    assert "alice" not in text and "9.9.9.9" not in text and "admin:1" not in text
    assert response.get_json()["strategies"]["qr_code"]["enabled"] is True


def test_automatic_switch_off_is_explained_as_such(app, client):
    with app.app_context():
        kill_switch.set_flag("ip_match", enabled=False, reason="breaker", actor="auto")
    entry = client.get("/api/v1/discovery/status").get_json()["strategies"]["ip_match"]
    assert entry["reason"].startswith("Switched off automatically")


def test_reports_deployment_layer(app, database):
    with another_app(database, DISCOVERY_DISABLED="all") as application:
        strategies = application.test_client().get(
            "/api/v1/discovery/status").get_json()["strategies"]
    assert all(e["enabled"] is False and e["disabled_by"] == "deployment"
               for e in strategies.values())


def test_needs_no_login_and_no_csrf(client):
    assert client.get("/api/v1/discovery/status").status_code == 200
    assert client.post("/api/v1/discovery/status").status_code == 405
