"""A Host header that is no host name gets a 400 (or the error it earned), never a 500.

Werkzeug cannot build a URL adapter for ``a..b`` or a label over 63 characters, so Flask
has none for the request, and the error page (it links its stylesheet) could not be drawn:
each such request was a 500 with a traceback logged twice, about 12 KB, from anyone, on
routes without a rate limit (/healthz, static files), through the project's nginx too
(tests/e2e/test_deploy_files.py). Found by a black-box test of the production shape.
"""

from __future__ import annotations

import logging

import pytest

BAD_HOSTS = [".localhost", "a" * 64 + ".example.org", "a..b"]


@pytest.mark.parametrize("host", BAD_HOSTS, ids=["empty-label", "long-label", "double-dot"])
@pytest.mark.parametrize("method, path, status, kind", [
    ("GET", "/healthz", 400, "application/json"),  # its errors are JSON, as the API's
    ("GET", "/login", 400, "text/plain"),
    ("GET", "/static/style.css", 400, "text/plain"),
    ("GET", "/api/v1/ping", 400, "application/json"),
    ("POST", "/login", 413, "text/plain"),  # refused before routing: the body is too large
])
def test_a_host_that_is_no_host_name_is_a_4xx_without_a_traceback(
        app, caplog, host, method, path, status, kind):
    client = app.test_client()
    with caplog.at_level(logging.ERROR):
        response = client.open(path, method=method, headers={"Host": host},
                               data="x" * 70_000 if method == "POST" else None,
                               content_type="application/x-www-form-urlencoded")
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.mimetype == kind
    if status == 400:
        assert "The Host header is not a valid host name." in response.get_data(as_text=True)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
