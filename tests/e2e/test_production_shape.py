"""The production shape, for real: Debian's nginx in front of two gunicorn instances on one
PostgreSQL database, rate limits in Redis, all on loopback.

nginx uses the project's own deploy/tsd-server-proxy.conf, so these tests also check the
headers it sets. The properties shown: a kill-switch toggle made through one process holds
on the other within a second; rate limits count across processes; a link begun on one
process finishes on the other; and forged forwarding headers do not get through. The deploy
files alone are checked in test_deploy_files.py.

Calls made straight to a gunicorn port carry the headers nginx would add (the test plays
the proxy at 127.0.0.1, which the servers trust), so they look like real proxied requests.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.support import db_backends, servers, skips
from tests.support.agent_runs import USER_CODE_LINE, WAIT, AgentRun
from tests.support.apps import another_app
from tests.support.ip_match_world import HttpEndpoint, Person
from tests.support.pairing import shown_request

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
REDIS_DB = 5
TOGGLE_DEADLINE = 1.0  # seconds: every process honours a toggle within this (DESIGN.md)


def skip_loudly(message: str, require_env: str | None = None) -> None:
    skips.skip_loudly(message + ": production-shape end-to-end test SKIPPED", require_env)


@dataclass
class Shape:
    a: servers.RunningServer
    b: servers.RunningServer
    nginx: servers.RunningServer
    database_url: str
    # nginx's access log in deploy/tsd-server.nginx.conf's own format.
    access_log: Path

    def upstream(self, response: requests.Response) -> str:
        """Which gunicorn answered a request made through nginx."""
        port = int(response.headers["X-Upstream"].rsplit(":", 1)[1])
        return {self.a.port: "a", self.b.port: "b"}[port]


def site_logging() -> str:
    """The http-level logging directives of deploy/tsd-server.nginx.conf, as written."""
    site = (DEPLOY / "tsd-server.nginx.conf").read_text()
    start, end = site.index("# --- logging (http context) ---"), site.index("# --- end logging ---")
    return site[start:end]


def redis_client():
    import redis

    return redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB, socket_timeout=3)


@pytest.fixture(scope="module")
def shape(tmp_path_factory):
    if not servers.nginx_available():
        skip_loudly(f"nginx is NOT installed at {servers.NGINX}")
    pg_user = db_backends.find_postgres()
    if pg_user is None:
        skip_loudly("PostgreSQL is NOT reachable at 127.0.0.1:5432", "TSD_TEST_REQUIRE_POSTGRES")
    try:
        redis_client().ping()
    except Exception:  # noqa: BLE001 - any failure means no usable Redis
        skip_loudly("Redis is NOT reachable at 127.0.0.1:6379")

    name = f"tsd_e2e_{secrets.token_hex(4)}"
    url = db_backends.create_postgres_database(pg_user, name)
    prefix = f"tsd-e2e-{secrets.token_hex(4)}"
    settings = {
        # One deployment: the same secret key (sessions and CSRF work on both), database,
        # Redis and key prefix; nginx at 127.0.0.1 is the one trusted proxy.
        "SECRET_KEY": secrets.token_hex(32),
        "RATELIMIT_STORAGE_URI": f"redis://127.0.0.1:6379/{REDIS_DB}",
        "RATELIMIT_KEY_PREFIX": prefix,
        "TRUSTED_PROXIES": "127.0.0.1/32",
        "PROXY_FIX_X_FOR": 1,
        "PROXY_FIX_X_PROTO": 1,
        "PROXY_FIX_X_HOST": 1,
        # Not in the shipped settings; here it shows a client's X-Forwarded-Port is dropped.
        "PROXY_FIX_X_PORT": 1,
        "DEVICE_FLOW_INTERVAL": 1,
        "PAIRING_GUESS_LIMIT_PER_IP": "2 per 15 minutes",
        "PAIRING_GUESS_LIMIT_PER_ACCOUNT": "100 per minute",
        "PAIRING_FAILURE_BREAKER_PER_MINUTE": 1000,
    }
    logs = tmp_path_factory.mktemp("nginx-logs")
    try:
        db_backends.migrate(url)
        with servers.gunicorn(tmp_path_factory.mktemp("gunicorn-a"), database_url=url,
                              settings=settings) as a, \
             servers.gunicorn(tmp_path_factory.mktemp("gunicorn-b"), database_url=url,
                              settings=settings) as b, \
             servers.nginx(tmp_path_factory.mktemp("nginx"), locations=f"""
location / {{
    include {DEPLOY / "tsd-server-proxy.conf"};
    proxy_pass http://tsd_server;
    access_log {logs / "tsd-server.access.log"} tsd_path_only;
    # Test only: which instance answered.
    add_header X-Upstream $upstream_addr always;
}}""", http_extra=site_logging() + f"""
upstream tsd_server {{
    server 127.0.0.1:{a.port};
    server 127.0.0.1:{b.port};
    keepalive 4;
}}""") as proxy:
            yield Shape(a, b, proxy, url, logs / "tsd-server.access.log")
    finally:
        db_backends.drop_postgres_database(pg_user, name)
        client = redis_client()
        keys = list(client.scan_iter(match=f"*{prefix}*"))
        if keys:
            client.delete(*keys)


@pytest.fixture(scope="module")
def server_app(shape):
    with another_app(shape.database_url) as app:
        yield app


def make_person(app, endpoint: HttpEndpoint, *, admin: bool = False) -> Person:
    from tsd_server.auth.accounts import create_user

    email, password = f"e2e-{secrets.token_hex(4)}@example.org", "correct horse battery"
    name = f"E2E {secrets.token_hex(2)}"
    with app.app_context():
        user_id = create_user(email, password, display_name=name, is_admin=admin).id
    return Person(endpoint, "127.0.0.1", user_id, email, password, name)


def same_browser(person: Person, server: servers.RunningServer) -> HttpEndpoint:
    """The person's browser (same cookies) talking to another instance."""
    endpoint = HttpEndpoint(server.base_url, "127.0.0.1")
    endpoint.session = person.endpoint.session
    return endpoint


def as_proxy(shape: Shape, client_ip: str) -> dict[str, str]:
    """The headers deploy/tsd-server-proxy.conf makes nginx send for a client."""
    return {"X-Forwarded-For": client_ip, "X-Forwarded-Proto": "http",
            "X-Forwarded-Host": f"127.0.0.1:{shape.nginx.port}"}


def strategy_enabled(server: servers.RunningServer, name: str) -> bool:
    reply = servers.http_session().get(server.base_url + "/api/v1/discovery/status", timeout=5)
    assert reply.status_code == 200, reply.text
    return reply.json()["strategies"][name]["enabled"]


def toggle(admin: Person, name: str, action: str) -> float:
    """Flip a switch through the admin page; returns the moment the toggle was answered."""
    reply = admin.endpoint.request("POST", "/admin/kill-switches", data={
        "target": name, "action": action, "reason": "production-shape test",
        "csrf_token": admin.csrf})
    assert reply.status == 302, reply.body
    return time.monotonic()


def wait_until_state(server: servers.RunningServer, name: str, enabled: bool,
                     toggled_at: float) -> None:
    """Poll until ``server`` reports the state; only polls begun before the deadline count.

    Then wait out the rest of the deadline: each gunicorn worker caches the flags for up to
    KILL_SWITCH_CACHE_SECONDS, and the promise is that *every* worker honours the toggle
    within the deadline, not that the first one asked does.
    """
    deadline = toggled_at + TOGGLE_DEADLINE
    while True:
        started = time.monotonic()
        if strategy_enabled(server, name) == enabled:
            break
        if started > deadline:
            raise AssertionError(f"{name} still {'off' if enabled else 'on'} on "
                                 f"{server.base_url} {TOGGLE_DEADLINE} s after the toggle")
        time.sleep(0.05)
    time.sleep(max(0.0, deadline - time.monotonic()))


def test_kill_switch_toggled_through_one_process_holds_on_the_other(shape, server_app):
    admin = make_person(server_app, HttpEndpoint(shape.a.base_url, "127.0.0.1"), admin=True)
    assert strategy_enabled(shape.b, "pairing_code")
    toggled_at = toggle(admin, "pairing_code", "disable")
    try:
        wait_until_state(shape.b, "pairing_code", enabled=False, toggled_at=toggled_at)
        # It holds: every worker of B refuses the strategy's routes, and so does every
        # request through nginx, whichever instance answers.
        body = {"code": "BCDF-GHJK", "device_id": "printer-e2e-0001", "name": "E2E"}
        session = servers.http_session()
        for _ in range(4):
            direct = session.post(shape.b.base_url + "/api/v1/pairing/redeem", json=body,
                                  headers=as_proxy(shape, "1.0.0.1"))
            assert direct.status_code == 503 and direct.json()["error"] == "strategy_disabled"
            assert not strategy_enabled(shape.b, "pairing_code")
        client = servers.http_session("127.0.0.21")
        answered_by = set()
        for _ in range(4):
            reply = client.post(shape.nginx.base_url + "/api/v1/pairing/redeem", json=body)
            assert reply.status_code == 503, reply.text
            assert reply.json()["error"] == "strategy_disabled"
            answered_by.add(shape.upstream(reply))
        assert answered_by == {"a", "b"}
    finally:
        toggled_at = toggle(admin, "pairing_code", "enable")
    wait_until_state(shape.b, "pairing_code", enabled=True, toggled_at=toggled_at)


def test_rate_limits_are_shared_between_processes(shape):
    body = {"code": "BCDF-GHJK", "device_id": "printer-e2e-0002", "name": "E2E"}
    headers = as_proxy(shape, "9.9.9.9")
    session = servers.http_session()
    statuses = [session.post(server.base_url + "/api/v1/pairing/redeem", json=body,
                             headers=headers) for server in (shape.a, shape.a, shape.b)]
    assert [r.status_code for r in statuses] == [400, 400, 429], [r.text for r in statuses]
    assert statuses[2].json()["error"] == "rate_limited"
    assert int(statuses[2].headers["Retry-After"]) > 0

    # Through nginx, from one client: the budget is per client, whichever instance answers.
    client = servers.http_session("127.0.0.22")
    replies = [client.post(shape.nginx.base_url + "/api/v1/pairing/redeem", json=body)
               for _ in range(3)]
    assert [r.status_code for r in replies] == [400, 400, 429], [r.text for r in replies]
    assert {shape.upstream(r) for r in replies} == {"a", "b"}


def test_link_begun_on_one_process_finishes_on_the_other(shape, server_app):
    device = servers.http_session()
    started = device.post(shape.a.base_url + "/api/v1/device/authorize",
                          json={"device_id": "printer-e2e-0003", "name": "Cross printer"},
                          headers=as_proxy(shape, "8.8.8.8"))
    assert started.status_code == 200, started.text
    grant = started.json()
    assert grant["verification_uri"] == f"{shape.nginx.base_url}/link"

    person = make_person(server_app, HttpEndpoint(shape.b.base_url, "127.0.0.1"))
    typed = person.endpoint.request("POST", "/link", data={"code": grant["user_code"],
                                                           "csrf_token": person.csrf})
    assert typed.status == 302, typed.body
    shown = shown_request(person.endpoint.request("GET", "/link/confirm").body)
    approved = person.endpoint.request("POST", "/link/confirm", data={
        "decision": "approve", "authorization": shown, "csrf_token": person.csrf})
    assert approved.status == 302, approved.body

    time.sleep(grant["interval"])  # RFC 8628: the device waits the interval between polls
    token = device.post(shape.a.base_url + "/api/v1/device/token",
                        json={"device_code": grant["device_code"]},
                        headers=as_proxy(shape, "8.8.8.8"))
    assert token.status_code == 200, token.text
    me = device.get(shape.b.base_url + "/api/v1/device/me",
                    headers={"Authorization": f"Bearer {token.json()['access_token']}"})
    assert me.status_code == 200 and me.json()["owner"]["display_name"] == person.display_name


def test_the_agent_links_through_nginx_whichever_instance_answers(shape, server_app, tmp_path):
    """tsd-agent's device flow through nginx: its polls alternate between the instances."""
    from tsd_agent.state import load

    state = tmp_path / "state.json"
    run = AgentRun.in_process(["--server", shape.nginx.base_url, "--state", str(state),
                               "--name", "Behind nginx", "link", "--no-qr"])
    user_code = run.out.wait_for(USER_CODE_LINE).group(1)
    assert f"open {shape.nginx.base_url}/link " in run.out.text

    person = make_person(server_app, HttpEndpoint(shape.nginx.base_url, "127.0.0.23"))
    assert person.endpoint.request("POST", "/link", data={
        "code": user_code, "csrf_token": person.csrf}).status == 302
    shown = shown_request(person.endpoint.request("GET", "/link/confirm").body)
    assert person.endpoint.request("POST", "/link/confirm", data={
        "decision": "approve", "authorization": shown, "csrf_token": person.csrf}).status == 302
    assert run.finish() == 0, run.err.text
    assert load(state, warn=pytest.fail).server == shape.nginx.base_url


def test_forged_forwarding_headers_do_not_get_through_nginx(shape):
    client = servers.http_session("127.0.0.24")
    seen = client.get(shape.nginx.base_url + "/api/v1/client-address", headers={
        "X-Forwarded-For": "8.8.8.8", "X-Real-IP": "8.8.8.8", "Forwarded": "for=8.8.8.8"})
    assert seen.status_code == 200, seen.text
    record = seen.json()
    # nginx appended the real address; the server takes exactly that hop.
    assert record["client_ip"] == "127.0.0.24" and record["peer_ip"] == "127.0.0.1"
    assert record["forwarded_for"] == ["8.8.8.8", "127.0.0.24"]

    # Host, port and scheme come from nginx, not from the client: links stay ours.
    started = client.post(shape.nginx.base_url + "/api/v1/device/authorize",
                          json={"device_id": "printer-e2e-0004", "name": "Forged"},
                          headers={"X-Forwarded-Host": "evil.example",
                                   "X-Forwarded-Port": "666", "X-Forwarded-Proto": "https"})
    assert started.status_code == 200, started.text
    assert started.json()["verification_uri"] == f"{shape.nginx.base_url}/link"


def test_qr_links_are_logged_without_their_token(shape, server_app):
    """The QR link's one-time token appears in no access log: nginx's nor gunicorn's."""
    client = servers.http_session("127.0.0.26")
    started = client.post(shape.nginx.base_url + "/api/v1/device/authorize",
                          json={"device_id": "printer-e2e-0005", "name": "QR logged"})
    assert started.status_code == 200, started.text
    link = started.json()["verification_uri_complete"]
    token = link.rsplit("/", 1)[1]
    person = make_person(server_app, HttpEndpoint(shape.nginx.base_url, "127.0.0.26"))
    opened = person.endpoint.request("GET", link[len(shape.nginx.base_url):])
    assert opened.status in (200, 302), opened.body
    paths = (shape.access_log, shape.a.log_path, shape.b.log_path)
    # Servers write the access line after answering: wait for nginx's and one gunicorn's.
    deadline = time.monotonic() + WAIT
    while True:
        logs = {path: path.read_text(errors="replace") for path in paths}
        if "/link/qr/" in logs[shape.access_log] and (
                "/link/qr/" in logs[shape.a.log_path] + logs[shape.b.log_path]):
            break
        assert time.monotonic() < deadline, "the QR visit never reached the access logs"
        time.sleep(0.1)
    assert '"GET /link/qr/[redacted]"' in logs[shape.access_log]
    for path, text in logs.items():
        assert token not in text, f"the QR token is in {path}"


def session_cookie_is_secure(response: requests.Response) -> bool:
    """Secure, and then named __Host-session (tsd_server.SessionInterface)."""
    cookie = next(c for c in response.cookies if c.name in ("session", "__Host-session"))
    assert bool(cookie.secure) == (cookie.name == "__Host-session"), cookie
    return bool(cookie.secure)


def test_only_the_app_decides_the_scheme(shape):
    """gunicorn.conf.py: gunicorn itself believes no X-Forwarded-Ssl/-Protocol from 127.0.0.1,
    and nginx drops them, so a client cannot make plain http look like https."""
    forged = {"X-Forwarded-Ssl": "on", "X-Forwarded-Protocol": "ssl"}
    direct = servers.http_session().get(shape.a.base_url + "/login",
                                        headers={**forged, "X-Forwarded-For": "9.9.9.9"})
    assert direct.status_code == 200 and not session_cookie_is_secure(direct)
    proxied = servers.http_session("127.0.0.25").get(shape.nginx.base_url + "/login",
                                                     headers=forged)
    assert proxied.status_code == 200 and not session_cookie_is_secure(proxied)
    # The one configured way still works: a trusted proxy's X-Forwarded-Proto.
    https = servers.http_session().get(shape.a.base_url + "/login", headers={
        "X-Forwarded-For": "9.9.9.9", "X-Forwarded-Proto": "https"})
    assert https.status_code == 200 and session_cookie_is_secure(https)
