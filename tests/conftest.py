"""Test fixtures: every test that uses ``app`` runs on SQLite and on PostgreSQL.

The PostgreSQL run creates a fresh database per test session on 127.0.0.1:5432 (trust
auth) and drops it afterwards. ``--db sqlite`` or ``--db postgresql`` picks one backend.
Where no PostgreSQL server is reachable, the PostgreSQL half is skipped with a loud
message, unless ``TSD_TEST_REQUIRE_POSTGRES=1`` (CI sets it) makes that a failure.
"""

from __future__ import annotations

import os
import re
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support import db_backends
from tests.support.skips import skip_loudly

BACKENDS = ("sqlite", "postgresql")


def pytest_addoption(parser):
    parser.addoption("--db", choices=(*BACKENDS, "both"),
                     default=os.environ.get("TSD_TEST_DB", "both"),
                     help="database backend(s) for tests that use the app")


def pytest_generate_tests(metafunc):
    if "database" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("--db")
        params = BACKENDS if chosen == "both" else (chosen,)
        metafunc.parametrize("database", params, indirect=True, scope="session")


@pytest.fixture(scope="session")
def database(request, tmp_path_factory):
    """A migrated, empty database for the whole session: yields its URL."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "tsd-test.sqlite3"
        url = f"sqlite:///{path}"
        db_backends.migrate(url)
        yield url
        return
    server = db_backends.find_postgres()
    if server is None:
        message = ("PostgreSQL is NOT reachable at 127.0.0.1:5432 as root or postgres: "
                   "the PostgreSQL half of the test suite is SKIPPED.")
        skip_loudly(message, "TSD_TEST_REQUIRE_POSTGRES")
    with db_backends.migrated_postgres_database(server, "tsd_test") as url:
        yield url


@pytest.fixture
def app_config():
    """Override per test (or per module) to pass extra settings to create_app()."""
    return {}


@pytest.fixture
def app(database, app_config, tmp_path):
    from tsd_server import create_app
    from tsd_server.extensions import db

    config = {
        "TESTING": True,
        "SECRET_KEY": "test-" + secrets.token_hex(8),
        "DATABASE_URL": database,
        "RATELIMIT_STORAGE_URI": "memory://",
        **app_config,
    }
    os.environ.setdefault("TSD_INSTANCE_PATH", str(tmp_path / "instance"))
    application = create_app(config)
    with application.app_context():
        db_backends.empty_all_tables(db)
    yield application
    with application.app_context():
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


class FakeClock:
    """A controllable clock: ``clock.advance(seconds=31)``."""

    def __init__(self) -> None:
        self.now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock(app):
    fake = FakeClock()
    app.config["CLOCK"] = fake
    return fake


@pytest.fixture
def make_user(app):
    from tsd_server.auth.accounts import create_user

    counter = iter(range(1, 10_000))

    def factory(email: str | None = None, password: str = "correct horse battery",
                is_admin: bool = False, display_name: str | None = None):
        with app.app_context():
            user = create_user(email or f"user{next(counter)}@example.org", password,
                               is_admin=is_admin, display_name=display_name)
            return user.id, user.email, password

    return factory


CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


class UserSession:
    """A logged-in browser-like client: JSON calls carry the X-CSRFToken header."""

    def __init__(self, client, email: str, password: str, environ_base: dict | None = None):
        self.client = client
        self.environ_base = environ_base or {}
        page = client.get("/login", environ_base=self.environ_base).get_data(as_text=True)
        token = CSRF_META.search(page).group(1)
        response = client.post("/login", data={"email": email, "password": password,
                                               "csrf_token": token},
                               environ_base=self.environ_base)
        assert response.status_code == 302, response.get_data(as_text=True)
        self.refresh_csrf()

    def refresh_csrf(self) -> None:
        page = self.client.get("/", environ_base=self.environ_base).get_data(as_text=True)
        self.csrf = CSRF_META.search(page).group(1)

    def get(self, path: str, **kwargs):
        kwargs.setdefault("environ_base", self.environ_base)
        return self.client.get(path, **kwargs)

    def post(self, path: str, json=None, **kwargs):
        kwargs.setdefault("environ_base", self.environ_base)
        headers = {"X-CSRFToken": self.csrf, **kwargs.pop("headers", {})}
        return self.client.post(path, json=json, headers=headers, **kwargs)

    def delete(self, path: str, **kwargs):
        kwargs.setdefault("environ_base", self.environ_base)
        return self.client.delete(path, headers={"X-CSRFToken": self.csrf}, **kwargs)

    def form_post(self, path: str, data: dict, **kwargs):
        kwargs.setdefault("environ_base", self.environ_base)
        return self.client.post(path, data={"csrf_token": self.csrf, **data}, **kwargs)


@pytest.fixture
def login(app):
    """``login(email, password, remote_addr=...)`` → a UserSession with its own cookie jar."""

    def factory(email: str, password: str = "correct horse battery", **environ_base):
        return UserSession(app.test_client(), email, password, environ_base)

    return factory


@pytest.fixture
def link_device(app):
    """Link a device to a user through the link service; returns (device pk, access token)."""

    def factory(owner_id: int, device_uid: str = "printer-0001",
                strategy: str = "pairing_code", name: str = "Test printer"):
        from tsd_server.discovery.link_service import link_device as link
        from tsd_server.extensions import db
        from tsd_server.models import User

        with app.test_request_context():
            result = link(owner=db.session.get(User, owner_id), device_uid=device_uid,
                          name=name, model="Mk4", strategy=strategy,
                          actor=f"user:{owner_id}", address=None)
            return result.device.id, result.access_token

    return factory


ROOT = Path(__file__).resolve().parent.parent
