"""The deploy files as shipped: nginx and systemd accept them, and the nginx site keeps QR
tokens and codes out of its error log when an instance is down."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import servers, skips

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def skip_loudly(message: str) -> None:
    skips.skip_loudly(message + ": deploy-file test SKIPPED")


def test_example_nginx_site_is_accepted_by_nginx(tmp_path):
    if not servers.nginx_available():
        skip_loudly(f"nginx is NOT installed at {servers.NGINX}")
    if shutil.which("openssl") is None:
        skip_loudly("openssl is NOT installed (needed for a throwaway certificate)")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=print.example.org", "-keyout", str(tmp_path / "key.pem"),
                    "-out", str(tmp_path / "cert.pem")], check=True, capture_output=True)
    (tmp_path / "snippets").mkdir()
    shutil.copy(DEPLOY / "tsd-server-proxy.conf", tmp_path / "snippets")
    site = (DEPLOY / "tsd-server.nginx.conf").read_text()
    site = site.replace("/etc/letsencrypt/live/print.example.org/fullchain.pem",
                        str(tmp_path / "cert.pem"))
    site = site.replace("/etc/letsencrypt/live/print.example.org/privkey.pem",
                        str(tmp_path / "key.pem"))
    site = site.replace("/var/log/nginx/", f"{tmp_path}/")
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(f"""
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{}}
http {{
    access_log {tmp_path}/access.log;
    include {tmp_path}/site.conf;
}}
""")
    check = subprocess.run([servers.NGINX, "-t", "-p", str(tmp_path), "-e",
                            str(tmp_path / "error.log"), "-c", str(tmp_path / "nginx.conf")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_nginx_logs_no_request_line_when_an_instance_is_down(tmp_path):
    """nginx writes the request line, QR token and query string included, into its error
    log when an upstream fails; the example site logs only critical errors for that reason.
    The same request with the error log at "error" shows what would be written."""
    if not servers.nginx_available():
        skip_loudly(f"nginx is NOT installed at {servers.NGINX}")
    site = (DEPLOY / "tsd-server.nginx.conf").read_text()
    level = re.search(r"^\s*error_log /var/log/nginx/tsd-server\.error\.log (\w+);", site,
                      re.MULTILINE)
    assert level is not None, "the example site sets no error_log of its own"
    token, code = "Q" * 43, "WDJB-MJHT"
    down = servers.free_port()  # an instance that is not running
    written = {}
    for name, log_level in (("as shipped", level.group(1)), ("at error", "error")):
        directory = tmp_path / name.replace(" ", "-")
        with servers.nginx(directory, locations=f"""
location / {{
    include {DEPLOY / "tsd-server-proxy.conf"};
    proxy_pass http://tsd_server;
    error_log {directory / "site.error.log"} {log_level};
}}""", http_extra=f"upstream tsd_server {{ server 127.0.0.1:{down}; }}") as proxy:
            answer = servers.http_session().get(f"{proxy.base_url}/link/qr/{token}?code={code}")
            assert answer.status_code == 502
        written[name] = "".join(path.read_text(errors="replace") for path in (
            directory / "site.error.log", directory / "error.log") if path.exists())
    assert token in written["at error"] and code in written["at error"]
    assert token not in written["as shipped"] and code not in written["as shipped"]


def test_systemd_unit_is_accepted_by_systemd_analyze(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        skip_loudly("systemd-analyze is NOT installed")
    unit = (DEPLOY / "tsd-server.service").read_text()
    # verify checks that ExecStart exists; point it at this checkout's gunicorn.
    unit = unit.replace("/opt/tsd-server/.venv/bin/gunicorn",
                        str(Path(sys.executable).with_name("gunicorn")))
    (tmp_path / "tsd-server.service").write_text(unit)
    check = subprocess.run([analyze, "verify", str(tmp_path / "tsd-server.service")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "tsd-server.service" not in check.stderr, check.stderr
    for option in ("NoNewPrivileges=yes", "ProtectSystem=strict",
                   "ReadWritePaths=/opt/tsd-server/instance", "EnvironmentFile=",
                   "User=tsd-server", "Environment=TSD_BIND=127.0.0.1:8001",
                   "RestartPreventExitStatus=3"):
        assert option in unit
