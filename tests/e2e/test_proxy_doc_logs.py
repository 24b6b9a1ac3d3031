"""The nginx block of docs/deploying-behind-a-proxy.md keeps QR links' tokens out of nginx's
logs, under Debian's default access log (``combined``: the request line and the Referer)
in the http context around it. A logged-out scan spends nothing, so the token it logs would
still open the printer's request for whoever reads the log (found by a review: the doc's
block once logged ``/link/qr/<token>`` and ``/login?next=/link/qr/<token>``).
"""

from __future__ import annotations

import re

import pytest

from tests.e2e.test_ip_match_e2e import (
    DEPLOY,
    doc_nginx,
    doc_settings,
    doc_snippet,
    nginx_location,
)
from tests.support import db_backends, servers
from tests.support.skips import skip_loudly

TOKEN_IN_A_PATH = re.compile(r"/link/qr/[A-Za-z0-9_-]{43}")


def test_the_doc_logging_is_the_shipped_site_logging():
    """One log format in two places: the doc's must not drift from deploy/'s."""
    site = (DEPLOY / "tsd-server.nginx.conf").read_text()
    shipped = re.search(r"# --- logging \(http context\) ---\n(.*?)# --- end logging ---",
                        site, re.S)
    assert shipped, "deploy/tsd-server.nginx.conf has no marked logging section"
    code = [line for line in shipped.group(1).splitlines() if not line.startswith("#")]
    assert "\n".join(code).strip() == doc_snippet("nginx-logging").strip()


def test_the_documented_block_logs_no_qr_token(tmp_path):
    if not servers.nginx_available():
        skip_loudly(f"nginx is NOT installed at {servers.NGINX}: proxy doc log test SKIPPED")
    url = f"sqlite:///{tmp_path / 'tsd.sqlite3'}"
    db_backends.migrate(url)
    port = servers.free_port()  # nginx's, known beforehand: QR links need the base URL
    settings = {**doc_settings(), "BASE_URL": f"http://127.0.0.1:{port}"}
    with servers.gunicorn(tmp_path / "gunicorn", database_url=url, settings=settings,
                          workers=1) as backend:
        nginx_dir = tmp_path / "nginx"
        with doc_nginx(nginx_dir, nginx_location(backend.port), port=port) as proxy:
            base = proxy.base_url
            started = servers.http_session().post(base + "/api/v1/device/authorize", json={
                "device_id": "printer-logs-01", "name": "Owner's printer"}).json()
            link = started["verification_uri_complete"]
            token = link.rsplit("/", 1)[1]
            assert link.startswith("http") and len(token) == 43, started
            # The owner scans while logged out: the login page follows, the link in its
            # address and in the Referer of what the page loads; nothing is spent.
            phone = servers.http_session()
            scanned = phone.get(base + "/link/qr/" + token,
                                headers={"Sec-Fetch-Site": "none"}, allow_redirects=False)
            assert scanned.status_code == 302
            login = scanned.headers["Location"]
            assert token in login
            page = phone.get(base + login.removeprefix(base))
            assert page.status_code == 200
            phone.get(base + "/healthz", headers={"Referer": page.url})
    logs = {path.name: path.read_text(errors="replace") for path in nginx_dir.glob("*.log")}
    assert '"GET /link/qr/[redacted]" 302' in logs["tsd-server.access.log"], logs
    for name, text in logs.items():
        assert token not in text, name
        assert not TOKEN_IN_A_PATH.search(text), name


@pytest.mark.parametrize("directive", ["access_log", "error_log"])
def test_without_the_blocks_log_lines_the_token_is_logged(tmp_path, directive):
    """What the two lines prevent: Debian's defaults around the block write the token."""
    if not servers.nginx_available():
        skip_loudly(f"nginx is NOT installed at {servers.NGINX}: proxy doc log test SKIPPED")
    token = "Q" * 43
    down = servers.free_port()  # gunicorn not running: nginx logs an upstream error
    location = "\n".join(line for line in nginx_location(down).splitlines()
                         if not line.strip().startswith(directive))
    with doc_nginx(tmp_path, location) as proxy:
        answer = servers.http_session().get(f"{proxy.base_url}/link/qr/{token}")
        assert answer.status_code == 502
    logged = "".join(path.read_text(errors="replace") for path in tmp_path.glob("*.log"))
    assert token in logged
