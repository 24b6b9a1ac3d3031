"""What one statement costs, by the way it is sent: ``.venv/bin/python bench/statements.py``.

The hot paths' remaining cost is mostly round trips to PostgreSQL. This measures, in one
process on a fresh 100-row PostgreSQL world, the choices behind ``single_statement`` and the
device/me query (docs/performance.md):

- a device read through the ORM session (BEGIN, SELECT, ROLLBACK; ORM objects) against the
  same read as a Core statement on the autocommit bind (one round trip);
- switching a pooled connection to autocommit per use (``execution_options``) against the
  bind's own pool, whose connections stay in autocommit;
- the owner's name by a join against a scalar subquery (what PostgreSQL spends planning);
- a one-row UPDATE committed with and without ``synchronous_commit`` (the WAL flush that
  every durable write waits for).

Variants run interleaved, in rounds; the report gives the median microseconds per call and
each variant's ratio to the first of its group. Wall time of a single client: it includes
PostgreSQL's own work and the loopback round trips, which is what a request waits for.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import bindparam, select, text  # noqa: E402
from sqlalchemy.orm import joinedload  # noqa: E402

from bench.world import world  # noqa: E402


def _timed(call: Callable[[], object], repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        call()
    return (time.perf_counter() - started) / repeat * 1e6


def variants(w, held: list) -> dict[str, dict[str, Callable[[], object]]]:
    """The groups of variants to compare (inside the app context); connections the
    variants hold open are appended to ``held`` for the caller to close."""
    from tsd_server import single_statement
    from tsd_server.auth.tokens import token_hash
    from tsd_server.extensions import db
    from tsd_server.models import Device, User

    digest = token_hash(w.working.tokens[3])
    devices, users = Device.__table__, User.__table__
    columns = (devices.c.id, devices.c.owner_id, devices.c.device_uid, devices.c.name,
               devices.c.model, devices.c.linked_via, devices.c.linked_at,
               devices.c.token_hash, devices.c.last_seen_at)
    joined = (select(*columns, users.c.display_name)
              .join(users, users.c.id == devices.c.owner_id)
              .where(devices.c.token_hash == bindparam("h")))
    owner = select(users.c.display_name).where(users.c.id == devices.c.owner_id)
    scalar = (select(*columns, owner.scalar_subquery().label("display_name"))
              .where(devices.c.token_hash == bindparam("h")))
    switched = db.engine.execution_options(isolation_level="AUTOCOMMIT")
    own_pool = db.engines[single_statement.BIND]

    def orm_session():
        db.session.scalar(select(Device).where(Device.token_hash == digest)
                          .options(joinedload(Device.owner).load_only(User.display_name)))
        db.session.remove()

    def core_on(engine, statement):
        def call():
            with engine.connect() as connection:
                connection.execute(statement, {"h": digest}).first()
        return call

    with db.engine.begin() as connection:
        connection.execute(text("CREATE TABLE IF NOT EXISTS bench_probe (id int PRIMARY KEY, "
                                "at timestamptz)"))
        connection.execute(text("INSERT INTO bench_probe VALUES (1, now()) "
                                "ON CONFLICT DO NOTHING"))

    def update(synchronous: str):
        # A connection of its own, held for the run: the setting is made once, not per call.
        connection = own_pool.connect()
        held.append(connection)
        connection.execute(text(f"SET synchronous_commit = {synchronous}"))
        return lambda: connection.execute(text("UPDATE bench_probe SET at = now() WHERE id = 1"))

    return {
        "device read": {
            "ORM, in the session's transaction": orm_session,
            "Core, on the autocommit bind": core_on(own_pool, joined),
        },
        "autocommit": {
            "the bind's own pool": core_on(own_pool, joined),
            "switched per use (execution_options)": core_on(switched, joined),
        },
        "owner's name": {
            "join": core_on(own_pool, joined),
            "scalar subquery": core_on(own_pool, scalar),
        },
        "one-row UPDATE, committed": {
            "synchronous_commit on": update("on"),
            "synchronous_commit off": update("off"),
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2000, help="calls per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; medians reported")
    args = parser.parse_args(argv)
    from tsd_server import create_app

    with world("postgresql", 100) as w:
        app = create_app({"DATABASE_URL": w.url, "SECRET_KEY": w.secret_key, "ENV": "production",
                          "LOG_LEVEL": "WARNING"})
        with app.app_context():
            held: list = []
            groups = variants(w, held)
            samples: dict[tuple[str, str], list[float]] = {}
            for call in (c for group in groups.values() for c in group.values()):
                _timed(call, 100)  # warm up: connections, statement caches
            for _ in range(args.rounds):
                for group, calls in groups.items():
                    for name, call in calls.items():
                        samples.setdefault((group, name), []).append(_timed(call, args.repeat))
            print(f"median µs per call, {args.rounds} rounds of {args.repeat} (PostgreSQL)\n")
            print("| group | variant | µs per call | ratio |\n|---|---|---:|---:|")
            for group, calls in groups.items():
                first = statistics.median(samples[(group, next(iter(calls)))])
                for name in calls:
                    value = statistics.median(samples[(group, name)])
                    print(f"| {group} | {name} | {value:,.0f} | {value / first:.2f} |")
            for connection in held:
                connection.close()


if __name__ == "__main__":
    main()
