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
  every durable write waits for);
- the device/me read through SQLAlchemy Core against the same SQL on a raw psycopg2 cursor,
  plain and prepared on the server (``PREPARE``/``EXECUTE``): what SQLAlchemy's execution
  layer costs the client, and what parsing and planning cost PostgreSQL;
- the same read on two engines built alike, one over loopback TCP and one over PostgreSQL's
  Unix socket (where the server has one on this host): what the transport costs.

Variants run interleaved, in rounds; the report gives the median microseconds per call and
each variant's ratio to the first of its group. Wall time of a single client: it includes
PostgreSQL's own work and the loopback round trips, which is what a request waits for.
Beside it, CPU time per call: the client's thread, and PostgreSQL's backends of the bench
database (``/proc/<pid>/schedstat``; "–" where PostgreSQL is not on this host). Under load,
CPU is what the hot paths compete for (docs/performance.md, "Where the time goes").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import bindparam, create_engine, event, select, text  # noqa: E402
from sqlalchemy.exc import OperationalError  # noqa: E402
from sqlalchemy.orm import joinedload  # noqa: E402

from bench.world import world  # noqa: E402


@dataclass(frozen=True)
class Sample:
    """Microseconds per call: wall time, the client's CPU, PostgreSQL's CPU (None: unknown)."""

    wall: float
    client_cpu: float
    server_cpu: float | None


def _server_cpu_seconds(pids: list[int]) -> float | None:
    """CPU time the given PostgreSQL backends have used so far (None if not readable here)."""
    try:
        return sum(int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
                   for pid in pids) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def _timed(call: Callable[[], object], repeat: int, backends: list[int]) -> Sample:
    server_before = _server_cpu_seconds(backends)
    cpu_before = time.thread_time()
    started = time.perf_counter()
    for _ in range(repeat):
        call()
    wall = time.perf_counter() - started
    cpu = time.thread_time() - cpu_before
    server_after = _server_cpu_seconds(backends)
    server = (None if server_before is None or server_after is None
              else (server_after - server_before) / repeat * 1e6)
    return Sample(wall / repeat * 1e6, cpu / repeat * 1e6, server)


def variants(w, held: list) -> dict[str, dict[str, Callable[[], object]]]:
    """The groups of variants to compare (inside the app context); what closes the
    connections and pools the variants hold open is appended to ``held``."""
    from tsd_server import single_statement
    from tsd_server.auth.device_auth import _BY_TOKEN_HASH
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
        held.append(connection.close)
        connection.execute(text(f"SET synchronous_commit = {synchronous}"))
        return lambda: connection.execute(text("UPDATE bench_probe SET at = now() WHERE id = 1"))

    return {
        **_device_me_read(w, digest, own_pool, _BY_TOKEN_HASH, held),
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


def _device_me_read(w, digest: str, own_pool, statement, held: list):
    """device/me's own statement: through Core as the app sends it, and the same SQL on a
    raw psycopg2 cursor, plain and prepared. The raw cursors come from a one-connection pool
    of their own, on which the statement is prepared as each connection opens."""
    sql = str(statement.compile(dialect=own_pool.dialect))
    parameters = {"token_hash": digest}
    raw_pool = create_engine(w.url, isolation_level="AUTOCOMMIT", pool_size=1, max_overflow=0)
    held.append(raw_pool.dispose)

    @event.listens_for(raw_pool, "connect")
    def prepare(dbapi_connection, record) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("PREPARE device_by_token (text) AS "
                           + sql.replace("%(token_hash)s", "$1"))

    def core_on(engine):
        def call():
            with engine.connect() as connection:
                return tuple(connection.execute(statement, parameters).first())
        return call

    core = core_on(own_pool)

    def raw(query: str):
        def call():
            connection = raw_pool.raw_connection()
            try:
                with connection.cursor() as cursor:
                    cursor.execute(query, parameters)
                    return cursor.fetchone()
            finally:
                connection.close()
        return call

    plain, prepared = raw(sql), raw("EXECUTE device_by_token (%(token_hash)s)")
    # The same row each way, so the same work (the app's UTC type adds the zone).
    expected = tuple(v.replace(tzinfo=None) if isinstance(v, datetime) else v for v in core())
    for call in (plain, prepared):
        if call() != expected:
            raise RuntimeError(f"the raw cursor read {call()!r}, Core {expected!r}")
    reads = {"Core, on the autocommit bind": core,
             "raw psycopg2 cursor": plain,
             "raw psycopg2 cursor, prepared": prepared}
    socket_url = _unix_socket_url(own_pool)
    if socket_url is not None:
        # Two engines built alike, one over loopback TCP (as the app connects) and one over
        # PostgreSQL's Unix socket: only the transport differs.
        transports = {}
        for transport, url in (("loopback TCP", own_pool.url), ("the Unix socket", socket_url)):
            engine = create_engine(url, isolation_level="AUTOCOMMIT", pool_size=1,
                                   max_overflow=0)
            held.append(engine.dispose)
            try:  # the socket may ask for other credentials (peer authentication)
                same = core_on(engine)() == core()
            except OperationalError as error:
                print(f"transport variants skipped: {transport}: {error}".strip(),
                      file=sys.stderr)
                break
            if not same:
                raise RuntimeError(f"the read over {transport} gave another row")
            transports[f"Core, a plain engine over {transport}"] = core_on(engine)
        else:
            reads.update(transports)
    return {"device/me read": reads}


def _unix_socket_url(engine):
    """``engine``'s URL with PostgreSQL's Unix socket as its host, or None when the server
    listens on none here (not on this host, or sockets switched off)."""
    with engine.connect() as connection:
        directories = connection.execute(text("SHOW unix_socket_directories")).scalar()
    for directory in (d.strip() for d in (directories or "").split(",")):
        port = engine.url.port or 5432
        if directory and Path(directory, f".s.PGSQL.{port}").exists():
            return engine.url.set(host=directory)
    return None


def _backend_pids(engine) -> list[int]:
    with engine.connect() as connection:
        return list(connection.execute(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()")).scalars())


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


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
                for _ in range(100):  # warm up: connections, statement caches
                    call()
            # Every connection is open now: the backends whose CPU the calls use.
            from tsd_server.extensions import db

            backends = _backend_pids(db.engine)
            for _ in range(args.rounds):
                for group, calls in groups.items():
                    for name, call in calls.items():
                        samples.setdefault((group, name), []).append(
                            _timed(call, args.repeat, backends))
            print(f"median µs per call, {args.rounds} rounds of {args.repeat} (PostgreSQL)\n")
            print("| group | variant | µs per call | ratio | client CPU µs | PostgreSQL CPU µs |"
                  "\n|---|---|---:|---:|---:|---:|")
            for group, calls in groups.items():
                first = statistics.median(s.wall for s in samples[(group, next(iter(calls)))])
                for name in calls:
                    runs = samples[(group, name)]
                    wall = statistics.median(s.wall for s in runs)
                    client = statistics.median(s.client_cpu for s in runs)
                    server = (None if any(s.server_cpu is None for s in runs)
                              else statistics.median(s.server_cpu for s in runs))
                    print(f"| {group} | {name} | {wall:,.0f} | {wall / first:.2f} | "
                          f"{client:,.0f} | {_cell(server)} |")
            for close in held:
                close()


if __name__ == "__main__":
    main()
