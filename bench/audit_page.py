"""The admin audit page's count at millions of rows: counting every matching row against
counting up to the last page the pager reaches (``admin.audit_log.search``).

    .venv/bin/python bench/audit_page.py                      # 1M and 5M rows, PostgreSQL
    .venv/bin/python bench/audit_page.py --rows 100000 --backends sqlite

Each size gets a fresh migrated database, filled by one INSERT ... SELECT (rows spread over
a year, one event in ten a ``link``), then vacuumed on PostgreSQL as autovacuum would.
Both counts, and the whole ``search()`` of page 1, run side by side on the same
connection; medians of ``--rounds`` are printed as Markdown.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, select, text  # noqa: E402

from bench.world import database  # noqa: E402

FILL = {
    "postgresql": """
        INSERT INTO audit_events (at, event, actor, outcome, strategy, detail)
        SELECT timestamp '2026-01-01' + n * interval '6 seconds',
               CASE WHEN n % 10 = 0 THEN 'link' ELSE 'ip_match_announce' END,
               'bench', 'ok', 'ip_match', 'row ' || n
        FROM generate_series(1, :rows) AS n""",
    "sqlite": """
        WITH RECURSIVE n(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM n WHERE n < :rows)
        INSERT INTO audit_events (at, event, actor, outcome, strategy, detail)
        SELECT datetime('2026-01-01', '+' || (n * 6) || ' seconds'),
               CASE WHEN n % 10 = 0 THEN 'link' ELSE 'ip_match_announce' END,
               'bench', 'ok', 'ip_match', 'row ' || n
        FROM n""",
}


def timed_side_by_side(calls: list, rounds: int) -> list[float]:
    """Median ms of each call; every round runs all of them, in turn first, so none always
    finds the caches the others warmed."""
    samples: list[list[float]] = [[] for _ in calls]
    for round_number in range(rounds + 1):
        shift = round_number % len(calls)
        for index in list(range(shift, len(calls))) + list(range(shift)):
            started = time.perf_counter()
            calls[index]()
            if round_number:  # the first round warms up
                samples[index].append(time.perf_counter() - started)
    return [statistics.median(times) * 1000 for times in samples]


def measure(backend: str, rows: int, rounds: int) -> list[str]:
    from tsd_server import create_app
    from tsd_server.admin import audit_log
    from tsd_server.extensions import db
    from tsd_server.models import AuditEvent

    with tempfile.TemporaryDirectory() as folder, database(backend, Path(folder)) as url:
        app = create_app({"DATABASE_URL": url, "SECRET_KEY": "audit-page" * 4,
                          "ENV": "production", "LOG_LEVEL": "WARNING"})
        with app.app_context():
            db.session.execute(text(FILL[backend]), {"rows": rows})
            db.session.commit()
            if backend == "postgresql":  # what autovacuum would have done by then
                with db.engine.connect().execution_options(
                        isolation_level="AUTOCOMMIT") as connection:
                    connection.execute(text("VACUUM ANALYZE audit_events"))
            lines = []
            for label, filters in (("no filter", audit_log.AuditFilters()),
                                   ("event=link", audit_log.AuditFilters(event="link"))):
                query = audit_log.filtered(filters)
                every = select(func.count()).select_from(query.subquery())
                reachable = audit_log.MAX_PAGE * audit_log.PER_PAGE
                capped = select(func.count()).select_from(
                    query.with_only_columns(AuditEvent.id).limit(reachable + 1).subquery())
                full_ms, capped_ms, page_ms = timed_side_by_side(
                    [partial(db.session.scalar, every), partial(db.session.scalar, capped),
                     partial(audit_log.search, filters)], rounds)
                matched = db.session.scalar(every)
                lines.append(f"| {backend} | {rows:,} | {label} | {matched:,} | "
                             f"{full_ms:,.1f} | {capped_ms:,.1f} | {page_ms:,.1f} |")
                db.session.rollback()
            return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000000,5000000", help="audit rows (comma list)")
    parser.add_argument("--backends", default="postgresql")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    print("| backend | rows | filter | matching | count every row (ms) | "
          "count to the last page (ms) | search(), page 1 (ms) |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for backend in args.backends.split(","):
        for rows in (int(size) for size in args.rows.split(",")):
            for line in measure(backend, rows, args.rounds):
                print(line, flush=True)


if __name__ == "__main__":
    main()
