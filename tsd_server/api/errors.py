"""JSON errors for everything under /api: ``{"error": code, "message": text}``, never HTML.

Views raise ``ApiError``; Werkzeug's HTTP errors (404, 405, 413, ...), CSRF failures and
unexpected exceptions under /api are turned into the same shape here, in one place.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from flask import Flask, Response, current_app, jsonify, render_template, request, session
from flask_limiter import RateLimitExceeded
from flask_wtf.csrf import CSRFError
from limits.errors import StorageError
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import BadHost, HTTPException

from tsd_server import database_timeout

log = logging.getLogger(__name__)

API_PREFIX = "/api/"

HTTP_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}

# With the rate-limit storage (Redis) unreachable, a rate-limited request is refused rather
# than served unlimited: 503, come back after this many seconds. The outage is logged at
# most once per OUTAGE_LOG_INTERVAL per process, not with a traceback per request.
STORAGE_RETRY_AFTER = 10
OUTAGE_LOG_INTERVAL = 60.0
# The database out of reach (refused, restarted, too many connections, a pool with no free
# connection, a lock or serialization failure PostgreSQL asks to retry, a statement past
# TSD_DATABASE_TIMEOUT): 503, not a 500 with a traceback per request. Its request's
# transaction is rolled back at teardown.
DATABASE_RETRY_AFTER = 5


# Endpoints that speak OAuth (RFC 8628's token request): each of their error bodies also
# carries RFC 6749 §5.2's ``error_description``, the same text as ``message``, which OAuth
# client libraries show. Named here, not in the view, so that the errors answered before
# the view runs (415, 429, 503) carry it too.
OAUTH_ERROR_ENDPOINTS = frozenset({"device_flow_api.token"})


class ApiError(Exception):
    """An error answer with a stable code; extra keyword fields are added to the JSON."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra
        self.headers: dict[str, str] = {}

    def response(self) -> Response:
        body = {"error": self.code, "message": self.message, **self.extra}
        if request.endpoint in OAUTH_ERROR_ENDPOINTS:
            body["error_description"] = self.message
        resp = jsonify(body)
        resp.status_code = self.status
        resp.headers.update(self.headers)
        return resp


# Outside /api/, the monitoring route: a probe reads JSON (the HTTP contract's table).
JSON_PATHS = ("/healthz",)


def is_api_request() -> bool:
    """Whether errors here are JSON: the API, and /healthz (with a trailing slash too)."""
    path = request.path
    return path.startswith(API_PREFIX) or path.rstrip("/") in JSON_PATHS


def retry_after_seconds() -> int:
    """Seconds until the limit this request breached lets one through again (at least 1).

    Asked of the limit storage only when refusing, so an answer under the limit costs one
    trip to the storage (the hit), not two.
    """
    from tsd_server.extensions import limiter

    breached = limiter.current_limit
    if breached is None:
        return 1
    try:
        reset_at = breached.window[0]  # when the oldest counted hit leaves the window
    except Exception:  # noqa: BLE001 - the refusal stands even if its storage misbehaves here
        log.exception("could not read the rate-limit window for Retry-After")
        return int(breached.limit.get_expiry())
    return max(1, math.ceil(reset_at - time.time()))


def failed_route() -> str:
    """The route a failed request took, for the log: its rule and endpoint
    (``/link/qr/<token> (qr_web.open_qr_link)``), never the path itself.

    A path can hold a one-time secret -- a QR link's token -- which the access logs redact
    (gunicorn.conf.py, deploy/tsd-server.nginx.conf); whoever reads this log must not be able
    to open the link first. A request that matched no route has no rule: its path is not
    logged either (``/link//qr/<token>`` redirects to the link, so it holds the token too).
    """
    rule = request.url_rule
    if rule is None:
        return "(no matching route)"
    return f"{rule.rule} ({rule.endpoint})"


# SQLite reports a statement it cannot run (no such table or column, a syntax error) as an
# OperationalError too; these codes are the ones that mean "try again": busy, locked, the
# file unreachable or failing (sqlite3.Error.sqlite_errorname, extended codes included).
SQLITE_OUT_OF_REACH = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN", "SQLITE_IOERR",
                       "SQLITE_FULL", "SQLITE_PROTOCOL")
MAX_LOGGED_CAUSES = 64


def database_out_of_reach(error: DBAPIError) -> bool:
    """An outage to retry after (the database refused the connection, restarted, is out of
    connections, asked to retry a transaction), not a statement it refused (a bug)."""
    if error.connection_invalidated:
        return True
    if not isinstance(error, OperationalError):
        return False
    name = getattr(error.orig, "sqlite_errorname", None)
    return name is None or name.startswith(SQLITE_OUT_OF_REACH)


def error_page(title: str, message: str | None, status: int, *,
               database_down: bool = False) -> str | Response:
    """The error page, or plain text when no URL of this site can be built for the request:
    a Host header that is no host name (``a..b``, a label over 63 characters) leaves Flask
    without one, and the page links its stylesheet. An error found before routing (a body
    too large, a form without its token) would otherwise end in a 500 and a traceback."""
    if isinstance(request.routing_exception, BadHost):
        return Response(f"{title}: {message or ''}\n", status=status, mimetype="text/plain")
    # Every page reads the logged-in person's account (Flask-Login's context processor
    # puts current_user into each template); with the database out of reach that read
    # fails again, inside the error handler, and on a stalled database only after another
    # TSD_DATABASE_TIMEOUT. So then the page is drawn without the context processors and
    # without the account (base.html's account_unknown), as when the read fails.
    if not database_down:
        try:
            return render_template("error.html", title=title, message=message, status=status)
        except SQLAlchemyError:
            from tsd_server.extensions import db

            db.session.rollback()
    return current_app.jinja_env.get_template("error.html").render(
        title=title, message=message, status=status, account_unknown=True)


def _account_deleted_meanwhile() -> bool:
    """See ``accounts.account_deleted_meanwhile``; False when that cannot be told either."""
    from tsd_server.auth import accounts

    try:
        return accounts.account_deleted_meanwhile()
    except SQLAlchemyError:
        return False


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def handle_api_error(error: ApiError):
        if is_api_request():
            return error.response()
        # A service raised on a page (e.g. a rate limit inside a form post): an HTML answer.
        return error_page(error.code.replace("_", " ").capitalize(), error.message,
                          error.status), error.status, error.headers

    def temporarily_unavailable(code: str, message: str, retry_after: int, *,
                                database_down: bool = False):
        """503 with Retry-After: JSON under /api, the error page elsewhere."""
        headers = {"Retry-After": str(retry_after)}
        if is_api_request():
            api_error = ApiError(503, code, message)
            api_error.headers.update(headers)
            return api_error.response()
        return error_page("Temporarily unavailable", message, 503,
                          database_down=database_down), 503, headers

    # time.monotonic() after which the next outage of each kind (and cause) is logged
    next_outage_log: dict[str, float] = {}

    def first_this_minute(kind: str) -> bool:
        now = time.monotonic()
        if now < next_outage_log.get(kind, 0.0):
            return False
        if len(next_outage_log) >= MAX_LOGGED_CAUSES:
            next_outage_log.clear()
        next_outage_log[kind] = now + OUTAGE_LOG_INTERVAL
        return True

    @app.errorhandler(StorageError)
    def handle_rate_limit_storage_error(error: StorageError):
        if first_this_minute("rate_limit"):
            log.error("rate-limit storage unavailable (%s): rate-limited requests answer 503 "
                      "until it is back (logged at most once a minute)", error)
        return temporarily_unavailable(
            "rate_limit_unavailable", "Rate limits cannot be checked right now, so this "
            "request was not handled. Try again in a few seconds.", STORAGE_RETRY_AFTER)

    @app.errorhandler(PoolTimeoutError)
    @app.errorhandler(DBAPIError)
    def handle_database_unavailable(error: Exception):
        if isinstance(error, DBAPIError) and not database_out_of_reach(error):
            return handle_unexpected(error)  # a statement the database refused: a bug
        if first_this_minute(f"database: {type(error).__name__}: {error.orig!r:.80}"
                             if isinstance(error, DBAPIError) else "database: pool"):
            stalled = ""
            if isinstance(error, DBAPIError) and database_timeout.cancelled_by_timeout(error):
                stalled = (f"a statement ran past TSD_DATABASE_TIMEOUT "
                           f"({app.config['DATABASE_TIMEOUT']} s) and was cancelled (a lock "
                           "held by another session, see pg_locks, or a stalled statement); ")
            log.error("database unavailable on %s %s: %srequests that need it answer 503 "
                      "until it is back (logged at most once a minute)", request.method,
                      failed_route(), stalled, exc_info=error)
        return temporarily_unavailable(
            "database_unavailable", "The server's database cannot be reached right now. "
            "Try again in a few seconds.", DATABASE_RETRY_AFTER, database_down=True)

    @app.errorhandler(CSRFError)
    def handle_csrf_error(error: CSRFError):
        if is_api_request():
            return ApiError(400, "csrf_failed", error.description).response()
        page = error_page("Form expired", (
            "This form could not be accepted (its security token was missing or stale). "
            "Go back, reload the page and try again."), 400)
        if app.session_interface.get_cookie_name(app) not in request.cookies:
            # A post forged on another site arrives without the SameSite session cookie;
            # the fresh token this page made must not replace the person's session, or
            # any site could log them out (tests/browser/test_forged_posts.py).
            session.modified = False
        return page, 400

    @app.errorhandler(BadHost)
    def handle_bad_host(error: BadHost):
        message = "The Host header is not a valid host name."
        if is_api_request():
            return ApiError(400, "bad_request", message).response()
        return error_page("Bad request", message, 400), 400

    @app.errorhandler(HTTPException)
    def handle_http_error(error: HTTPException):
        status = error.code or 500
        headers = {name: value for name, value in error.get_headers()
                   if name.lower() in ("allow", "retry-after")}
        if isinstance(error, RateLimitExceeded):
            headers["Retry-After"] = str(retry_after_seconds())
        if is_api_request():
            code = HTTP_ERROR_CODES.get(status, "http_error")
            api_error = ApiError(status, code, error.description or error.name)
            api_error.headers.update(headers)
            return api_error.response()
        return error_page(error.name, error.description, status), status, headers

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception):
        if isinstance(error, SQLAlchemyError) and _account_deleted_meanwhile():
            from tsd_server.auth.accounts import SessionEnded

            log.info("%s on %s %s: its account was deleted meanwhile, answered as logged "
                     "out", type(error).__name__, request.method, failed_route())
            return app.handle_user_exception(SessionEnded("the account was deleted"))
        log.exception("unhandled error on %s %s", request.method, failed_route())
        if is_api_request():
            return ApiError(500, "internal_error", "The server failed to handle this "
                            "request; it has been logged.").response()
        return error_page("Server error", "Something went wrong on the server; it has been "
                          "logged.", 500), 500

