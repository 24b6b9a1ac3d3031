"""A stalled or unreachable PostgreSQL ends a web request within seconds, with a 503, not
at gunicorn's worker timeout.

A statement waiting for a lock held elsewhere (an operator's ``psql`` with an open
transaction, a migration's ALTER TABLE, LOCK TABLE), or one that never returns, would hold
its sync worker until gunicorn kills it after 30 s: soon every worker of every instance
waits, the whole site stops answering, printers included, and each killed worker leaves
neither an answer nor a log line. So while a connection serves a request, PostgreSQL
cancels any statement of it that runs longer than ``TSD_DATABASE_TIMEOUT`` seconds
(``statement_timeout``; the wait for a lock is part of the statement). The cancelled
statement raises QueryCanceled (SQLSTATE 57014), an OperationalError, which the request
answers with 503 ``database_unavailable`` (api/errors.py) and rolls back; the connection
stays in the pool.

A server that cannot act on that (its host frozen, or cut off by the network after the
connect) sends nothing back, not even TCP's acknowledgements, and Linux would retransmit
to it for about 15 minutes. So every connection, a command's too, gives up on a peer that
has acknowledged nothing for as long and three seconds more (libpq's ``tcp_user_timeout``,
and keepalives for a connection waiting for an answer with nothing left to send), and on a
connect that has not completed after as long (``connect_timeout``: a host that drops
packets is otherwise waited for about two minutes, Linux's SYN retries, and one that
accepts and never answers for ever). These do not cut a live server short: its kernel
acknowledges, and answers the probes, while its statement runs, and one probe or
acknowledgement lost on the way is not enough.

``statement_timeout`` rather than ``lock_timeout``: it bounds the wait for a lock too,
and also a statement slow for any other reason (a plan gone wrong),
which ``lock_timeout`` would leave waiting. Both would only help if a request had a
statement that should run longer than a lock may be waited for, and none has.

Commands are not requests (``flask db upgrade``, ``incident revoke``, ``discovery disable``
waiting for the switches' lock): their statements keep the server's own settings and are
never cut short. What tells the two apart is Flask's request context at checkout, a check
in Python; the SET is sent only when a pooled connection goes from one to the other, so
once per connection in a server and never in a command, not once per request
(docs/performance.md: a round trip is a large part of a device call).

SQLite is left alone: it has no statement timeout, and its busy timeout (Python's sqlite3
default, 5 s) already bounds a wait for its one writer's lock, commands' waits included.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import current_app, has_request_context
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from tsd_server.extensions import db

SETTING = "DATABASE_TIMEOUT"
# In a pooled connection's info: the statement_timeout (ms) it was given for requests; None
# or absent while it has the server's own. SQLAlchemy empties the dict on a reconnect.
REQUEST_BOUND = "tsd.request_statement_timeout_ms"
QUERY_CANCELED = "57014"
# libpq learnt tcp_user_timeout in version 12; an older one refuses to connect with it.
TCP_USER_TIMEOUT_LIBPQ = 120000

log = logging.getLogger(__name__)


def bound_requests(engines: list[Engine], seconds: int) -> None:
    """Bound the statements of the app's ``engines`` made for requests, and the connects
    and peer silences of all their connections (PostgreSQL only; 0 seconds installs
    nothing)."""
    engines = [engine for engine in engines if engine.dialect.name == "postgresql"]
    if not engines or not seconds:
        return
    liveness = liveness_parameters(seconds)
    libpq = libpq_version()
    if libpq < TCP_USER_TIMEOUT_LIBPQ:
        del liveness["tcp_user_timeout"]
        log.warning("libpq %s is older than 12 and has no tcp_user_timeout: a database host "
                    "that stops answering while a statement is being sent is given up only "
                    "after Linux's retransmissions (about 15 minutes), not after %d s; "
                    "install psycopg2-binary, or build psycopg2 against libpq 12 or newer",
                    libpq, seconds + KEEPALIVE_PROBES)
    for engine in engines:
        _bound(engine, seconds, liveness)


def _bound(engine: Engine, seconds: int, liveness: dict[str, int]) -> None:
    milliseconds = seconds * 1000

    def connect_within(_dialect, _record, _cargs, cparams) -> None:
        # Requests' connections and commands' alike (see above). Whole seconds, at least 2
        # (libpq). A connect_timeout in the URL or in TSD_SQLALCHEMY_ENGINE_OPTIONS'
        # connect_args (a "dsn" string there included) wins; so does any TCP liveness
        # setting there, and then the others are left to it too, as they only work together.
        given = cparams.keys() | _dsn_names(cparams.get("dsn"))
        if "connect_timeout" not in given:
            cparams["connect_timeout"] = seconds
        if not LIVENESS_NAMES & given:
            cparams.update(liveness)

    def bound_while_serving(dbapi_connection, record, _proxy) -> None:
        wanted = milliseconds if has_request_context() else None
        if record.info.get(REQUEST_BOUND) != wanted:
            send_statement_timeout(dbapi_connection, wanted)
            record.info[REQUEST_BOUND] = wanted

    event.listen(engine, "do_connect", connect_within)
    event.listen(engine, "checkout", bound_while_serving)


# Keepalive probes after the silence, one a second; the connection is given up once this
# many have gone unanswered in a row (Linux: TCP_USER_TIMEOUT, set to match, decides).
KEEPALIVE_PROBES = 3
LIVENESS_NAMES = frozenset({"keepalives", "keepalives_idle", "keepalives_interval",
                            "keepalives_count", "tcp_user_timeout"})


def liveness_parameters(seconds: int) -> dict[str, int]:
    """libpq's settings that give up on a peer that stopped answering (no TCP
    acknowledgement) after ``seconds`` and three probes: the first keepalive goes out
    after ``seconds`` of silence, then one a second. The user timeout covers the same span,
    so one lost probe or acknowledgement never ends a connection to a live server (with
    TCP_USER_TIMEOUT set, Linux ends a probed connection once that much time has passed
    since the peer was last heard, whatever the probe count), and data sent to a silent
    peer is given up after as long. libpq ignores them on a unix socket."""
    return {"keepalives": 1, "keepalives_idle": seconds, "keepalives_interval": 1,
            "keepalives_count": KEEPALIVE_PROBES,
            "tcp_user_timeout": (seconds + KEEPALIVE_PROBES) * 1000}


def _dsn_names(dsn: str | None) -> set[str]:
    """The parameters a libpq connection string in connect_args names: psycopg2 lets the
    keyword arguments win over it, so ours must not be added over the operator's."""
    if not dsn:
        return set()
    import psycopg2.extensions

    return set(psycopg2.extensions.parse_dsn(dsn))


def libpq_version() -> int:
    """The libpq psycopg2 runs on, as PostgreSQL numbers it (170002 for 17.2)."""
    import psycopg2.extensions  # only when the database is PostgreSQL

    return psycopg2.extensions.libpq_version()


def send_statement_timeout(dbapi_connection: Any, milliseconds: int | None) -> None:
    """Give a psycopg2 connection the bound, or (None) back the server's own setting."""
    with dbapi_connection.cursor() as cursor:  # a literal: SET takes no parameters
        cursor.execute(f"SET statement_timeout = {milliseconds}" if milliseconds
                       else "SET statement_timeout TO DEFAULT")
    # A rollback would undo a session-level SET made in its transaction: keep it.
    if not dbapi_connection.autocommit:
        dbapi_connection.commit()


def extend_for_this_transaction(seconds: int) -> None:
    """Let the statements of the session's transaction run up to ``seconds`` when a request
    is bound to less: for a wait that must outlast the bound (a switch-off waiting for the
    links in progress). One statement, so for rare paths only; commands need none."""
    bound = current_app.config[SETTING]
    if (not has_request_context() or not bound or bound >= seconds
            or db.session.get_bind().dialect.name != "postgresql"):
        return
    db.session.execute(text(f"SET LOCAL statement_timeout = {seconds * 1000}"))


def cancelled_by_timeout(error: DBAPIError) -> bool:
    """Whether PostgreSQL cancelled the statement for running past its statement_timeout."""
    return (getattr(error.orig, "pgcode", None) == QUERY_CANCELED
            and "statement timeout" in str(error.orig))
