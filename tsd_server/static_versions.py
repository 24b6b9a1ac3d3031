"""Static file URLs carry a content version (``?v=``), so browsers may cache them for a year.

Without it every page load revalidated style.css and the synchronous click_guard.js in
<head> (a round trip that blocks drawing), and after an upgrade a browser could briefly
draw a page with the old style.css, which holds the click guard's pointer-events rule. A
URL now names the file's bytes: an upgrade that changes a file changes its URL, so the new
file is fetched at once, and an unchanged file is never asked for again. Only a request
whose ``v`` is the file's current version is cached long; no ``v`` or a stale or forged
one keeps Flask's revalidating ``no-cache``, and an error keeps ``no-store``
(security_headers).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from flask import Flask, Response, request
from werkzeug.security import safe_join

ONE_YEAR = 365 * 24 * 60 * 60
VERSION_HEX_DIGITS = 16
# Answers that carry the file (or confirm the cached copy): never an error.
CACHEABLE_STATUSES = frozenset({200, 206, 304})


def static_version(app: Flask, filename: str) -> str | None:
    """The file's version (the start of its sha256), or None for a name that is no file in
    the static folder, so a missing or tricky name builds a plain URL and 404s as before.

    Each file is hashed once per process (production files do not change under a running
    server); in debug mode its mtime and size are part of the key, so an edit shows at once.
    The key is the path ``safe_join`` made of the name, not the name as asked: every
    spelling of one file (``x/../style.css``, ``./style.css``) is one entry, so what a
    visitor asks for cannot grow the cache beyond the files in the folder.
    """
    path = safe_join(app.static_folder, filename) if app.static_folder else None
    if path is None or not os.path.isfile(path):
        return None
    key: tuple[Any, ...] = (path,)
    if app.debug:
        stat = os.stat(path)
        key = (path, stat.st_mtime_ns, stat.st_size)
    versions: dict[tuple[Any, ...], str] = app.extensions.setdefault("tsd.static_versions", {})
    if key not in versions:
        with open(path, "rb") as file:
            versions[key] = hashlib.sha256(file.read()).hexdigest()[:VERSION_HEX_DIGITS]
    return versions[key]


def register(app: Flask) -> None:
    """``url_for('static', ...)`` adds ``v``; a static answer for that ``v`` is immutable."""

    @app.url_defaults
    def add_static_version(endpoint: str, values: dict[str, Any]) -> None:
        if endpoint == "static" and "v" not in values and "filename" in values:
            version = static_version(app, values["filename"])
            if version is not None:
                values["v"] = version

    @app.after_request
    def cache_versioned_static_files(response: Response) -> Response:
        if request.endpoint != "static" or response.status_code not in CACHEABLE_STATUSES:
            return response
        filename = (request.view_args or {}).get("filename", "")
        asked = request.args.get("v")
        if asked is not None and asked == static_version(app, filename):
            cache = response.cache_control
            cache.no_cache = None
            cache.public = True
            cache.max_age = ONE_YEAR
            cache.immutable = True
        return response
