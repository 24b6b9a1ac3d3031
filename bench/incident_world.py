"""A world that looks like the incident the project exists for, seeded in bulk.

An eight-hour window ([since, until), ended five minutes ago) in which ``affected`` devices
were linked by ip_match from a few load-balancer addresses, over many accounts, on top of
``background`` devices and audit rows linked before it. Of the window's devices, most are
still ``active``; some were re-linked after it (``relinked_after``) and some are already
revoked. Links set in motion in the window wait too: web codes, device-flow approvals and
printers' requests reached but not decided, ip_match offers (``pending_*`` below).

The seeded database is a template: every destructive run (a revoke) gets a copy
(PostgreSQL ``CREATE DATABASE ... TEMPLATE``, SQLite a file copy), so the runs compare.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from psycopg2 import sql

from bench.world import bulk_insert
from tests.support import db_backends

ADMIN_EMAIL = "admin@example.com"
USER_EMAIL = "user@example.com"
PASSWORD = "bench-password-1"  # noqa: S105 - a throwaway account in a throwaway database
# The load balancer's addresses: every ip_match link in the window came from one of them.
BALANCERS = ("203.0.113.10", "203.0.113.11", "203.0.113.12")
WINDOW = timedelta(hours=8)


@dataclass(frozen=True)
class Sizes:
    affected: int  # devices linked by ip_match in the window
    background: int  # devices and audit rows outside it

    @property
    def accounts(self) -> int:  # many accounts: two printers each on average
        return max(1, self.affected // 2)

    @property
    def pending_offers(self) -> int:  # ip_match offers waiting for their printer
        return max(1, self.affected // 10)

    @property
    def pending_codes(self) -> int:  # live web codes issued in the window
        return max(1, self.affected // 20)

    @property
    def pending_approvals(self) -> int:  # approvals given, token not collected yet
        return max(1, self.affected // 20)


@dataclass
class IncidentWorld:
    backend: str
    sizes: Sizes
    url: str  # the seeded template; copy it before changing anything
    since: datetime
    until: datetime
    device_token: str = ""  # a working device outside the window, for device/me
    expected: dict[str, int] = field(default_factory=dict)  # what a revoke should report


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def seed(backend: str, url: str, sizes: Sizes) -> IncidentWorld:
    """Bulk-insert the incident world into the migrated database at ``url``."""
    from tsd_server import create_app
    from tsd_server.auth.accounts import create_user
    from tsd_server.auth.tokens import new_access_token, token_hash, token_hint
    from tsd_server.clock import utcnow
    from tsd_server.extensions import db
    from tsd_server.models import AuditEvent, Device, DeviceAuthorization, PairingCode, User
    from tsd_server.models.ip_match import Announcement, Offer

    app = create_app({"DATABASE_URL": url, "SECRET_KEY": secrets.token_hex(16),
                      "ENV": "production"})
    now = utcnow()
    until = (now - timedelta(minutes=5)).replace(microsecond=0)
    since = until - WINDOW
    world = IncidentWorld(backend, sizes, url, since, until)
    with app.app_context():
        admin = create_user(ADMIN_EMAIL, PASSWORD, display_name="Admin", is_admin=True)
        user = create_user(USER_EMAIL, PASSWORD, display_name="User")
        dummy = admin.password_hash
        owners = max(10, sizes.background // 10)
        first = user.id + 1
        bulk_insert(db, User, ({"email": f"owner{i}@example.com", "display_name": f"Owner {i}",
                          "password_hash": dummy, "is_admin": False, "created_at": now}
                         for i in range(owners + sizes.accounts)))
        in_window = first + owners  # the window's accounts come after the background's
        token = new_access_token()
        world.device_token = token

        def background_device(i: int) -> dict:
            value = token if i == 0 else f"tsd_at_bg{i}_{secrets.token_hex(6)}"
            return {"owner_id": first + i % owners, "device_uid": f"printer-{i}",
                    "name": f"Printer {i}", "model": "MK1", "linked_via": "pairing_code",
                    "linked_at": since - timedelta(days=1, seconds=i),
                    "linked_from_ip": f"12.0.{(i >> 8) & 255}.{i & 255}",
                    "token_hash": token_hash(value), "token_hint": token_hint(value),
                    "revoked_at": None, "needs_relink": False, "last_seen_at": now}

        bulk_insert(db, Device, (background_device(i) for i in range(sizes.background)))
        step = WINDOW / max(1, sizes.affected)
        counts = {"active": 0, "relinked_after": 0, "revoked": 0}

        def window_device(i: int) -> dict:
            at = since + step * i
            kind = "relinked_after" if i % 20 == 7 else "revoked" if i % 20 == 13 else "active"
            counts[kind] += 1
            value = f"tsd_at_w{i}_{secrets.token_hex(6)}"
            relinked = kind == "relinked_after"
            return {"owner_id": in_window + i % sizes.accounts, "device_uid": f"victim-{i}",
                    "name": f"Victim {i}", "model": "MK1",
                    "linked_via": "pairing_code" if relinked else "ip_match",
                    "linked_at": until + timedelta(minutes=1) if relinked else at,
                    "linked_from_ip": BALANCERS[i % len(BALANCERS)],
                    "token_hash": None if kind == "revoked" else token_hash(value),
                    "token_hint": token_hint(value), "revoked_at": None,
                    "needs_relink": False, "last_seen_at": now}

        bulk_insert(db, Device, (window_device(i) for i in range(sizes.affected)))
        first_victim = db.session.query(db.func.min(Device.id)).filter(
            Device.device_uid == "victim-0").scalar()
        world.expected = dict(counts)
        events = ("ip_match_announce", "link", "code_invalid", "login", "nearby")
        bulk_insert(db, AuditEvent, ({
            "at": since - timedelta(seconds=30 * (sizes.background - i)), "event": events[i % 5],
            "actor": "device", "outcome": "ok", "strategy": "ip_match" if i % 2 else
            "pairing_code", "client_ip": "12.0.0.1", "peer_ip": "127.0.0.1",
            "forwarded_for": ["12.0.0.1"], "household": "12.0.0.1/32", "detail": "seeded",
        } for i in range(sizes.background)))

        def window_audit(i: int) -> dict:  # the link row, then an announce as noise
            device = i // 2
            ip = BALANCERS[device % len(BALANCERS)]
            return {"at": since + step * device, "event": "link" if i % 2 == 0 else
                    "ip_match_announce", "actor": f"user:{in_window + device % sizes.accounts}",
                    "outcome": "ok", "strategy": "ip_match",
                    "user_id": in_window + device % sizes.accounts if i % 2 == 0 else None,
                    "device_id": first_victim + device if i % 2 == 0 else None,
                    "device_uid": f"victim-{device}", "client_ip": ip, "peer_ip": "10.0.0.2",
                    "forwarded_for": None, "household": f"{ip}/32", "detail": "seeded"}

        bulk_insert(db, AuditEvent, (window_audit(i) for i in range(2 * sizes.affected)))
        _seed_pending(db, sizes, since, until, now, in_window,
                      PairingCode, DeviceAuthorization, Announcement, Offer)
        if db.engine.dialect.name == "postgresql":
            with db.engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
        else:
            db.session.execute(db.text("ANALYZE"))
            db.session.commit()
        db.engine.dispose()
    return world


def _seed_pending(db, sizes: Sizes, since: datetime, until: datetime, now: datetime,
                  in_window: int, PairingCode, DeviceAuthorization, Announcement,  # noqa: N803
                  Offer) -> None:  # noqa: N803
    """Links set in motion in the window: live ones near its end, used or expired ones
    spread over it (a withdrawal reads those too)."""
    live = now + timedelta(minutes=10)
    spread = WINDOW / max(1, sizes.affected)
    bulk_insert(db, PairingCode, ({
        "code_hash": _sha(f"code-{i}-{secrets.token_hex(4)}"),
        "user_id": in_window + i % sizes.accounts,
        "created_at": until - timedelta(seconds=1 + i % 240) if i < sizes.pending_codes
        else since + spread * i, "created_from_ip": BALANCERS[0],
        "expires_at": live if i < sizes.pending_codes else since + spread * i
        + timedelta(minutes=10), "used_at": None if i < sizes.pending_codes else now,
    } for i in range(sizes.affected)))
    approvals = sizes.pending_approvals
    bulk_insert(db, DeviceAuthorization, ({
        "device_code_hash": _sha(f"dc-{i}-{secrets.token_hex(4)}"), "user_code_hash": None,
        "qr_token_hash": None, "device_uid": f"flow-{i}", "name": f"Flow {i}", "model": None,
        "requested_at": until - timedelta(minutes=2), "requested_from_ip": BALANCERS[1],
        "expires_at": live, "poll_interval": 5, "last_polled_at": None,
        "status": "approved" if i < approvals else "pending",
        "decided_by_id": in_window + i % sizes.accounts if i < approvals else None,
        "decided_at": until - timedelta(seconds=1 + i % 60) if i < approvals else None,
        "decided_via": "pairing_code" if i < approvals else None,
        "bound_to_id": in_window + i % sizes.accounts,
        "bound_at": until - timedelta(seconds=1 + i % 60),
    } for i in range(2 * approvals)))
    bulk_insert(db, Announcement, ({
        "device_uid": f"offered-{i}", "secret_hash": _sha(f"s{i}"),
        "household": f"{BALANCERS[i % 3]}/32", "client_ip": BALANCERS[i % 3],
        "name": f"Offered {i}", "model": "MK1", "agent_version": "1.0",
        "first_seen_at": until - timedelta(minutes=3), "last_seen_at": now,
    } for i in range(sizes.pending_offers)))
    first_announcement = db.session.query(db.func.min(Announcement.id)).scalar()
    bulk_insert(db, Offer, ({
        "public_id": secrets.token_urlsafe(24), "announcement_id": first_announcement + i,
        "user_id": in_window + i % sizes.accounts, "household": f"{BALANCERS[i % 3]}/32",
        "status": "awaiting_confirmation", "code_masked": 123456, "attempts_left": 5,
        "created_at": until - timedelta(seconds=1 + i % 120), "expires_at": live,
    } for i in range(sizes.pending_offers)))


def copy_of(world: IncidentWorld, directory: Path, name: str) -> str:
    """A fresh copy of the seeded world (to change); ``drop_copy`` removes it."""
    if world.backend == "sqlite":
        source = Path(world.url.removeprefix("sqlite:///"))
        target = directory / f"{name}.sqlite3"
        shutil.copyfile(source, target)
        return f"sqlite:///{target}"
    role, template = _pg_parts(world.url)
    database = f"{template}_{name}"
    conn = db_backends._admin(role)
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(database), sql.Identifier(template)))
    finally:
        conn.close()
    return world.url.rsplit("/", 1)[0] + "/" + database


def drop_copy(world: IncidentWorld, url: str) -> None:
    if world.backend == "sqlite":
        Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)
        return
    role, database = _pg_parts(url)
    db_backends.drop_postgres_database(role, database)


def _pg_parts(url: str) -> tuple[str, str]:
    """(role, database name) of a postgresql+psycopg2://role@host:port/name URL."""
    rest = url.split("://", 1)[1]
    return rest.split("@", 1)[0], rest.rsplit("/", 1)[1]
