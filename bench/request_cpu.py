"""CPU per request in one process: ``.venv/bin/python bench/request_cpu.py``.

bench/run.py measures the hot paths under gunicorn and load, where every figure moves with
the machine. This calls the app's WSGI entry directly, one request at a time, on a fresh
100-row PostgreSQL world with the bench settings and Redis for the rate limits (as the
PostgreSQL runs), and reads the thread's CPU time: no server, no load generator, no other
process competing. It answers what the load figures cannot separate:

- each hot path's own CPU over the ceiling's (``GET /api/v1/ping``), in the worker;
- for device/me, how much of that is its one statement: the same requests again with
  ``single_statement.first`` answering from rows read beforehand, so everything else
  (the bearer token's checks, the JSON answer) still runs;
- how much of that is spent inside the statement's call, and how much is the rest of the
  request running slower after it (a round trip leaves the CPU caches cold);
- and what sending that statement on a raw psycopg2 cursor, bypassing SQLAlchemy's
  execution layer, would save inside a request (bench/statements.py measures it alone).

Variants run interleaved, in rounds; medians are reported. Answers are counted by status
(and error code), so a request that rotted into an error page would show.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import statistics
import sys
import time
from collections import Counter, namedtuple
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from werkzeug.test import EnvironBuilder  # noqa: E402

from bench import scenarios  # noqa: E402
from bench.loadgen import Request  # noqa: E402
from bench.world import (  # noqa: E402
    REDIS_SETTINGS,
    SETTINGS,
    USER_ADDRESS,
    USER_AGENT,
    USER_EMAIL,
    USER_PASSWORD,
    world,
)

FROM_MEMORY = "device_me_from_memory"
RAW_CURSOR = "device_me_raw_cursor"
TIMED = "device_me_timed"
FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)


def _environ(request: Request) -> tuple[dict, bytes]:
    builder = EnvironBuilder(path=request.path, method=request.method,
                             headers=list(request.headers), data=request.body.encode(),
                             environ_base={"REMOTE_ADDR": "127.0.0.1"})
    try:
        environ = builder.get_environ()
        return environ, environ["wsgi.input"].read()
    finally:
        builder.close()


def caller(app, requests: list[Request], answers: Counter) -> Callable[[], None]:
    """One request per call, in turn, straight into the WSGI app; answers are counted."""
    prepared = [_environ(request) for request in requests]
    turn = itertools.count()

    def call() -> None:
        environ, body = prepared[next(turn) % len(prepared)]
        environ = {**environ, "wsgi.input": io.BytesIO(body)}
        status: list[str] = []
        chunks = app(environ, lambda line, headers, exc_info=None: status.append(line))
        try:
            payload = b"".join(chunks)
        finally:
            getattr(chunks, "close", lambda: None)()
        code = status[0].split()[0]
        if code != "200" and b'"error"' in payload:
            code += ":" + json.loads(payload)["error"]
        answers[code] += 1

    return call


def _login_cookie(app) -> str:
    """Log the bench user in through the app and return the ``Cookie`` value nearby needs
    (after one nearby call, whose audit note the cookie then carries, as a browser's would)."""
    client = app.test_client()
    headers = {"X-Forwarded-For": USER_ADDRESS, "User-Agent": USER_AGENT}
    base = {"REMOTE_ADDR": "127.0.0.1"}
    page = client.get("/login", headers=headers, environ_base=base)
    token = scenarios.CSRF_META.search(page.get_data(as_text=True))
    if token is None:
        raise RuntimeError("no CSRF token on /login")
    answer = client.post("/login", headers=headers, environ_base=base, data={
        "email": USER_EMAIL, "password": USER_PASSWORD, "csrf_token": token.group(1)})
    if answer.status_code != 302:
        raise RuntimeError(f"bench login failed: {answer.status_code}")
    client.get("/api/v1/discovery/nearby", headers=headers, environ_base=base)
    return f"session={client.get_cookie('session').value}"


def _with_first(replacement: Callable, call: Callable[[], None]) -> Callable[[], None]:
    """``call`` with ``single_statement.first`` swapped for ``replacement`` while it runs
    (two attribute writes per call)."""
    from tsd_server import single_statement

    real = single_statement.first

    def wrapped() -> None:
        single_statement.first = replacement
        try:
            call()
        finally:
            single_statement.first = real

    return wrapped


def statement_from_memory(app, tokens: list[str],
                          call: Callable[[], None]) -> Callable[[], None]:
    """``call``, with device/me's read answered from rows read beforehand."""
    from tsd_server import single_statement
    from tsd_server.auth import device_auth
    from tsd_server.auth.tokens import token_hash

    real = single_statement.first
    with app.app_context():
        read = {digest: real(device_auth._BY_TOKEN_HASH, {"token_hash": digest})
                for digest in map(token_hash, tokens)}
    # Seen "in the future": the once-a-minute last-seen write never falls due, however long
    # the run (the real rows' writes are part of the real requests' cost, as under load).
    row_type = namedtuple("DeviceRow", next(iter(read.values()))._fields)
    rows = {digest: row_type(**{**row._asdict(), "last_seen_at": FAR_FUTURE})
            for digest, row in read.items()}

    def from_memory(statement, parameters=None):
        if statement is not device_auth._BY_TOKEN_HASH:
            return real(statement, parameters)
        return rows[parameters["token_hash"]]

    return _with_first(from_memory, call)


def statement_timed(call: Callable[[], None], spent: list[float]) -> Callable[[], None]:
    """``call``, adding the thread's CPU time inside device/me's ``single_statement.first``
    to ``spent`` (seconds, calls): the statement's own cost, without what it does to the
    rest of the request."""
    from tsd_server import single_statement
    from tsd_server.auth import device_auth

    real = single_statement.first

    def timed(statement, parameters=None):
        if statement is not device_auth._BY_TOKEN_HASH:
            return real(statement, parameters)
        started = time.thread_time()
        try:
            return real(statement, parameters)
        finally:
            spent[0] += time.thread_time() - started
            spent[1] += 1

    return _with_first(timed, call)


def statement_on_raw_cursor(app, call: Callable[[], None]) -> Callable[[], None]:
    """``call``, with device/me's read sent as the same SQL on a raw psycopg2 cursor from the
    same pool: what bypassing SQLAlchemy's execution layer would save in a request. The
    UTC zone the app's column type adds is added by hand."""
    from tsd_server import single_statement
    from tsd_server.auth import device_auth
    from tsd_server.extensions import db

    real = single_statement.first
    with app.app_context():
        pool = db.engines[single_statement.BIND]
    sql = str(device_auth._BY_TOKEN_HASH.compile(dialect=pool.dialect))
    row_type = namedtuple("DeviceRow", device_auth._BY_TOKEN_HASH.selected_columns.keys())

    def on_raw_cursor(statement, parameters=None):
        if statement is not device_auth._BY_TOKEN_HASH:
            return real(statement, parameters)
        connection = pool.raw_connection()
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, parameters)
                found = cursor.fetchone()
        finally:
            connection.close()
        if found is None:
            return None
        return row_type(*(value.replace(tzinfo=UTC) if isinstance(value, datetime) else value
                          for value in found))

    return _with_first(on_raw_cursor, call)


def _cpu(call: Callable[[], None], repeat: int) -> float:
    started = time.thread_time()
    for _ in range(repeat):
        call()
    return (time.thread_time() - started) / repeat * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2000, help="requests per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; medians reported")
    args = parser.parse_args(argv)
    from tsd_server import create_app

    with world("postgresql", 100) as w:
        app = create_app({**SETTINGS, **REDIS_SETTINGS, "RATELIMIT_KEY_PREFIX": "request-cpu",
                          "DATABASE_URL": w.url, "SECRET_KEY": w.secret_key,
                          "ENV": "production"})
        cookie = _login_cookie(app)
        answers: dict[str, Counter] = {}
        calls: dict[str, Callable[[], None]] = {}
        for path in scenarios.ALL_PATHS:
            answers[path.name] = Counter()
            calls[path.name] = caller(app, scenarios.requests_for(path.name, w, cookie),
                                      answers[path.name])
        answers[FROM_MEMORY] = Counter()
        calls[FROM_MEMORY] = statement_from_memory(app, w.working.tokens, caller(
            app, scenarios.requests_for("device_me", w), answers[FROM_MEMORY]))
        answers[TIMED] = Counter()
        spent = [0.0, 0]
        calls[TIMED] = statement_timed(caller(
            app, scenarios.requests_for("device_me", w), answers[TIMED]), spent)
        answers[RAW_CURSOR] = Counter()
        calls[RAW_CURSOR] = statement_on_raw_cursor(app, caller(
            app, scenarios.requests_for("device_me", w), answers[RAW_CURSOR]))
        samples: dict[str, list[float]] = {name: [] for name in calls}
        for call in calls.values():
            _cpu(call, 100)  # warm up: connections, statement caches
        inside: list[float] = []
        for _ in range(args.rounds):
            for name, call in calls.items():
                spent[:] = [0.0, 0]
                samples[name].append(_cpu(call, args.repeat))
                if name == TIMED:
                    inside.append(spent[0] / spent[1] * 1e6)
        _print(samples, answers, statistics.median(inside), args)


def _print(samples: dict[str, list[float]], answers: dict[str, Counter], inside: float,
           args) -> None:
    median = {name: statistics.median(values) for name, values in samples.items()}
    print(f"median CPU µs per request in one process, {args.rounds} rounds of {args.repeat} "
          "(PostgreSQL, Redis rate limits)\n")
    print("| request | CPU µs | over the ceiling | answers |\n|---|---:|---:|---|")
    titles = {path.name: path.title for path in scenarios.ALL_PATHS}
    titles[FROM_MEMORY] = "GET /api/v1/device/me, its statement answered from memory"
    titles[RAW_CURSOR] = "GET /api/v1/device/me, its statement on a raw psycopg2 cursor"
    titles[TIMED] = "GET /api/v1/device/me, its statement's call timed"
    for name, value in median.items():
        counted = ", ".join(f"{code}: {n:,}" for code, n in sorted(answers[name].items()))
        print(f"| {titles[name]} | {value:,.0f} | {value - median['ping']:+,.0f} | {counted} |")
    print(f"\ndevice/me's statement in a request: {median['device_me'] - median[FROM_MEMORY]:,.0f}"
          f" µs through SQLAlchemy ({inside:,.0f} µs inside the call), "
          f"{median[RAW_CURSOR] - median[FROM_MEMORY]:,.0f} µs on a raw cursor; the rest of "
          f"device/me over the ceiling: {median[FROM_MEMORY] - median['ping']:,.0f} µs")


if __name__ == "__main__":
    main()
