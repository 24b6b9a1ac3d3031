"""The README's "Link a simulated printer" walkthrough, run exactly as written.

The commands are read from README.md: the indented block after each
``<!-- walkthrough:NAME -->`` marker. The server is started with ``make run`` and the
environment the README's server block gives; each agent command runs in a shell in a
fresh folder (with ``.venv`` pointing at this checkout's virtualenv), with only
``TSD_AGENT_SERVER`` added because the test's server cannot take port 5000. The browser
part -- sign up, log in, the buttons the README names -- is played over HTTP.
"""

from __future__ import annotations

import html
import json
import os
import re
import secrets
import shlex
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.support import servers
from tests.support.agent_runs import (
    CONFIRMATION_LINE,
    QR_LINE,
    USER_CODE_LINE,
    WAIT,
    WAITING_LINE,
    AgentRun,
)
from tests.support.ip_match_world import CSRF_META, HttpEndpoint, Person
from tests.support.pairing import question_link, shown_request

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MARKER = re.compile(r"<!-- walkthrough:([\w-]+) -->\n\n?((?: {4}.*\n)+)")
STEPS = ("server", "pair", "link", "qr", "discover", "whoami")
EXAMPLE_CODE = "WDJB-MJHT"
PAIRING_CODE_ON_PAGE = re.compile(r"data-pairing-code>\s*([A-Z]{4}-[A-Z]{4})\s*<")


def walkthrough() -> dict[str, str]:
    """Step name → the command shown in the README."""
    blocks = {}
    for name, body in MARKER.findall(README.read_text()):
        assert name not in blocks, f"two README blocks are marked walkthrough:{name}"
        blocks[name] = textwrap.dedent(body).strip()
    return blocks


def test_readme_shows_every_step_as_one_command():
    blocks = walkthrough()
    assert set(blocks) == set(STEPS)
    for name, command in blocks.items():
        assert "\n" not in command, f"walkthrough:{name} should be one command"
    assert EXAMPLE_CODE in blocks["pair"]


def server_environment(command: str) -> dict[str, str]:
    """``A=1 B=2 make run`` → {"A": "1", "B": "2"}; the rest must be exactly ``make run``."""
    words = shlex.split(command)
    env = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    assert words == ["make", "run"], f"the server block must end in 'make run': {command!r}"
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = server_environment(walkthrough()["server"])
    with servers.make_run(tmp_path_factory.mktemp("make-run"), env) as running:
        yield running


@pytest.fixture
def terminal(tmp_path, server):
    """The second terminal: a folder like the checkout (``.venv`` there) and a clean env."""
    (tmp_path / ".venv").symlink_to(sys.prefix)
    env = {key: value for key, value in os.environ.items() if not key.startswith("TSD_")}
    env.update(HOME=str(tmp_path), TSD_AGENT_SERVER=server.base_url)

    def run(command: str) -> AgentRun:
        return AgentRun.process_of(["/bin/sh", "-c", command], env=env, cwd=tmp_path)

    run.folder = tmp_path  # type: ignore[attr-defined]
    return run


def sign_up_and_log_in(server) -> Person:
    """http://.../register, then log in: what the README asks first."""
    endpoint = HttpEndpoint(server.base_url, "127.0.0.1")
    page = endpoint.request("GET", "/register")
    email, password = f"walker-{secrets.token_hex(3)}@example.org", "my printer password"
    name = "Walkthrough Reader"
    signed_up = endpoint.request("POST", "/register", data={
        "email": email, "display_name": name, "password": password, "confirm": password,
        "csrf_token": CSRF_META.search(page.body).group(1)})
    assert signed_up.status == 302, signed_up.body
    return Person(endpoint, "127.0.0.1", 0, email, password, name)


def press(person: Person, path: str, **fields: str) -> requests.Response:
    """Submit a form on a page (each form carries the CSRF token); redirects not followed."""
    endpoint = person.endpoint
    response = endpoint.session.post(endpoint.base_url + path, allow_redirects=False,
                                     timeout=15, data={**fields, "csrf_token": person.csrf})
    SEEN.append(response.text)
    return response


def page(person: Person, path: str) -> str:
    reply = person.endpoint.request("GET", path)
    assert reply.status == 200, f"{path}: {reply.status}"
    SEEN.append(reply.body)
    return reply.body


# Every page the test saw, so the README's button and page names can be checked against them.
SEEN: list[str] = []
EMPHASIS = re.compile(r"(?<!\*)\*(?!\*)([^*]+?)(?<!\*)\*(?!\*)")


def named_in_the_section() -> list[str]:
    """The *emphasised* names of pages and buttons in the README's walkthrough section."""
    text = README.read_text()
    section = text[text.index("## Link a simulated printer"):]
    section = section[:section.index("\n## ", 1)]
    return [" ".join(name.split()) for name in EMPHASIS.findall(section)]


def approve_on_confirmation_page(person: Person, printer_name: str) -> None:
    shown = page(person, "/link/confirm")
    assert printer_name in shown
    approved = press(person, "/link/confirm", decision="approve",
                     authorization=shown_request(shown))
    assert approved.status_code == 302, approved.text


def test_the_walkthrough_as_written(server, terminal):
    steps = walkthrough()
    person = sign_up_and_log_in(server)

    # 1. A code from the website: Add printer -> its code page -> Get a code.
    add_printer = page(person, "/printers/add")
    for start in ("/printers/add/code", "/link", "/printers/nearby"):
        assert f'href="{start}"' in add_printer, start
    page(person, "/printers/add/code")
    shown = press(person, "/printers/add/code")
    assert shown.status_code == 200, shown.text
    code = PAIRING_CODE_ON_PAGE.search(shown.text).group(1)
    pair = terminal(steps["pair"].replace(EXAMPLE_CODE, code))
    assert pair.finish() == 0, pair.err.text
    assert "Linked" in pair.out.text

    # 2. A code from the printer: open /link, type it, check the name, Approve.
    link = terminal(steps["link"])
    user_code = link.out.wait_for(USER_CODE_LINE).group(1)
    assert f"{server.base_url}/link" in link.out.text
    typed = press(person, "/link", code=user_code)
    assert typed.status_code == 302, typed.text
    approve_on_confirmation_page(person, "Printer 2")
    assert link.finish() == 0, link.err.text

    # 3. A QR code: open the link printed with it, answer the question a browser that sends
    # no Sec-Fetch-Site (plain http) gets first, Approve.
    qr = terminal(steps["qr"])
    url = qr.out.wait_for(QR_LINE).group(1)
    qr.out.wait_for(WAITING_LINE)
    assert "█" in qr.out.text or "▀" in qr.out.text  # the QR code is drawn
    opened = page(person, url[len(server.base_url):])
    assert "Did you just scan" in opened, opened
    assert 'value="approve"' in page(person, question_link(opened))
    approve_on_confirmation_page(person, "Printer 3")
    assert qr.finish() == 0, qr.err.text

    # 4. Printers near you: Link this printer next to "Printer 4", type its code, Confirm.
    discover = terminal(steps["discover"])
    deadline = time.monotonic() + WAIT
    while "Printer 4" not in page(person, "/printers/nearby"):
        assert time.monotonic() < deadline, discover.out.text + discover.err.text
        time.sleep(0.5)
    device_id = json.loads((terminal.folder / "printer-4.json").read_text())["device_id"]
    offered = press(person, f"/printers/nearby/{device_id}/link")
    assert offered.status_code == 302, offered.text
    offer_path = urlsplit(offered.headers["Location"]).path  # /printers/nearby/offers/<id>
    assert "/offers/" in offer_path and "Confirm" in page(person, offer_path)
    confirmation = discover.out.wait_for(CONFIRMATION_LINE).group(1)
    assert f"{person.display_name} wants to link this printer" in discover.out.text
    confirmed = press(person, offer_path + "/confirm", code=confirmation)
    assert confirmed.status_code == 302, confirmed.text
    assert discover.finish() == 0, discover.err.text

    # Whom does printer 1 belong to? And the dashboard lists all four.
    whoami = terminal(steps["whoami"])
    assert whoami.finish() == 0, whoami.err.text
    assert '"Printer 1"' in whoami.out.text and person.display_name in whoami.out.text
    dashboard = page(person, "/")
    for number in range(1, 5):
        assert f"Printer {number}" in dashboard

    # The pages and buttons the README names are the ones the person saw.
    seen = " ".join(" ".join(html.unescape(body).split()) for body in SEEN)
    names = named_in_the_section()
    assert {"Add a printer", "Approve", "Confirm"} <= set(names)
    for name in names:
        assert name in seen, f"the README names *{name}*, which no page shows"
