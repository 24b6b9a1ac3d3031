"""Form posts over https on a port other than 443, through Debian's nginx.

Over https Flask-WTF refuses a form post unless its Referer is ``https://{request.host}/...``
(WTF_CSRF_SSL_STRICT). A browser on https://print.example.org:8443 sends that port in its
Referer, so nginx must hand the server the Host the browser sent, port included: with
``$host``, which drops the port, every form post answers "Form expired".

The shipped site (deploy/tsd-server.nginx.conf with its snippet, the settings of
deploy/tsd-server.env.example) and the location block of docs/deploying-behind-a-proxy.md
each run on loopback high ports with a throwaway certificate, and a client that connects
like a browser (SNI and Host print.example.org:PORT) signs up through a real form.
"""

from __future__ import annotations

import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.e2e.test_ip_match_e2e import DOC_LOG_FOLDER, DOC_UPSTREAM, doc_settings, doc_snippet
from tests.support import db_backends, servers, skips, socket_activation
from tests.support import shipped_site as deploy_site

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
HOST_NAME = deploy_site.HOST_NAME
CSRF_FIELD = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
PASSWORD = "correct horse battery"
# The settings of the shipped settings file that say how to read nginx's headers.
PROXY_SETTING = re.compile(r"^TSD_((?:PROXY_FIX_\w+|TRUSTED_PROXIES))=(.*)$", re.M)


@pytest.fixture(autouse=True)
def nginx_and_openssl():
    if not servers.nginx_available():
        skips.skip_loudly(f"nginx is NOT installed at {servers.NGINX}: https form posts "
                          "through nginx are NOT tested")
    if shutil.which("openssl") is None:
        skips.skip_loudly("openssl is NOT installed (needed for a throwaway certificate): "
                          "https form posts through nginx are NOT tested")


class HttpsNginx(servers.AcceptingServer):
    """nginx serving the site on ``port`` over https only for HOST_NAME (its SNI)."""

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


def shipped_site(directory: Path, https_port: int, upstream: str,
                 location: str | None) -> str:
    """deploy/tsd-server.nginx.conf on loopback high ports, with a throwaway certificate and
    the test's gunicorn (``upstream``, nginx's address of it) as both upstreams;
    ``location`` replaces its ``location /``."""
    site = deploy_site.on_loopback(
        directory, http_port=servers.free_port(), https_port=https_port,
        also=[(f"server unix:/run/{name}.sock ", f"server {upstream} ")
              for name in ("tsd-server", "tsd-server-2")])
    if location is not None:
        shipped = re.search(r"^( *)location / \{\n.*?^\1\}\n", site, re.S | re.M)
        assert shipped, "no 'location /' in deploy/tsd-server.nginx.conf"
        site = site.replace(shipped.group(0), location)
    return site


@contextmanager
def nginx_https(directory: Path, upstream: str,
                location: str | None = None) -> Iterator[HttpsNginx]:
    port = servers.free_port()
    (directory / "site.conf").write_text(shipped_site(directory, port, upstream, location))
    with servers.nginx_serving(directory, f"include {directory}/site.conf;", port=port,
                               probe="", kind=HttpsNginx) as server:
        yield server


class NamedHostAdapter(requests.adapters.HTTPAdapter):
    """Connect to 127.0.0.1 but say HOST_NAME in TLS (SNI) and check the certificate for it,
    as a browser does that resolved the name to this machine."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        kwargs["server_hostname"] = HOST_NAME
        super().init_poolmanager(*args, **kwargs)


class Browser:
    """A requests session that sends what a browser on https://HOST_NAME:PORT sends."""

    def __init__(self, proxy: HttpsNginx, cert: Path) -> None:
        self.proxy = proxy
        self.origin = f"https://{HOST_NAME}:{proxy.port}"
        self.session = servers.http_session()
        self.session.mount("https://", NamedHostAdapter())
        self.session.verify = str(cert)

    def get(self, path: str, **headers: str) -> requests.Response:
        return self.session.get(self.proxy.base_url + path, timeout=10, allow_redirects=False,
                                headers={"Host": f"{HOST_NAME}:{self.proxy.port}", **headers})

    def submit(self, path: str, fields: dict[str, str]) -> requests.Response:
        """The form on ``path``, filled in and posted from that page."""
        page = self.get(path)
        assert page.status_code == 200, page.text
        token = CSRF_FIELD.search(page.text).group(1)
        return self.session.post(
            self.proxy.base_url + path, data={**fields, "csrf_token": token}, timeout=10,
            allow_redirects=False, headers={"Host": f"{HOST_NAME}:{self.proxy.port}",
                                            "Origin": self.origin,
                                            "Referer": self.origin + path})


def shipped_proxy_settings() -> dict[str, str]:
    settings = dict(PROXY_SETTING.findall((DEPLOY / "tsd-server.env.example").read_text()))
    assert settings.get("PROXY_FIX_X_HOST") == "1", settings  # X-Forwarded-Host counts
    return settings


@contextmanager
def shipped_backend(directory: Path, database_url: str
                    ) -> Iterator[tuple[servers.RunningServer, str, None]]:
    """gunicorn as shipped: on the socket of deploy/tsd-server.socket, with the proxy
    settings of the shipped settings file. Yields it, nginx's address of it, and no
    location to replace the site's."""
    with socket_activation.socket_folder() as folder, socket_activation.activated_gunicorn(
            directory, folder / "tsd-server.sock", database_url=database_url,
            settings=shipped_proxy_settings()) as backend:
        yield backend, f"unix:{backend.socket_path}", None


@contextmanager
def documented_backend(directory: Path, database_url: str
                       ) -> Iterator[tuple[servers.RunningServer, str, str]]:
    """gunicorn on a loopback port with the settings of docs/deploying-behind-a-proxy.md,
    nginx's address of it, and that doc's location block to put in the site."""
    with servers.gunicorn(directory, database_url=database_url, settings=doc_settings(),
                          workers=1) as backend:
        block = doc_snippet("nginx-location")
        assert DOC_UPSTREAM in block
        upstream = f"127.0.0.1:{backend.port}"
        # The shipped site around it defines the block's log format; its logs go to
        # nginx's prefix.
        yield backend, upstream, block.replace(DOC_UPSTREAM, upstream).replace(
            DOC_LOG_FOLDER, "")


@pytest.mark.parametrize("config", ["deploy site", "docs location block"])
def test_a_form_posts_over_https_on_a_port_other_than_443(tmp_path, config):
    url = f"sqlite:///{tmp_path / 'tsd.sqlite3'}"
    db_backends.migrate(url)
    run = shipped_backend if config == "deploy site" else documented_backend
    with run(tmp_path / "gunicorn", url) as (backend, upstream, location):
        with nginx_https(tmp_path / "nginx", upstream, location) as proxy:
            browser = Browser(proxy, tmp_path / "nginx" / "cert.pem")
            email = f"https-{secrets.token_hex(4)}@example.org"
            signed_up = browser.submit("/register", {
                "email": email, "display_name": "Https", "password": PASSWORD,
                "confirm": PASSWORD})
            assert "Form expired" not in signed_up.text, backend.log_tail()
            assert signed_up.status_code == 302, signed_up.text
            logged_in = browser.submit("/login", {"email": email, "password": PASSWORD})
            assert logged_in.status_code == 302, logged_in.text
            assert browser.get("/").status_code == 200  # the dashboard, logged in


def raw_https(proxy: HttpsNginx, cert: Path, request_head: str) -> str:
    """Send ``request_head`` as written (an absolute-form request line, say) over TLS with
    SNI HOST_NAME; the answer's status line."""
    import ssl

    context = ssl.create_default_context(cafile=str(cert))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as plain, \
            context.wrap_socket(plain, server_hostname=HOST_NAME) as tls:
        tls.sendall(request_head.encode("ascii"))
        answer = b""
        while b"\r\n" not in answer and (chunk := tls.recv(4096)):
            answer += chunk
    return answer.split(b"\r\n", 1)[0].decode("ascii", "replace")


def test_a_request_line_naming_the_host_cannot_bring_another_host_header(tmp_path):
    """``GET https://print.example.org/... HTTP/1.1`` with ``Host: evil.example``: nginx
    picks the site by the request line, and passed the client's Host on ($http_host), so
    tsd-server built its redirects (and, without TSD_BASE_URL, printers' links) for a host
    the client chose. Found by a black-box test of the production shape; now 421."""
    url = f"sqlite:///{tmp_path / 'tsd.sqlite3'}"
    db_backends.migrate(url)
    with shipped_backend(tmp_path / "gunicorn", url) as (backend, upstream, _), \
            nginx_https(tmp_path / "nginx", upstream) as proxy:
        cert = tmp_path / "nginx" / "cert.pem"
        origin = f"https://{HOST_NAME}:{proxy.port}"

        def status(host: str) -> str:
            return raw_https(proxy, cert, f"GET {origin}/admin HTTP/1.1\r\nHost: {host}\r\n"
                                          "Connection: close\r\n\r\n")

        for forged in ("evil.example", f"{HOST_NAME}.evil.example", f"{HOST_NAME}:@evil",
                       f"evil.example:{proxy.port}"):
            assert status(forged).startswith("HTTP/1.1 421 "), forged
        # Named in TLS, another name in Host (origin form): the default server hangs up.
        assert raw_https(proxy, cert, "GET /admin HTTP/1.1\r\nHost: other.example\r\n"
                                      "Connection: close\r\n\r\n") == ""
        # The name it serves still gets through, in any case and with its port.
        assert status(f"{HOST_NAME}:{proxy.port}").startswith("HTTP/1.1 308 "), \
            backend.log_tail()
        assert status(HOST_NAME.upper()).startswith("HTTP/1.1 308 ")
        assert Browser(proxy, cert).get("/healthz").status_code == 200
