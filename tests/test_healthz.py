"""GET /healthz answers ok only when the database answers."""

from __future__ import annotations

import pytest

from tests.support.db_backends import UNREACHABLE_URLS
from tsd_server import create_app


def test_ok_with_a_database(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("url", UNREACHABLE_URLS.values(), ids=UNREACHABLE_URLS.keys())
def test_unreachable_database_is_503(url, tmp_path, monkeypatch):
    monkeypatch.setenv("TSD_INSTANCE_PATH", str(tmp_path / "instance"))
    app = create_app({"TESTING": True, "SECRET_KEY": "k" * 32, "DATABASE_URL": url})
    client = app.test_client()
    for _ in range(2):  # and it stays a clean 503, not a broken session afterwards
        response = client.get("/healthz")
        assert response.status_code == 503
        # An error in the shared shape; "status" and "database" stay for monitoring.
        assert response.get_json() == {
            "status": "error", "database": "unreachable", "error": "database_unavailable",
            "message": "The server's database cannot be reached right now."}


@pytest.mark.parametrize("method, path, status, code", [
    ("POST", "/healthz", 405, "method_not_allowed"),
    ("GET", "/healthz/", 404, "not_found"),
])
def test_its_errors_are_json_too(client, method, path, status, code):
    """A monitor reads JSON from /healthz: its errors are in the contract's shape, not an
    HTML page."""
    response = client.open(path, method=method)
    assert response.status_code == status
    assert response.is_json and response.get_json()["error"] == code, response.data[:80]
    assert response.get_json()["message"]
