"""A second page in chromium asks the server for no static file: not even a revalidation.

tests/test_static_versions.py checks the headers; this checks what a browser does with
them, so a page load no longer waits on a round trip for the synchronous click_guard.js.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def paths_reaching(app: Any) -> Iterator[list[str]]:
    """The paths of the requests that reach ``app`` while the block runs."""
    seen: list[str] = []
    inner = app.wsgi_app

    def recording(environ: dict, start_response: Any) -> Any:
        seen.append(environ["PATH_INFO"])
        return inner(environ, start_response)

    app.wsgi_app = recording
    try:
        yield seen
    finally:
        app.wsgi_app = inner


def static_paths(paths: list[str]) -> list[str]:
    return sorted(path for path in paths if path.startswith("/static/"))


def test_a_second_page_load_asks_the_server_for_no_static_file(live, page):
    with paths_reaching(live.app) as seen:
        page.goto("/login")
        first = static_paths(seen)
        seen.clear()
        page.goto("/register")
    assert first == ["/static/click_guard.js", "/static/local_time.js", "/static/style.css"]
    assert "/register" in seen and static_paths(seen) == []
