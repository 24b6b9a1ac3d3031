"""Requests carrying input no view takes are refused before any view runs.

NUL characters. PostgreSQL cannot hold text with a NUL in it ("A string literal cannot
contain NUL (0x00) characters"), so such a value reaching a query is a 500 there, while
SQLite accepts it and hides the bug in development. No input of this server legitimately
contains NUL, so it is refused here, once, for every route present and future: in the path
it names no resource (404), in the query string or a form field it is a bad request (400).
JSON bodies go through ``tsd_server.api.request_body``, which refuses control characters
itself.

Bodies a page does not take. The forms of pages take text fields, urlencoded or multipart.
Flask-WTF would also fill a form from the files of a multipart body and from the values of
a JSON body: a file, a number or a list where a field expects text, which its validators
(``len()``) and the database do not take (500s), and JSON strings may carry the NUL
characters and lone surrogates that no check here sees. So outside /api/ a JSON body is
415 and a file part 400, for every page present and future.
"""

from __future__ import annotations

from flask import Flask, request
from flask_wtf.form import SUBMIT_METHODS
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import BadRequest, NotFound, UnsupportedMediaType

from tsd_server.api.errors import is_api_request

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

    @app.before_request
    def refuse_bodies_pages_do_not_take() -> None:
        # The API reads JSON itself; Flask-WTF fills a form from the body only for these.
        if is_api_request() or request.method not in SUBMIT_METHODS:
            return
        if request.is_json:
            raise UnsupportedMediaType("Pages take form fields, not JSON.")
        if request.mimetype == "multipart/form-data" and request.files:
            raise BadRequest("Pages take form fields, not files.")
