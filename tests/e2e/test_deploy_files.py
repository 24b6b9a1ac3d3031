"""The deploy files as shipped: nginx and systemd accept them, the nginx site keeps QR
tokens and codes out of its error log when an instance is down, and over plain http it
serves Let's Encrypt's challenge files from the webroot and redirects everything else."""

from __future__ import annotations

import http.client
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support import servers, skips
from tests.support import shipped_site as deploy_site

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = deploy_site.DEPLOY
HOST_NAME = deploy_site.HOST_NAME
WEBROOT = "/var/www/letsencrypt"  # certbot --webroot -w, in the site and docs/production.md


def skip_loudly(message: str) -> None:
    skips.skip_loudly(message + ": deploy-file test SKIPPED")


def test_example_nginx_site_is_accepted_by_nginx(tmp_path):
    if not servers.nginx_available():
        skip_loudly(f"nginx is NOT installed at {servers.NGINX}")
    if shutil.which("openssl") is None:
        skip_loudly("openssl is NOT installed (needed for a throwaway certificate)")
    deploy_site.copy_snippets(tmp_path)
    cert, key = deploy_site.certificate(tmp_path)
    site = (DEPLOY / "tsd-server.nginx.conf").read_text()  # its ports as shipped: -t binds none
    for old, new in ((f"/etc/letsencrypt/live/{HOST_NAME}/fullchain.pem", str(cert)),
                     (f"/etc/letsencrypt/live/{HOST_NAME}/privkey.pem", str(key)),
                     ("/var/log/nginx/", f"{tmp_path}/")):
        site = deploy_site.replaced(site, old, new)
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
    shutil.copy(DEPLOY / "tsd-server.socket", tmp_path)
    check = subprocess.run([analyze, "verify", str(tmp_path / "tsd-server.socket"),
                            str(tmp_path / "tsd-server.service")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "tsd-server." not in check.stderr, check.stderr
    for option in ("NoNewPrivileges=yes", "ProtectSystem=strict",
                   "ReadWritePaths=/opt/tsd-server/instance", "EnvironmentFile=",
                   "User=tsd-server", "Requires=tsd-server.socket",
                   "RestartPreventExitStatus=3"):
        assert option in unit
    # gunicorn takes the socket systemd hands it: a port of its own would be a way round it.
    assert "TSD_BIND" not in unit.split("[Service]")[1]


def plain_get(port: int, target: str, host: str = HOST_NAME) -> tuple[int | None, str, bytes]:
    """GET ``target`` exactly as written (no client resolves its dots or escapes first);
    status, Location and body, or None when nginx hangs up without an answer."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", host)
        connection.endheaders()
        answer = connection.getresponse()
        return answer.status, answer.getheader("Location") or "", answer.read()
    except (http.client.RemoteDisconnected, ConnectionResetError):  # 444 (reset: the limits)
        return None, "", b""
    finally:
        connection.close()


@contextmanager
def shipped_site(tmp_path: Path, webroot: Path) -> Iterator[tuple[int, int, Path]]:
    """The shipped site, as is but for its ports, certificate, log folder and webroot,
    under Debian's nginx on loopback (no instance behind it): (http port, https port, the
    folder of its logs)."""
    if not servers.nginx_available():
        skip_loudly(f"nginx is NOT installed at {servers.NGINX}")
    if shutil.which("openssl") is None:
        skip_loudly("openssl is NOT installed (needed for a throwaway certificate)")
    directory = tmp_path / "nginx"
    http_port, https_port = servers.free_port(), servers.free_port()
    site = deploy_site.on_loopback(directory, http_port=http_port, https_port=https_port,
                                   also=[(f"root {WEBROOT};", f"root {webroot};")])
    (directory / "site.conf").write_text(site)
    with servers.nginx_serving(directory, f"include {directory}/site.conf;", port=http_port,
                               probe="", kind=servers.AcceptingServer):
        yield http_port, https_port, directory


def test_plain_http_serves_only_challenge_files_from_the_webroot(tmp_path):
    """certbot --webroot writes a file under /.well-known/acme-challenge/ and Let's Encrypt
    fetches it over plain http: the shipped site's port-80 server must serve that file from
    the webroot (a 301 to https fails the request), redirect every other path, and give
    nothing outside the webroot for a path that climbs out of it, written plainly or with
    its dots and slashes percent-encoded."""
    assert f"certbot certonly --webroot -w {WEBROOT} " in (
        ROOT / "docs" / "production.md").read_text(), "docs and site name other webroots"
    webroot = tmp_path / "www" / "letsencrypt"
    challenges = webroot / ".well-known" / "acme-challenge"
    challenges.mkdir(parents=True)
    token, key_authorization = "Xq3vN7-challenge_token", "Xq3vN7-challenge_token.thumbprint"
    (challenges / token).write_text(key_authorization)
    secret = "not-for-the-internet"
    for outside in (webroot / "private.txt", webroot / ".well-known" / "secret.txt",
                    webroot.parent / "secret.txt", tmp_path / "secret.txt"):
        outside.write_text(secret)

    with shipped_site(tmp_path, webroot) as (http_port, _, directory):
        status, _, body = plain_get(http_port, f"/.well-known/acme-challenge/{token}")
        assert (status, body) == (200, key_authorization.encode())
        # Everything else still goes to https, the query string with it.
        for target in ("/login?next=%2F", "/.well-known/acme-challenge", "/.well-known/x",
                       f"/.well-known/acme-challenge/../../login?code={token}"):
            status, location, _ = plain_get(http_port, target)
            assert status == 301, target
            assert location.startswith(f"https://{HOST_NAME}/"), (target, location)
        assert plain_get(http_port, "/login?next=%2F")[1] == f"https://{HOST_NAME}/login?next=%2F"
        # Other host names still get no answer, the challenge path included.
        assert plain_get(http_port, f"/.well-known/acme-challenge/{token}",
                         host="other.example")[0] is None
        # A path that climbs out of the challenge folder gets nothing from outside it.
        passwd = Path("/etc/passwd").read_text().splitlines()[0].encode()
        base = "/.well-known/acme-challenge/"
        for climb in ("../../etc/passwd", "%2e%2e/%2e%2e/etc/passwd",
                      "..%2f..%2fetc%2fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
                      "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", "..%252f..%252fetc%252fpasswd",
                      "../../../../../../../../etc/passwd",
                      "%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                      "..%5c..%5c..%5cetc%5cpasswd", ".%2e/.%2e/private.txt",
                      "../../private.txt", "%2e%2e/%2e%2e/private.txt",
                      "../../../secret.txt", "%2e%2e%2f%2e%2e%2f%2e%2e%2fsecret.txt",
                      "../../../../secret.txt", "%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret.txt",
                      "../../../../../secret.txt"):
            for target in (base + climb, f"http://{HOST_NAME}{base}{climb}"):
                status, location, body = plain_get(http_port, target)
                # 301 once nginx has resolved the dots (a path outside the folder), 400 for
                # one above the root, 404 for a name that only looks like dots and slashes.
                assert status in (301, 400, 404), (target, status)
                assert status != 301 or location.startswith(f"https://{HOST_NAME}/"), target
                assert passwd not in body and secret.encode() not in body, target
        # Where a location without its final slash meets an alias, this name is the folder
        # above the challenges; here it is just another path to redirect.
        status, location, body = plain_get(http_port, "/.well-known/acme-challenge../secret.txt")
        assert (status, secret.encode() in body) == (301, False)
        # A QR link over plain http is redirected, and its token and a code stay out of the log.
        qr_token, code = "Q" * 43, "WDJB-MJHT"
        status, location, _ = plain_get(http_port, f"/link/qr/{qr_token}?code={code}")
        assert status == 301 and location.startswith(f"https://{HOST_NAME}/link/qr/")
    logged = (directory / "tsd-server.access.log").read_text()
    assert "/link/qr/[redacted]" in logged
    assert qr_token not in logged and code not in logged


def tls_connection(port: int, source: str) -> ssl.SSLSocket:
    """A TLS connection to the site's https port from ``source`` (another household's
    address on loopback), naming the site (SNI), certificate unchecked (a throwaway one)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    plain = socket.create_connection(("127.0.0.1", port), timeout=15, source_address=(source, 0))
    return context.wrap_socket(plain, server_hostname=HOST_NAME)


def test_one_address_cannot_hold_every_connection(tmp_path):
    """Slow request bodies from one address: past 32 at once nginx answers 429 at once
    (deploy/tsd-server-limits.conf), and another address is still answered. A request
    whose headers never end is closed after 10 s, not nginx's default 60 s."""
    with shipped_site(tmp_path, tmp_path / "www") as (_, https_port, _):
        held, refused = [], 0
        slow_body = (f"POST /api/v1/pairing/redeem HTTP/1.1\r\nHost: {HOST_NAME}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{").encode()
        opened = []
        for _ in range(40):  # well within the 10 s nginx waits for the next byte of a body
            opened.append(tls_connection(https_port, "127.0.0.2"))
            opened[-1].sendall(slow_body)
        for connection in opened:
            connection.settimeout(0.1)
            try:
                answer = connection.recv(64)
            except TimeoutError:
                held.append(connection)  # nginx is waiting for the rest of the body
                continue
            assert answer.startswith(b"HTTP/1.1 429"), answer
            refused += 1
            connection.close()
        assert (len(held), refused) == (32, 8)
        other = tls_connection(https_port, "127.0.0.3")
        other.sendall(f"GET /login HTTP/1.1\r\nHost: {HOST_NAME}\r\nConnection: close\r\n\r\n"
                      .encode())
        status = other.recv(64)  # 502: no instance runs behind this nginx; but an answer
        assert status.startswith(b"HTTP/1.1 ") and b" 429 " not in status, status
        other.close()
        for connection in held:
            connection.close()

        slowloris = tls_connection(https_port, "127.0.0.4")
        slowloris.sendall(f"GET /login HTTP/1.1\r\nHost: {HOST_NAME}\r\n".encode())
        started = time.monotonic()
        try:
            closed = slowloris.recv(64)  # nginx gives up on the headers: b"" or a reset
        except ConnectionResetError:
            closed = b""
        assert closed in (b"", None) or closed.startswith(b"HTTP/1.1 408"), closed
        assert time.monotonic() - started < 14
        slowloris.close()


# nginx's own text of an address (as $remote_addr holds it) → the /64 the limits count.
CLIENT_NETWORKS = {
    "8.8.8.8": "8.8.8.8",
    "2001:db8:1:2:3:4:5:6": "2001:db8:1:2",
    "2001:db8:1:2::6": "2001:db8:1:2",
    "2001:db8:1::6": "2001:db8:1:0",
    "2001:db8::1:2:3:4": "2001:db8:0:0",
    "2001:db8::": "2001:db8:0:0",
    "2a00::1:2:3:4:5": "2a00:0:0:1",  # 2a00:0:0:1:2:3:4:5
    "2a00::1:2:3:4": "2a00:0:0:0",  # 2a00:0:0:0:1:2:3:4
    "2a00:0:0:1::5": "2a00:0:0:1",
    "::1": "::1",
    "::ffff:1.2.3.4": "::ffff:1.2.3.4",
}


# The same → the /48 the customer limits count (an IPv4 address: itself).
CUSTOMER_NETWORKS = {
    "8.8.8.8": "8.8.8.8",
    "2001:db8:1:2:3:4:5:6": "2001:db8:1",
    "2001:db8:1:2::6": "2001:db8:1",
    "2001:db8:1::6": "2001:db8:1",
    "2001:db8::1:2:3:4": "2001:db8:0",
    "2001:db8::": "2001:db8:0",
    "2a00::1:2:3:4:5": "2a00:0:0",  # 2a00:0:0:1:2:3:4:5
    "2a00:0:1::5": "2a00:0:1",
    "2a00:0:1:2:3::": "2a00:0:1",
    "::1": "::1",
    "::ffff:1.2.3.4": "::ffff:1.2.3.4",
}


def shipped_limit_keys() -> str:
    """The shipped site's maps of $remote_addr to the limits' keys, and its zones."""
    site = (DEPLOY / "tsd-server.nginx.conf").read_text()
    parts = [re.search(rf"^map \$remote_addr \${name} \{{\n.*?^\}}\n", site, re.S | re.M)
             for name in ("tsd_client_net", "tsd_customer_net")]
    assert all(parts), "a map of the limits' keys is missing from the shipped site"
    zones = re.findall(r"^limit_(?:conn|req)_zone .*$", site, re.M)
    assert len(zones) == 4, zones
    return "".join(part.group(0) for part in parts) + "\n".join(zones)


@pytest.mark.parametrize("key, expected", [("tsd_client_net", CLIENT_NETWORKS),
                                           ("tsd_customer_net", CUSTOMER_NETWORKS)])
def test_the_limits_count_an_ipv6_client_by_its_64_and_its_48(tmp_path, key, expected):
    """The shipped maps from $remote_addr to the limits' keys, fed each address through
    nginx's realip module (so in nginx's own compressed form): every form of one /64 (/48)
    gives the same key, and two never share one."""
    if not servers.nginx_available():
        skip_loudly(f"nginx is NOT installed at {servers.NGINX}")
    port = servers.free_port()
    body = f"""{shipped_limit_keys()}
server {{
    listen 127.0.0.1:{port};
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Real-IP;
    location / {{ default_type text/plain; return 200 "${key}"; }}
}}"""
    with servers.nginx_serving(tmp_path / "nginx", body, port=port, probe="/") as proxy:
        session = servers.http_session()
        for address, network in expected.items():
            answer = session.get(f"{proxy.base_url}/", headers={"X-Real-IP": address})
            assert answer.text == network, (address, answer.text)


def test_one_ipv6_customer_cannot_multiply_the_connection_limit_by_its_64s(tmp_path):
    """Slow request bodies from ten /64s of one /48, 30 each (under the 32 of a /64): past
    256 at once nginx answers 429 (deploy/tsd-server-limits.conf); another /48 is still
    answered. Addresses come through realip, as from a proxy in front."""
    if not servers.nginx_available():
        skip_loudly(f"nginx is NOT installed at {servers.NGINX}")
    port, nobody = servers.free_port(), servers.free_port()
    body = f"""{shipped_limit_keys()}
server {{
    listen 127.0.0.1:{port};
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Real-IP;
    include {DEPLOY / "tsd-server-limits.conf"};
    location / {{ proxy_pass http://127.0.0.1:{nobody}; }}
}}"""

    def slow_body(address: str) -> socket.socket:
        connection = socket.create_connection(("127.0.0.1", port), timeout=15)
        connection.sendall((f"POST / HTTP/1.1\r\nHost: x\r\nX-Real-IP: {address}\r\n"
                            "Content-Length: 1000\r\n\r\n").encode())
        return connection

    with servers.nginx_serving(tmp_path / "nginx", body, port=port, probe="",
                               kind=servers.AcceptingServer, connections=1024):
        opened = [slow_body(f"2001:db8:5:{n:x}::1") for n in range(10) for _ in range(30)]
        held = refused = 0
        time.sleep(1)  # every answer is in; all are read well inside the 10 s body timeout
        for connection in opened:
            connection.setblocking(False)
            try:
                answer = connection.recv(64)
            except BlockingIOError:
                held += 1  # nginx is waiting for the rest of the body
                continue
            except ConnectionResetError:  # the 429 came, then a reset that dropped it
                answer = b"HTTP/1.1 429 (reset)"
            assert answer.startswith(b"HTTP/1.1 429"), answer
            refused += 1
        assert (held, refused) == (256, 44)
        logged = (tmp_path / "nginx" / "error.log").read_text()
        assert logged.count('limiting connections by zone "tsd_conn_customer"') == 44
        assert 'zone "tsd_conn"' not in logged  # no /64 reached its own 32
        other = socket.create_connection(("127.0.0.1", port), timeout=15)
        other.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Real-IP: 2001:db8:6::1\r\n"
                      b"Connection: close\r\n\r\n")
        status = other.recv(64)  # 502: nothing listens behind this nginx; but an answer
        assert status.startswith(b"HTTP/1.1 ") and b" 429 " not in status, status
        for connection in [*opened, other]:
            connection.close()
