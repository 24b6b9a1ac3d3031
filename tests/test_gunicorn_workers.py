"""How many gunicorn workers gunicorn.conf.py starts, and why: rate limits kept in memory://
are per process, so N workers would give one address N times the code guesses that
docs/security.md's brute-force bound allows. Outside development gunicorn refuses to start
that way; in development it says so once."""

from __future__ import annotations

import multiprocessing
import os
import runpy
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.support import db_backends, servers

WARNING = "each on its own"
REFUSAL = "Refusing to start: 2 workers keep rate limits in memory://"


@pytest.fixture(scope="module")
def default_workers():
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))["default_workers"]


@pytest.mark.parametrize("environ, expected", [
    ({}, 1),
    ({"TSD_RATELIMIT_STORAGE_URI": "memory://"}, 1),
    ({"TSD_RATELIMIT_STORAGE_URI": "memory:"}, 1),  # other spellings limits takes
    ({"TSD_RATELIMIT_STORAGE_URI": "MEMORY://"}, 1),
    ({"TSD_RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379/0"},
     min(4, multiprocessing.cpu_count() * 2)),
    ({"TSD_RATELIMIT_STORAGE_URI": "memory://", "TSD_WORKERS": "3"}, 3),
])
def test_one_worker_unless_the_limits_are_shared(default_workers, environ, expected):
    assert default_workers(environ) == expected


@pytest.fixture
def sqlite_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'workers.sqlite3'}"
    db_backends.migrate(url)
    return url


def worker_count(master_pid: int) -> int:
    """Processes whose parent is gunicorn's master."""
    count = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        count += int(fields[1]) == master_pid
    return count


def test_the_default_server_runs_one_worker_and_warns_of_nothing(tmp_path, sqlite_url):
    with servers.gunicorn(tmp_path / "gunicorn", database_url=sqlite_url, workers=None) as running:
        assert worker_count(running.process.pid) == 1
    assert WARNING not in running.log_path.read_text()


def test_several_workers_on_memory_storage_are_warned_about_once(tmp_path, sqlite_url):
    """In development (TSD_ENV=development) they start, with one error in the log."""
    with servers.gunicorn(tmp_path / "gunicorn", database_url=sqlite_url, workers=2,
                          settings={"ENV": "development"}) as running:
        deadline = time.monotonic() + 10
        while WARNING not in running.log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert worker_count(running.process.pid) == 2
    log = running.log_path.read_text()
    assert log.count(WARNING) == 1, log
    assert "2 workers keep rate limits in memory://" in log
    assert "Refusing" not in log


def run_gunicorn(tmp_path, database_url: str, settings: dict, args: list[str]):
    """gunicorn with the project's config in production, as far as it gets in 60 s."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TSD_")}
    env.update(servers.setting_env({
        "ENV": "production", "SECRET_KEY": secrets.token_hex(32), "DATABASE_URL": database_url,
        "INSTANCE_PATH": str(tmp_path / "instance"), **settings}))
    command = [sys.executable, "-m", "gunicorn", "--config", str(ROOT / "gunicorn.conf.py"),
               "--bind", f"127.0.0.1:{servers.free_port()}", *args, "wsgi:app"]
    return subprocess.run(servers.dies_with_the_tests(command), env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("settings, args", [
    ({"WORKERS": "2"}, []),
    ({"RATELIMIT_STORAGE_URI": "memory://"}, ["--workers", "2"]),
    ({"RATELIMIT_STORAGE_URI": "MEMORY://"}, ["--workers", "2"]),
    ({"RATELIMIT_STORAGE_URI": "memory:"}, ["--workers", "2"]),
])
def test_several_workers_on_memory_storage_do_not_start_in_production(
        tmp_path, sqlite_url, settings, args):
    ran = run_gunicorn(tmp_path, sqlite_url, settings, args)
    assert ran.returncode == 3, ran.stderr  # gunicorn's "Worker failed to boot."
    assert REFUSAL in ran.stderr, ran.stderr
    assert "Set TSD_RATELIMIT_STORAGE_URI to a Redis" in ran.stderr


def test_several_workers_with_a_shared_storage_start_in_production(tmp_path, sqlite_url):
    # Nothing listens on port 1: the workers start all the same (rate-limited requests
    # would answer 503 rate_limit_unavailable), which is all this needs.
    with servers.gunicorn(tmp_path / "gunicorn", database_url=sqlite_url, workers=2,
                          settings={"RATELIMIT_STORAGE_URI": "redis://127.0.0.1:1"}) as running:
        assert worker_count(running.process.pid) == 2
    assert WARNING not in running.log_path.read_text()


def test_a_database_out_of_reach_does_not_stop_the_start(tmp_path):
    """Exit status 3 means a refused setting, never an outage: deploy/tsd-server.service
    does not retry it (RestartPreventExitStatus=3), so a database that comes up after the
    machine must not make the start fail. The instance answers, 503 where it needs it."""
    unreachable = db_backends.UNREACHABLE_URLS["postgresql"]
    with servers.gunicorn(tmp_path / "gunicorn", database_url=unreachable, workers=1) as running:
        session = servers.http_session()
        assert session.get(running.base_url + "/api/v1/ping").status_code == 200
        health = session.get(running.base_url + "/healthz")
        assert (health.status_code, health.json()["status"], health.json()["error"]) == (
            503, "error", "database_unavailable")
        assert running.process.poll() is None
