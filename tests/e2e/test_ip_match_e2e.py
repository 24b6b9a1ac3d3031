"""The incident replayed end-to-end: real sockets, Debian's nginx (and Caddy), gunicorn.

Households are loopback source addresses (127.0.0.2, 127.0.0.3, ...; LAN mode with prefix
32). gunicorn runs the app on the test database (SQLite file or PostgreSQL); nginx is
started with the ``location`` block from docs/deploying-behind-a-proxy.md, so the snippet
people copy is the one tested. Scenarios (a) to (e) are the same code as the in-process
replay (tests/support/ip_match_scenarios.py), and each asserts zero links between households.
gunicorn runs one worker: its rate limits are in memory://, and gunicorn.conf.py refuses
several workers that way outside development.
"""

from __future__ import annotations

import re
import socket
import textwrap
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path

import pytest

from tests.support import servers
from tests.support.ip_match_scenarios import SCENARIOS
from tests.support.ip_match_world import (
    LAN_HOUSEHOLDS,
    OUTER_PROXY,
    HttpEndpoint,
    World,
)
from tests.support.skips import skip_loudly

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "deploying-behind-a-proxy.md"
DEPLOY = ROOT / "deploy"
DOC_UPSTREAM = "127.0.0.1:5000"
XFF_LINE = "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;"
REAL_IP_DROPPED = 'proxy_set_header X-Real-IP "";'
# What an office proxy may add for its people; the documented proxies must drop both.
CLIENTS_OWN = {"X-Real-IP": "10.1.2.3", "Forwarded": "for=10.1.2.3;proto=http"}


@pytest.fixture(autouse=True)
def real_servers_available():
    if not servers.nginx_available():
        skip_loudly(f"nginx is NOT installed at {servers.NGINX}: the end-to-end replay of the "
                    "incident through a real proxy is SKIPPED (apt-get install nginx-light; "
                    ".ci/run installs it).")
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.2", 0))
        except OSError:
            skip_loudly("This system cannot bind 127.0.0.2: households as loopback source "
                        "addresses need Linux. The end-to-end replay is SKIPPED.")


def doc_snippet(name: str) -> str:
    """The fenced block after ``<!-- tested-snippet: NAME ... -->`` in the proxy doc."""
    text = DOC.read_text()
    match = re.search(rf"<!-- tested-snippet: {re.escape(name)}\b[^>]*-->\s*```[a-z]*\n(.*?)```",
                      text, re.S)
    assert match, f"snippet {name!r} not found in {DOC}"
    return match.group(1)


def doc_settings() -> dict[str, str]:
    settings = {}
    for line in doc_snippet("nginx-settings").splitlines():
        key, _, value = line.strip().partition("=")
        assert key.startswith("TSD_"), line
        settings[key.removeprefix("TSD_")] = value
    return settings


DOC_LOG_FOLDER = "/var/log/nginx/"


def doc_nginx(directory: Path, locations: str, *, port: int | None = None):
    """Debian's nginx with the doc's location block(s) and its log format (nginx-logging,
    in the http context); the block's logs go to ``directory``, nginx's prefix."""
    return servers.nginx(directory, locations, http_extra=doc_snippet("nginx-logging"),
                         port=port)


def nginx_location(upstream_port: int, *, passes_address: bool = True,
                   extra: str = "") -> str:
    """The doc's location block, to ``upstream_port``, logging into nginx's prefix."""
    block = doc_snippet("nginx-location")
    assert DOC_UPSTREAM in block and XFF_LINE in block and DOC_LOG_FOLDER in block
    block = block.replace(DOC_UPSTREAM, f"127.0.0.1:{upstream_port}")
    block = block.replace(DOC_LOG_FOLDER, "")
    if not passes_address:
        block = block.replace(XFF_LINE, "# the incident: X-Forwarded-For is not set")
    if extra:
        block = block.replace("{\n", "{\n    " + extra + "\n", 1)
    return block


def test_the_doc_settings_are_what_the_replay_trusts():
    """The settings in the doc are the ones scenarios (a), (b), (d) and (e) run with."""
    documented = doc_settings()
    assert documented == {"PROXY_FIX_X_FOR": "1", "PROXY_FIX_X_PROTO": "1",
                          "TRUSTED_PROXIES": "127.0.0.1/32,::1/128"}


@contextmanager
def proxies_for(scenario: str, backend: servers.RunningServer, tmp: Path):
    """What stands between the households and gunicorn in each scenario."""
    if scenario == "c":  # no proxy at all
        with nullcontext(backend) as entry:
            yield entry
        return
    with ExitStack() as stack:
        if scenario == "e":  # load balancer (outer nginx) -> nginx -> gunicorn, x_for=1
            inner = stack.enter_context(doc_nginx(tmp / "inner", nginx_location(
                backend.port)))
            entry = stack.enter_context(doc_nginx(tmp / "outer", nginx_location(
                inner.port, extra=f"proxy_bind {OUTER_PROXY};")))
        else:
            entry = stack.enter_context(doc_nginx(tmp / "nginx", nginx_location(
                backend.port, passes_address=(scenario != "b"))))
        yield entry


def server_settings(scenario: str) -> dict:
    if scenario == "c":
        return dict(SCENARIOS["c"][1])
    return {**doc_settings(), **LAN_HOUSEHOLDS}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_incident_scenario_through_nginx(app, database, tmp_path, scenario):
    run, _ = SCENARIOS[scenario]
    with servers.gunicorn(tmp_path / "gunicorn", database_url=database, workers=1,
                          settings=server_settings(scenario)) as backend:
        with proxies_for(scenario, backend, tmp_path) as entry:
            run(World(app, lambda home: HttpEndpoint(entry.base_url, home)))


def deploy_site_location(upstream_port: int) -> tuple[str, str]:
    """The ``location /`` of deploy/tsd-server.nginx.conf as shipped (its snippet included
    from deploy/), and an upstream of the name it proxies to that holds the test's gunicorn."""
    site = (DEPLOY / "tsd-server.nginx.conf").read_text()
    match = re.search(r"^( *)location / \{\n.*?^\1\}\n", site, re.S | re.M)
    assert match, "no 'location /' in deploy/tsd-server.nginx.conf"
    block = textwrap.dedent(match.group(0))
    include = "include snippets/tsd-server-proxy.conf;"
    assert include in block and "proxy_pass http://tsd_server;" in block, block
    block = block.replace(include, f"include {DEPLOY / 'tsd-server-proxy.conf'};")
    return block, f"upstream tsd_server {{ server 127.0.0.1:{upstream_port}; }}"


@pytest.mark.parametrize("config", ["docs location block", "deploy site"])
def test_a_forged_forwarded_for_is_not_believed_through_the_documented_configs(
        app, database, tmp_path, config):
    """The documented nginx configs overwrite X-Forwarded-For: whatever a client writes into
    it, the server sees the address the client connected from (docs/deploying-behind-a-
    proxy.md, "Without the X-Forwarded-For line, a forged header is believed")."""
    real = "127.0.0.2"
    with servers.gunicorn(tmp_path / "gunicorn", database_url=database, workers=1,
                          settings={**doc_settings(), **LAN_HOUSEHOLDS}) as backend:
        if config == "deploy site":
            locations, http_extra = deploy_site_location(backend.port)
        else:
            locations = nginx_location(backend.port)
            http_extra = doc_snippet("nginx-logging")
        with servers.nginx(tmp_path / "nginx", locations, http_extra=http_extra) as entry:
            client = servers.http_session(real)
            for forged in ("127.0.0.3", "81.2.69.160", "127.0.0.3, 127.0.0.1", "127.0.0.1",
                           None):
                # With an office proxy's own headers too, which must not make it refused.
                headers = {"X-Forwarded-For": forged, **CLIENTS_OWN} if forged else {}
                reply = client.get(entry.base_url + "/api/v1/client-address",
                                   headers=headers, timeout=10)
                assert reply.status_code == 200, reply.text
                seen = reply.json()
                assert (seen["client_ip"], seen["peer_ip"]) == (real, "127.0.0.1"), seen
                assert seen["household"] == f"{real}/32", seen
                assert seen["forwarded_for"][-1] == real, seen
                assert seen["ip_match"] == {"eligible": True, "reason": None}, seen


def test_a_proxy_passing_clients_headers_on_gives_itself_away_by_x_real_ip(
        app, database, tmp_path):
    """nginx set up as many tutorials show it: X-Real-IP, but no X-Forwarded-For line, so
    a client's own X-Forwarded-For passes unchanged. Its X-Real-IP contradicts a forged
    one: the request is refused, and no client address believed (the forged hop is only
    in the chain kept for audit)."""
    real = "127.0.0.2"
    with servers.gunicorn(tmp_path / "gunicorn", database_url=database, workers=1,
                          settings={**doc_settings(), **LAN_HOUSEHOLDS}) as backend:
        location = nginx_location(backend.port, passes_address=False)
        assert REAL_IP_DROPPED in location
        location = location.replace(REAL_IP_DROPPED, "proxy_set_header X-Real-IP $remote_addr;")
        with doc_nginx(tmp_path / "nginx", location) as entry:
            client = servers.http_session(real)

            def seen(forged: str | None) -> dict:
                headers = {"X-Forwarded-For": forged} if forged else {}
                reply = client.get(entry.base_url + "/api/v1/client-address",
                                   headers=headers, timeout=10)
                assert reply.status_code == 200, reply.text
                return reply.json()

            for forged in ("127.0.0.3", "81.2.69.160"):
                answer = seen(forged)
                assert (answer["client_ip"], answer["peer_ip"]) == (None, "127.0.0.1"), answer
                assert answer["forwarded_for"] == [forged], answer
                assert answer["household"] is None, answer
                assert answer["ip_match"] == {
                    "eligible": False, "reason": "contradictory_forwarded_headers"}, answer
            assert seen(None)["ip_match"]["reason"] == "missing_forwarded_header"
            # A header that agrees with what nginx saw is the client's true address.
            assert seen(real)["household"] == f"{real}/32"


def caddy_site(upstream_port: int) -> str:
    site = doc_snippet("caddy-site")
    assert "print.example.org {" in site and DOC_UPSTREAM in site
    site = site.replace("print.example.org {", "http://127.0.0.1:{port} {\n    bind 127.0.0.1")
    site = site.replace(DOC_UPSTREAM, f"127.0.0.1:{upstream_port}")
    return "{\n    admin off\n    auto_https off\n}\n" + site


@pytest.mark.parametrize("scenario", ["a", "d"])
def test_incident_scenario_through_caddy(app, database, tmp_path, scenario):
    if not servers.caddy_available():
        skip_loudly(f"caddy is NOT installed ({servers.CADDY}): the Caddy snippet of "
                    "docs/deploying-behind-a-proxy.md is NOT tested (apt-get install caddy).")
    run, _ = SCENARIOS[scenario]
    with servers.gunicorn(tmp_path / "gunicorn", database_url=database, workers=1,
                          settings=server_settings(scenario)) as backend:
        with servers.caddy(tmp_path / "caddy", caddy_site(backend.port)) as entry:
            run(World(app, lambda home: HttpEndpoint(entry.base_url, home)))
            # A client behind an office proxy that adds its own address headers: Caddy
            # drops them (the snippet's header_up lines), so nothing contradicts.
            reply = servers.http_session("127.0.0.2").get(
                entry.base_url + "/api/v1/client-address", headers=CLIENTS_OWN, timeout=10)
            assert reply.json()["ip_match"] == {"eligible": True, "reason": None}, reply.json()
