"""The incident replayed end-to-end: real sockets, Debian's nginx (and Caddy), gunicorn.

Households are loopback source addresses (127.0.0.2, 127.0.0.3, ...; LAN mode with prefix
32). gunicorn runs the app on the test database (SQLite file or PostgreSQL); nginx is
started with the ``location`` block from docs/deploying-behind-a-proxy.md, so the snippet
people copy is the one tested. Scenarios (a) to (e) are the same code as the in-process
replay (tests/support/ip_match_scenarios.py), and each asserts zero links between households.
"""

from __future__ import annotations

import re
import socket
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

DOC = Path(__file__).resolve().parents[2] / "docs" / "deploying-behind-a-proxy.md"
DOC_UPSTREAM = "127.0.0.1:5000"
XFF_LINE = "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;"


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


def nginx_location(upstream_port: int, *, passes_address: bool = True,
                   extra: str = "") -> str:
    block = doc_snippet("nginx-location")
    assert DOC_UPSTREAM in block and XFF_LINE in block
    block = block.replace(DOC_UPSTREAM, f"127.0.0.1:{upstream_port}")
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
            inner = stack.enter_context(servers.nginx(tmp / "inner", nginx_location(
                backend.port)))
            entry = stack.enter_context(servers.nginx(tmp / "outer", nginx_location(
                inner.port, extra=f"proxy_bind {OUTER_PROXY};")))
        else:
            entry = stack.enter_context(servers.nginx(tmp / "nginx", nginx_location(
                backend.port, passes_address=(scenario != "b"))))
        yield entry


def server_settings(scenario: str) -> dict:
    if scenario == "c":
        return dict(SCENARIOS["c"][1])
    return {**doc_settings(), **LAN_HOUSEHOLDS}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_incident_scenario_through_nginx(app, database, tmp_path, scenario):
    run, _ = SCENARIOS[scenario]
    with servers.gunicorn(tmp_path / "gunicorn", database_url=database,
                          settings=server_settings(scenario)) as backend:
        with proxies_for(scenario, backend, tmp_path) as entry:
            run(World(app, lambda home: HttpEndpoint(entry.base_url, home)))


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
    with servers.gunicorn(tmp_path / "gunicorn", database_url=database,
                          settings=server_settings(scenario)) as backend:
        with servers.caddy(tmp_path / "caddy", caddy_site(backend.port)) as entry:
            run(World(app, lambda home: HttpEndpoint(entry.base_url, home)))
