"""Requests carrying NUL characters are refused before any view runs.

PostgreSQL cannot hold text with a NUL in it ("A string literal cannot contain NUL (0x00)
characters"), so such a value reaching a query is a 500 there, while SQLite accepts it and
hides the bug in development. No input of this server legitimately contains NUL, so it is
refused here, once, for every route present and future: in the path it names no resource
(404), in the query string or a form field it is a bad request (400). JSON bodies go through
``tsd_server.api.request_body``, which refuses control characters itself.
"""

from __future__ import annotations

from flask import Flask, request
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import BadRequest, NotFound

NUL = "\x00"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _carries_nul(values: MultiDict) -> bool:
    return any(NUL in key or NUL in value for key, value in values.items(multi=True))


def register(app: Flask) -> None:
    @app.before_request
    def refuse_nul_characters() -> None:
        if NUL in request.path:
            raise NotFound()
        if _carries_nul(request.args) or (
                request.mimetype in FORM_TYPES and _carries_nul(request.form)):
            raise BadRequest("NUL characters are not accepted.")
