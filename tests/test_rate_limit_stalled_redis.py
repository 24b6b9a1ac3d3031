"""A Redis that stops answering without refusing connections (tsd_server/redis_storage.py).

tests/test_rate_limit_outage.py covers a Redis that refuses: every call fails at once. Here
Redis accepts and then says nothing, as a stopped process or a vanished host does, and each
call would wait for a timeout. Rate-limited requests must still be refused (503), Redis must
be asked once per hold rather than once per request, and the routes without a limit must
keep answering under gunicorn while Redis stalls.

Two stand-ins for the stalled Redis: ``SilentListener``, a loopback socket that accepts and
never answers (it counts what reaches it, so a test can tell whether Redis was asked), and
a real redis-server of the test's own, stopped with SIGSTOP.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
import requests

from tests.support import db_backends, servers
from tests.support.apps import another_app
from tests.support.pairing import authorize
from tests.support.rows import count_rows
from tests.support.skips import skip_loudly

# Short waits keep the Flask-level tests quick; the gunicorn test keeps the defaults.
QUICK_TIMEOUTS = {"socket_timeout": 0.2, "socket_connect_timeout": 0.2}


class SilentListener:
    """A TCP listener on loopback that accepts connections, reads and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.received = 0
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def uri(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._open.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        while True:
            try:
                data = conn.recv(4096)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                self.received += len(data)

    def seen(self) -> tuple[int, int]:
        with self._lock:
            return self.connections, self.received

    def close(self) -> None:
        self.sock.close()
        for conn in self._open:
            conn.close()


@pytest.fixture(autouse=True)
def fresh_storage_options(monkeypatch):
    """The Limiter is one object per process and merges every app's storage options into
    the last; each app here starts from none, as in a fresh process (storage_app clears
    this test's own dict)."""
    from tsd_server.extensions import limiter

    monkeypatch.setattr(limiter, "_storage_options", {})


@pytest.fixture
def silent():
    listener = SilentListener()
    yield listener
    listener.close()


@pytest.fixture
def own_redis(tmp_path):
    if not servers.redis_server_available():
        skip_loudly(f"redis-server is NOT installed ({servers.REDIS_SERVER}): the stalled-"
                    "Redis tests are SKIPPED.")
    with servers.redis_server(tmp_path / "redis") as server:
        yield server


@contextmanager
def storage_app(database, tmp_path, uri: str, **options) -> Iterator[Any]:
    """An app on the test database, empty, whose rate limits use ``uri``."""
    from tsd_server.extensions import db, limiter

    limiter._storage_options.clear()  # the fixture's own dict: see fresh_storage_options
    with another_app(database, INSTANCE_PATH=str(tmp_path / "instance"),
                     RATELIMIT_STORAGE_URI=uri,
                     RATELIMIT_STORAGE_OPTIONS=options) as application:
        with application.app_context():
            db_backends.empty_all_tables(db)
        yield application


def limit_storage():
    from tsd_server.extensions import limiter

    return limiter.storage


def hold_runs_out(monkeypatch) -> None:
    """The storage's clock moves past the hold."""
    from tsd_server import redis_storage

    later = redis_storage.monotonic() + redis_storage.HOLD_SECONDS + 1
    monkeypatch.setattr(redis_storage, "monotonic", lambda: later)


def refused(response) -> None:
    assert response.status_code == 503, (response.status_code, response.get_data(as_text=True))
    assert response.get_json()["error"] == "rate_limit_unavailable"


def test_a_silent_redis_is_asked_once_per_hold(database, tmp_path, silent, monkeypatch):
    from tsd_server.models import DeviceAuthorization

    with storage_app(database, tmp_path, silent.uri, **QUICK_TIMEOUTS) as application:
        client = application.test_client()

        refused(authorize(client))
        asked = silent.seen()
        assert asked[0] == 1 and asked[1] > 0, asked  # the first request did try Redis

        for _ in range(5):
            refused(authorize(client))
        assert silent.seen() == asked  # ... the next ones, within the hold, did not
        assert count_rows(application, DeviceAuthorization) == 0  # and nothing was served

        hold_runs_out(monkeypatch)
        refused(authorize(client))
        assert silent.seen()[1] > asked[1]  # once the hold is over, Redis is asked again


def test_a_stopped_redis_fails_closed_and_is_used_again_once_it_answers(
        database, tmp_path, own_redis, monkeypatch):
    from tsd_server.models import DeviceAuthorization

    with storage_app(database, tmp_path, own_redis.base_url) as application:
        client = application.test_client()
        assert authorize(client, device_id="printer-0001").status_code == 200

        own_redis.stall()
        refused(authorize(client, device_id="printer-0002"))
        own_redis.resume()
        refused(authorize(client, device_id="printer-0003"))  # still held: Redis not asked yet
        hold_runs_out(monkeypatch)
        assert authorize(client, device_id="printer-0004").status_code == 200
        with application.app_context():
            from tsd_server.extensions import db

            ids = set(db.session.scalars(db.select(DeviceAuthorization.device_uid)))
        assert ids == {"printer-0001", "printer-0004"}
        assert count_rows(application, DeviceAuthorization) == 2


def test_an_error_redis_answers_with_fails_closed_and_starts_no_hold(
        database, tmp_path, own_redis):
    """Redis answers at once, with an error (out of memory): nothing to wait for, so each
    request asks it again and the first one after it recovers is served."""
    import redis

    from tsd_server.models import DeviceAuthorization

    with storage_app(database, tmp_path, own_redis.base_url) as application:
        client = application.test_client()
        admin = redis.Redis.from_url(own_redis.base_url)
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)  # every write is refused with OOM
        refused(authorize(client, device_id="printer-0001"))
        before = admin.info("stats")["total_commands_processed"]
        refused(authorize(client, device_id="printer-0002"))
        # The second reached Redis too (one of the two INFO calls counts as well).
        assert admin.info("stats")["total_commands_processed"] >= before + 2

        admin.config_set("maxmemory", 0)
        assert authorize(client, device_id="printer-0003").status_code == 200
        assert count_rows(application, DeviceAuthorization) == 1


def test_timeouts_default_to_one_second_and_settings_win(database, tmp_path, own_redis):
    from tsd_server.redis_storage import TIMEOUT_SECONDS

    def timeouts(application_uri: str, **options) -> tuple[float, float]:
        with storage_app(database, tmp_path, application_uri, **options):
            kwargs = limit_storage().storage.connection_pool.connection_kwargs
        return kwargs["socket_connect_timeout"], kwargs["socket_timeout"]

    assert TIMEOUT_SECONDS == 1.0
    assert timeouts(own_redis.base_url) == (1.0, 1.0)
    assert timeouts(own_redis.base_url, socket_timeout=2.5) == (1.0, 2.5)
    assert timeouts(own_redis.base_url + "?socket_connect_timeout=3") == (3.0, 1.0)


@pytest.fixture
def sqlite_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'stalled.sqlite3'}"
    db_backends.migrate(url)
    return url


def test_under_gunicorn_a_stalled_redis_does_not_stop_routes_without_limits(
        tmp_path, silent, sqlite_url):
    """Two sync workers, a Redis that accepts and never answers, a burst of rate-limited
    requests: each worker asks Redis once and then refuses at once, so /healthz, queued
    behind the burst, answers. Without the timeouts each request would occupy a worker for
    redis-py's (5 s; none before redis-py 8); without the hold, for 1 s each."""
    with servers.gunicorn(tmp_path / "gunicorn", database_url=sqlite_url, workers=2,
                          settings={"RATELIMIT_STORAGE_URI": silent.uri}) as server:
        url = server.base_url

        def start_flow(number: int) -> requests.Response:
            return requests.post(url + "/api/v1/device/authorize", timeout=60,
                                 json={"device_id": f"printer-{number:04d}", "name": "P"})

        with ThreadPoolExecutor(max_workers=12) as pool:
            burst = [pool.submit(start_flow, number) for number in range(12)]
            # A hang guard, not a speed claim: 12 requests of 5 s on two workers would keep
            # /healthz waiting for 30 s.
            health = requests.get(url + "/healthz", timeout=15)
            answers = [future.result() for future in burst]
        assert health.status_code == 200
        assert [answer.status_code for answer in answers] == [503] * 12
        assert {answer.json()["error"] for answer in answers} == {"rate_limit_unavailable"}
        # One try per worker (a busy machine may let a hold run out once): not one per request.
        connections, _ = silent.seen()
        assert 1 <= connections <= 4, connections
