"""A benchmark world: a fresh database, seeded in bulk, and the server settings it runs with.

``size`` is the number of linked devices, live announcements and audit rows in the tables
(100 or 100,000 for the growth comparison). The load itself always uses the same working
set (``WORKING_SET`` devices and announcers, ``DEVICE_CODES`` pending device codes, one
logged-in user), so two worlds differ only in how much else the tables hold.

Households: the server trusts 127.0.0.1 as its reverse proxy (``TRUSTED_PROXIES``,
``PROXY_FIX_X_FOR=1``), as a deployment behind nginx does, and every request carries an
``X-Forwarded-For`` naming its client. Each announcing device has its own public address,
so each is its own household, as in real life: the household cap and the anomaly breaker
run with their defaults and never trip.
"""

from __future__ import annotations

import hashlib
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy import insert

from tests.support import db_backends

WORKING_SET = 100  # device tokens used by device/me; devices announcing
DEVICE_CODES = 20_000  # pending device codes polled round-robin (see docs/performance.md)
USER_EMAIL = "bench@example.com"
USER_PASSWORD = "bench-password-1"  # noqa: S105 - a throwaway account in a throwaway database
USER_AGENT = "tsd-bench"
USER_ADDRESS = "9.9.9.9"  # the logged-in user's (forwarded) address: a household of its own
BATCH = 5_000

# What the bench changes from the defaults, and why (docs/performance.md repeats this).
SETTINGS: dict[str, object] = {
    # 127.0.0.1 is the "reverse proxy": X-Forwarded-For names each client (see above).
    "TRUSTED_PROXIES": "127.0.0.1/32",
    "PROXY_FIX_X_FOR": 1,
    # Seeded announcements must stay live for the whole run (the default is 30 s).
    "IP_MATCH_ANNOUNCE_TTL": 3600,
    # Rate limits stay on (their bookkeeping is part of every request) but out of reach:
    # "per second" keeps the in-memory moving window short, as the real limits' would be.
    "IP_MATCH_ANNOUNCE_RATE_LIMIT": "1000000 per second",
    "IP_MATCH_NEARBY_RATE_LIMIT": "1000000 per second",
    "DEVICE_FLOW_TOKEN_LIMIT": "1000000 per second",
    "PAIRING_GUESS_LIMIT_PER_IP": "1000000 per second",
    # Every invalid code is a failure the breaker counts; at bench rates it would switch
    # pairing_code off within a second. 0 = no breaker (the audit row is still written).
    "PAIRING_FAILURE_BREAKER_PER_MINUTE": 0,
    "LOG_LEVEL": "WARNING",
}
# PostgreSQL is measured as operators run it (docs/production.md): rate limits in Redis,
# shared by the workers. SQLite as one box runs: rate limits in each process's memory.
REDIS_SETTINGS: dict[str, object] = {"RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379/0"}


def device_address(index: int) -> str:
    """A public IPv4 address per announcing device (11.0.0.0/8 is globally routable)."""
    return f"11.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"


def background_household(index: int) -> str:
    return f"12.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}/32"


@dataclass
class WorkingSet:
    """The secrets the load uses: tokens, announcer identities, device codes."""

    tokens: list[str] = field(default_factory=list)
    announcers: list[tuple[str, str, str]] = field(default_factory=list)  # uid, secret, ip
    device_codes: list[str] = field(default_factory=list)
    spare_device_code: str = ""  # pending, never polled by the load (for EXPLAIN)


@dataclass
class World:
    backend: str  # "postgresql" or "sqlite"
    size: int
    url: str
    directory: Path
    secret_key: str
    working: WorkingSet


@contextmanager
def database(backend: str, directory: Path) -> Iterator[str]:
    """A fresh, migrated database (PostgreSQL: created now, dropped afterwards)."""
    if backend == "sqlite":
        yield_url = f"sqlite:///{directory / 'bench.sqlite3'}"
        db_backends.migrate(yield_url)
        yield yield_url
        return
    role = db_backends.find_postgres()
    if role is None:
        raise RuntimeError("PostgreSQL is not reachable on 127.0.0.1:5432")
    with db_backends.migrated_postgres_database(role, "tsd_bench") as url:
        yield url


@contextmanager
def world(backend: str, size: int, *, seeded: bool = True) -> Iterator[World]:
    """A fresh database seeded with ``size`` rows per table (empty when not ``seeded``)."""
    with tempfile.TemporaryDirectory(prefix=f"tsd-bench-{backend}-{size}-") as folder:
        directory = Path(folder)
        with database(backend, directory) as url:
            secret_key = secrets.token_hex(32)
            working = seed(url, size, secret_key) if seeded else WorkingSet()
            yield World(backend, size, url, directory, secret_key, working)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def seed(url: str, size: int, secret_key: str) -> WorkingSet:
    """Bulk-insert the users, devices, announcements, audit rows and device codes."""
    from tsd_server import create_app
    from tsd_server.auth.accounts import create_user
    from tsd_server.auth.tokens import new_access_token, token_hash, token_hint
    from tsd_server.clock import utcnow
    from tsd_server.discovery.pairing import codes
    from tsd_server.extensions import db
    from tsd_server.models import AuditEvent, Device, DeviceAuthorization, User
    from tsd_server.models.ip_match import Announcement

    app = create_app({"DATABASE_URL": url, "SECRET_KEY": secret_key, "ENV": "production"})
    working = WorkingSet()
    now = utcnow()
    with app.app_context():
        owner = create_user(USER_EMAIL, USER_PASSWORD, display_name="Bench")
        dummy = owner.password_hash
        owners = max(10, size // 10)
        bulk_insert(db, User, ({"email": f"owner{i}@example.com", "display_name": f"Owner {i}",
                          "password_hash": dummy, "is_admin": False, "created_at": now}
                         for i in range(owners)))
        first_owner = owner.id + 1

        def device_row(i: int) -> dict:
            if i < WORKING_SET:
                token = new_access_token()
                working.tokens.append(token)
            else:
                token = "tsd_at_" + secrets.token_hex(8) + str(i)
            return {"owner_id": first_owner + i % owners, "device_uid": f"printer-{i}",
                    "name": f"Printer {i}", "model": "Bench MK1", "linked_via": "pairing_code",
                    "linked_at": now - timedelta(seconds=i), "linked_from_ip": "11.0.0.1",
                    "token_hash": token_hash(token), "token_hint": token_hint(token),
                    "revoked_at": None, "needs_relink": False, "last_seen_at": now}

        bulk_insert(db, Device, (device_row(i) for i in range(size)))

        def announcement_row(i: int) -> dict:
            if i < WORKING_SET:
                uid, secret = f"announcer-{i}", secrets.token_urlsafe(24)
                ip = device_address(i)
                working.announcers.append((uid, secret, ip))
                household = f"{ip}/32"
            elif i < WORKING_SET + 2:  # two printers at the logged-in user's home
                uid, secret, ip = f"at-home-{i}", secrets.token_urlsafe(24), USER_ADDRESS
                household = f"{ip}/32"
            else:
                uid, secret = f"elsewhere-{i}", "x"
                household = background_household(i)
                ip = household.removesuffix("/32")
            return {"device_uid": uid, "secret_hash": _sha256(secret), "household": household,
                    "client_ip": ip, "name": f"Announcer {i}", "model": "Bench MK1",
                    "agent_version": "1.0", "first_seen_at": now, "last_seen_at": now}

        bulk_insert(db, Announcement,
                    (announcement_row(i) for i in range(max(size, WORKING_SET + 2))))
        events = ("ip_match_announce", "link", "code_invalid", "device_flow_requested")
        bulk_insert(db, AuditEvent, ({
            "at": now - timedelta(seconds=size - i), "event": events[i % 4],
            "actor": "device", "outcome": "ok", "strategy": "ip_match",
            "client_ip": "12.0.0.1", "peer_ip": "127.0.0.1",
            "forwarded_for": ["12.0.0.1"], "household": "12.0.0.1/32",
            "detail": "seeded"} for i in range(size)))

        def authorization_row(i: int) -> dict:
            device_code = codes.new_device_code()
            working.device_codes.append(device_code)
            return {"device_code_hash": codes.secret_hash(device_code), "user_code_hash": None,
                    "qr_token_hash": None, "device_uid": f"flow-{i}", "name": f"Flow {i}",
                    "model": None, "requested_at": now, "requested_from_ip": "11.1.0.1",
                    "expires_at": now + timedelta(hours=6), "poll_interval": 5,
                    "last_polled_at": None, "status": "pending"}

        bulk_insert(db, DeviceAuthorization,
                    (authorization_row(i) for i in range(DEVICE_CODES + 1)))
        working.spare_device_code = working.device_codes.pop()
        if db.engine.dialect.name == "postgresql":
            autocommit = db.engine.execution_options(isolation_level="AUTOCOMMIT")
            with autocommit.connect() as connection:
                connection.exec_driver_sql("VACUUM ANALYZE")
        db.engine.dispose()
    return working


def bulk_insert(db, model, rows) -> None:
    """Insert in batches of executemany (SQLAlchemy's insertmanyvalues on PostgreSQL)."""
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= BATCH:
            db.session.execute(insert(model), batch)
            batch = []
    if batch:
        db.session.execute(insert(model), batch)
    db.session.commit()
