"""What `make run` does, as real processes on a fresh instance folder: `flask db upgrade`
creates the default SQLite database and the development key, gunicorn serves wsgi:app with
several workers that share that key, and a restart keeps people logged in.
"""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.support import servers

PASSWORD = "correct horse battery"
CSRF_FIELD = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


@pytest.fixture
def fresh_env(tmp_path) -> dict[str, str]:
    """As on a new machine: only TSD_ENV=development (the Makefile's) and an empty instance."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TSD_")}
    env["TSD_ENV"] = "development"
    env["TSD_INSTANCE_PATH"] = str(tmp_path / "instance")
    return env


def serve(tmp_path, fresh_env):
    """gunicorn with the project's config and no secret key given. The database is the
    default file in the instance folder, named (an empty TSD_DATABASE_URL stops start-up)."""
    database = Path(fresh_env["TSD_INSTANCE_PATH"]) / "tsd.sqlite3"
    return servers.gunicorn(
        tmp_path / "gunicorn", database_url=f"sqlite:///{database}", workers=3, settings={
            "ENV": "development", "SECRET_KEY": "",
            "INSTANCE_PATH": fresh_env["TSD_INSTANCE_PATH"], "LOG_LEVEL": "INFO"})


def form_post(session, url, data):
    token = CSRF_FIELD.search(session.get(url, timeout=10).text).group(1)
    return session.post(url, data={**data, "csrf_token": token}, allow_redirects=False,
                        timeout=10)


def test_fresh_instance_migrates_and_serves(tmp_path, fresh_env):
    instance = tmp_path / "instance"
    upgrade = subprocess.run([sys.executable, "-m", "flask", "--app", "tsd_server", "db",
                              "upgrade"], env=fresh_env, cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
    assert upgrade.returncode == 0, upgrade.stderr

    database = instance / "tsd.sqlite3"
    with sqlite3.connect(database) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert {"users", "devices", "audit_events", "strategy_flags", "alembic_version"} <= tables
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    key_file = instance / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text()

    with serve(tmp_path, fresh_env) as server:
        http = servers.http_session()
        assert http.get(server.base_url + "/healthz", timeout=10).json() == {"status": "ok"}
        seen = http.get(server.base_url + "/api/v1/client-address", timeout=10).json()
        assert seen["client_ip"] == "127.0.0.1"
        assert seen["ip_match"] == {"eligible": False, "reason": "non_public_address"}

        assert form_post(http, server.base_url + "/register", {
            "email": "alice@example.org", "display_name": "Alice", "password": PASSWORD,
            "confirm": PASSWORD}).status_code == 302
        assert form_post(http, server.base_url + "/login", {
            "email": "alice@example.org", "password": PASSWORD}).status_code == 302
        # Several requests land on several workers: each accepts the one session cookie.
        for _ in range(12):
            assert http.get(server.base_url + "/api/v1/devices", timeout=10).status_code == 200

    assert key_file.read_text() == key
    with serve(tmp_path, fresh_env) as server:  # a restart: same key, still logged in
        assert http.get(server.base_url + "/api/v1/devices", timeout=10).json() == {
            "devices": []}


def test_make_run_keeps_the_database_private(tmp_path):
    """The SQLite file holds emails, password hashes and the audit trail: with a usual umask
    (022) `make run` still creates it for its user only, and closes an instance folder that
    an older `make run` left open to everyone."""
    instance = tmp_path / "make-run" / "instance"
    instance.mkdir(parents=True)
    instance.chmod(0o755)
    old_umask = os.umask(0o022)
    try:
        with servers.make_run(tmp_path / "make-run", {}) as server:
            assert servers.http_session().get(server.base_url + "/healthz",
                                              timeout=10).status_code == 200
            modes = {path.name: stat.S_IMODE(path.stat().st_mode)
                     for path in (instance, instance / "tsd.sqlite3", instance / "secret_key")}
    finally:
        os.umask(old_umask)
    assert modes == {"instance": 0o700, "tsd.sqlite3": 0o600, "secret_key": 0o600}
