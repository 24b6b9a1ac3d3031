"""How many gunicorn workers gunicorn.conf.py starts, and why: rate limits kept in memory://
are per process, so N workers would give one address N times the code guesses that
docs/security.md's brute-force bound allows."""

from __future__ import annotations

import multiprocessing
import runpy
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.support import db_backends, servers

WARNING = "each on its own"


@pytest.fixture(scope="module")
def default_workers():
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))["default_workers"]


@pytest.mark.parametrize("environ, expected", [
    ({}, 1),
    ({"TSD_RATELIMIT_STORAGE_URI": "memory://"}, 1),
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
    with servers.gunicorn(tmp_path / "gunicorn", database_url=sqlite_url, workers=2) as running:
        deadline = time.monotonic() + 10
        while WARNING not in running.log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert worker_count(running.process.pid) == 2
    log = running.log_path.read_text()
    assert log.count(WARNING) == 1, log
    assert "2 workers keep rate limits in memory://" in log
