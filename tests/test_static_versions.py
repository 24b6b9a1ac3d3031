"""Static URLs carry their file's content version, and only that version is cached long.

Pages name ``/static/<file>?v=<first 16 hex of the file's sha256>``; an answer for exactly
that ``v`` may be kept by the browser for a year (immutable), so no page load waits on a
revalidation of style.css or the synchronous click_guard.js. Anything else (no ``v``, a
stale or forged one, an error) keeps ``no-cache``, so a wrong file is never kept.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import url_for

from tests.support import ip_match_fixtures
from tests.support.apps import another_app

app_config = ip_match_fixtures.app_config
world = ip_match_fixtures.world

HOME = "8.8.8.8"
STATIC = Path(__file__).resolve().parent.parent / "tsd_server" / "static"
STATIC_REFERENCE = re.compile(r"""(?:src|href)=["'](/static/[^"']*)["']""")
LONG_CACHE = "public, max-age=31536000, immutable"
SECURITY_HEADERS = ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options",
                    "Referrer-Policy")


def version_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def static_url(app, filename: str) -> str:
    with app.test_request_context():
        return url_for("static", filename=filename)


def cache_control(response) -> set[str]:
    return {part.strip() for part in response.headers.get("Cache-Control", "").split(",")}


def test_every_static_url_a_page_references_carries_its_files_version(app, world):
    """Pages from every template that loads a file of its own (base, Printers near you, a
    confirmed offer waiting for the printer, a pairing code) name only versioned URLs."""
    printer, anna = world.printer(HOME, "Anna's Mk4"), world.person(HOME)
    printer.announce()
    picked = anna.endpoint.request("POST", f"/printers/nearby/{printer.device_id}/link",
                                   data={"csrf_token": anna.csrf})
    assert picked.status == 302
    code = printer.announce().json["confirmation"]["code"]
    confirmed = anna.endpoint.request("POST", picked.headers["Location"] + "/confirm",
                                      data={"csrf_token": anna.csrf, "code": code})
    assert confirmed.status == 302  # a confirmed offer's page waits for the printer
    login = app.test_client().get("/login")
    pages = {"/login": (login.status_code, login.get_data(as_text=True))}
    for method, path in (("GET", "/printers/nearby"), ("GET", picked.headers["Location"]),
                         ("POST", "/printers/add/code")):
        reply = anna.endpoint.request(method, path, data={"csrf_token": anna.csrf})
        pages[f"{method} {path}"] = (reply.status, reply.body)
    referenced = set()
    for name, (status, html) in pages.items():
        assert status == 200, name
        for url in STATIC_REFERENCE.findall(html):
            parts = urlsplit(url)
            filename = parts.path.removeprefix("/static/")
            expected = version_of((STATIC / filename).read_bytes())
            assert parse_qs(parts.query) == {"v": [expected]}, f"{name}: {url}"
            referenced.add(filename)
    assert referenced == {path.name for path in STATIC.iterdir()}  # every file was seen


def test_an_upgrade_that_changes_a_files_bytes_changes_its_url(app, database, tmp_path):
    """A new release (a new process) names the new bytes; the old URL is no longer cached
    long, so a page still naming it gets its file revalidated."""
    app.static_folder = str(tmp_path)
    (tmp_path / "site.css").write_bytes(b"body { color: red }")
    old_url = static_url(app, "site.css")
    assert old_url == f"/static/site.css?v={version_of(b'body { color: red }')}"

    (tmp_path / "site.css").write_bytes(b"body { color: blue }")
    with another_app(database) as upgraded:
        upgraded.static_folder = str(tmp_path)
        new_url = static_url(upgraded, "site.css")
        assert new_url == f"/static/site.css?v={version_of(b'body { color: blue }')}"
        client = upgraded.test_client()
        fresh, stale = client.get(new_url), client.get(old_url)
        assert fresh.data == stale.data == b"body { color: blue }"
        assert fresh.headers["Cache-Control"] == LONG_CACHE
        assert stale.headers["Cache-Control"] == "no-cache"


def test_in_debug_mode_an_edit_changes_the_url_at_once(app, tmp_path):
    app.static_folder = str(tmp_path)
    app.debug = True
    (tmp_path / "site.js").write_bytes(b"one();")
    assert static_url(app, "site.js").endswith(f"?v={version_of(b'one();')}")
    (tmp_path / "site.js").write_bytes(b"two(); three();")
    assert static_url(app, "site.js").endswith(f"?v={version_of(b'two(); three();')}")


def test_only_the_current_version_is_cached_long_and_keeps_the_security_headers(app, client):
    current = static_url(app, "style.css")
    page = client.get("/login")
    answer = client.get(current)
    assert answer.status_code == 200
    assert answer.headers["Cache-Control"] == LONG_CACHE
    for name in SECURITY_HEADERS:
        assert answer.headers[name] == page.headers[name], name
    revalidated = client.get(current, headers={"If-None-Match": answer.headers["ETag"]})
    assert revalidated.status_code == 304
    assert revalidated.headers["Cache-Control"] == LONG_CACHE

    version = parse_qs(urlsplit(current).query)["v"][0]
    other_file = version_of((STATIC / "click_guard.js").read_bytes())
    for query in ("", "?v=", f"?v={other_file}", f"?v={version.upper()}", f"?v={version}0",
                  f"?v={'0' * 16}", "?v=../style.css"):
        response = client.get(f"/static/style.css{query}")
        assert response.status_code == 200, query
        assert cache_control(response) == {"no-cache"}, query
        assert all(response.headers.get(name) for name in SECURITY_HEADERS), query


def test_an_error_is_never_cached_long(app, client):
    """Even with the version of a real file, a missing one or a refused method is not kept."""
    current = static_url(app, "style.css")
    assert client.get(current).headers["Cache-Control"] == LONG_CACHE  # a live version
    version = parse_qs(urlsplit(current).query)["v"][0]
    for path in (f"/static/no-such-file.css?v={version}", f"/static/style.css/x?v={version}"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.headers["Cache-Control"] == "no-store", path
    refused = client.post(current)
    assert refused.status_code == 405 and "immutable" not in cache_control(refused)


def test_spellings_of_one_file_do_not_grow_the_version_cache(app, client):
    """``x/../style.css`` serves style.css: were the cache keyed by the name as asked, every
    visitor-chosen spelling would hold memory in each worker for good."""
    version = parse_qs(urlsplit(static_url(app, "style.css")).query)["v"][0]
    for n in range(200):
        answer = client.get(f"/static/x{n}/../style.css?v={version}")
        assert answer.status_code == 200
    files = sum(1 for path in STATIC.iterdir() if path.is_file())
    assert len(app.extensions["tsd.static_versions"]) <= files


def test_a_missing_or_tricky_name_builds_a_plain_url(app):
    """Building such a URL must not raise (error pages build URLs too), and ``../__init__.py``,
    a real file beside the static folder, is not hashed into a URL."""
    assert "?v=" in static_url(app, "style.css")
    for name in ("no-such-file.css", "../__init__.py", "static/../../__init__.py", "a\x00b",
                 "/etc/passwd", ""):
        assert "?v=" not in static_url(app, name), name


@pytest.mark.parametrize("tricky", ["../__init__.py", "..%2f__init__.py",
                                    "%2e%2e/__init__.py", "..\\__init__.py", "a%00b",
                                    "static/../../__init__.py"])
def test_a_name_with_path_tricks_404s_with_the_error_page(client, tricky):
    """Asked with the version of the file the name points at (``../__init__.py`` is a real
    file beside the static folder), the answer is the ordinary 404 page: not a 500, not the
    file, not cached."""
    outside = (STATIC.parent / "__init__.py").read_bytes()
    response = client.get(f"/static/{tricky}?v={version_of(outside)}")
    assert response.status_code == 404
    assert response.headers["Cache-Control"] == "no-store"
    assert 'name="csrf-token"' in response.get_data(as_text=True)  # the HTML error page
