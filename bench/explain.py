"""EXPLAIN ANALYZE of every statement each hot path runs (PostgreSQL).

The statements are not written out by hand: one request of each path is made in-process
(the app's test client, with the bench settings, against the world's database) and every
statement SQLAlchemy sends, through the session's engine or the ``single_statement`` one,
is captured with its parameters, then explained with ANALYZE in a transaction that is
rolled back (so explaining an UPDATE or INSERT changes nothing).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import event

from bench import scenarios
from bench.scenarios import CSRF_META
from bench.world import SETTINGS, USER_ADDRESS, USER_AGENT, USER_EMAIL, USER_PASSWORD, World

SQL_VERBS = ("SELECT", "INSERT", "UPDATE", "DELETE")
LONG_COLUMN_LIST = re.compile(r"^SELECT (.{60,}?) FROM ", re.DOTALL)


@dataclass
class Explained:
    path: str
    statement: str
    plan: str


def short(statement: str) -> str:
    """The statement on one line, a long column list elided."""
    one_line = " ".join(statement.split())
    return LONG_COLUMN_LIST.sub("SELECT … FROM ", one_line)


def explain_hot_paths(world: World) -> list[Explained]:
    from tsd_server import create_app
    from tsd_server.extensions import db

    app = create_app({**SETTINGS, "DATABASE_URL": world.url, "SECRET_KEY": world.secret_key,
                      "ENV": "production"})
    captured: list[tuple[str, object]] = []
    results: list[Explained] = []
    with app.app_context():
        engine = db.engine  # explains in a transaction; the autocommit one could not undo
        engines = list(db.engines.values())

    def keep(conn, cursor, statement, parameters, context, executemany):
        if not executemany and statement.lstrip().upper().startswith(SQL_VERBS):
            captured.append((statement, parameters))

    # Requests are made outside any app context, as under gunicorn: each gets its own (an
    # outer context would share ``g``, and with it the client-address record, between them).
    client = app.test_client()
    base = {"REMOTE_ADDR": "127.0.0.1"}
    login_headers = {"X-Forwarded-For": USER_ADDRESS, "User-Agent": USER_AGENT}
    page = client.get("/login", headers=login_headers, environ_base=base)
    token = CSRF_META.search(page.get_data(as_text=True))
    assert token is not None
    client.post("/login", headers=login_headers, environ_base=base, data={
        "email": USER_EMAIL, "password": USER_PASSWORD, "csrf_token": token.group(1)})
    for each in engines:
        event.listen(each, "before_cursor_execute", keep)
    try:
        for path in scenarios.HOT_PATHS:
            request = scenarios.explain_request(path.name, world)
            headers = {name: value for name, value in request.headers if name != "Cookie"}
            captured.clear()
            client.open(request.path, method=request.method, data=request.body or None,
                        headers=headers, environ_base=base)
            seen: set[str] = set()
            for statement, parameters in list(captured):
                if statement in seen:
                    continue
                seen.add(statement)
                results.append(Explained(path.name, short(statement),
                                         _explain(engine, statement, parameters)))
    finally:
        for each in engines:
            event.remove(each, "before_cursor_execute", keep)
            each.dispose()
    return results


def _explain(engine, statement: str, parameters) -> str:
    with engine.connect() as connection:
        transaction = connection.begin()
        try:
            rows = connection.exec_driver_sql(
                "EXPLAIN (ANALYZE, COSTS OFF) " + statement, parameters).all()
        finally:
            transaction.rollback()
    return "\n".join(row[0] for row in rows)


def markdown(results: list[Explained], label: str) -> list[str]:
    lines = [f"EXPLAIN ANALYZE of every statement of one request per path ({label}):", ""]
    current = None
    for item in results:
        if item.path != current:
            current = item.path
            lines += [f"#### {scenarios.BY_NAME[item.path].title}", ""]
        lines += ["```", item.statement, "", item.plan, "```", ""]
    return lines
