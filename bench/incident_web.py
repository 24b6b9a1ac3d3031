"""The incident bench's server side: gunicorn, ordinary requests timed while a revoke
runs, and the admin Incident pages timed.

The server runs the project's gunicorn.conf.py (2 workers; its 30 s worker timeout unless
``timeout`` says otherwise) on the code of a given tree, as bench/server.py does.
"""

from __future__ import annotations

import re
import secrets
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

from bench.incident_world import ADMIN_EMAIL, PASSWORD, USER_EMAIL, IncidentWorld
from tests.support import servers

CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
# Out of reach: the bench measures waiting for the revoke, not the limits.
SETTINGS: dict[str, object] = {
    name: "1000000 per second" for name in (
        "PAIRING_CODE_CREATE_LIMIT", "PAIRING_GUESS_LIMIT_PER_IP",
        "PAIRING_GUESS_LIMIT_PER_ACCOUNT", "LOGIN_LIMIT_PER_IP", "LOGIN_LIMIT_PER_EMAIL")}
SETTINGS["PAIRING_FAILURE_BREAKER_PER_MINUTE"] = 0
SETTINGS["LOG_LEVEL"] = "WARNING"
# Two workers need a shared rate-limit storage (gunicorn.conf.py refuses memory://); a
# prefix of its own keeps this run's counts apart from anyone else's on the same Redis.
SETTINGS["RATELIMIT_STORAGE_URI"] = "redis://127.0.0.1:6379/0"
SETTINGS["RATELIMIT_KEY_PREFIX"] = f"tsd-incident-bench-{secrets.token_hex(4)}"
ANSWER_TIMEOUT = 120.0  # seconds a request may take before the bench gives up on it


@contextmanager
def gunicorn(directory: Path, *, url: str, secret_key: str, code: Path,
             timeout: int | None = None) -> Iterator[servers.RunningServer]:
    """The app of ``code`` under gunicorn.conf.py, 2 workers, on a free loopback port."""
    from bench.incident_cli import environment

    directory.mkdir(parents=True, exist_ok=True)
    port = servers.free_port()
    env = environment(url, secret_key, directory / "instance", code, SETTINGS)
    command = [sys.executable, "-m", "gunicorn", "--config", str(code / "gunicorn.conf.py"),
               "--bind", f"127.0.0.1:{port}", "--workers", "2", "wsgi:app"]
    if timeout is not None:
        command += ["--timeout", str(timeout)]
    with servers.run_process("gunicorn", command, port=port, log_path=directory / "gunicorn.log",
                            probe="/healthz", env=env, cwd=code) as server:
        yield server


def logged_in(base_url: str, email: str) -> tuple[requests.Session, str]:
    """A browser session logged in as ``email``, and its CSRF token."""
    session = requests.Session()
    session.trust_env = False
    answer = log_in(session, base_url, email)
    if answer.status_code != 302:
        raise RuntimeError(f"login of {email} failed: {answer.status_code}")
    page = session.get(base_url + "/", timeout=ANSWER_TIMEOUT)
    return session, CSRF_META.search(page.text).group(1)


def log_in(session: requests.Session, base_url: str, email: str) -> requests.Response:
    page = session.get(base_url + "/login", timeout=ANSWER_TIMEOUT)
    token = CSRF_META.search(page.text).group(1)
    return session.post(base_url + "/login", timeout=ANSWER_TIMEOUT, allow_redirects=False,
                        data={"email": email, "password": PASSWORD, "csrf_token": token})


# --- ordinary requests while a revoke runs ----------------------------------------------

@dataclass
class Timings:
    """(start, seconds, ok) of each call of one kind of request."""

    calls: list[tuple[float, float, bool]] = field(default_factory=list)

    def between(self, start: float, end: float) -> list[tuple[float, float, bool]]:
        return [call for call in self.calls if start <= call[0] <= end]

    def summary(self, start: float, end: float) -> str:
        calls = self.between(start, end)
        if not calls:
            return "none started"
        seconds = sorted(call[1] for call in calls)
        failed = sum(1 for call in calls if not call[2])
        text = (f"{len(calls)} calls, median {statistics.median(seconds) * 1000:,.0f} ms, "
                f"max {seconds[-1] * 1000:,.0f} ms")
        return text + (f", **{failed} failed**" if failed else "")


def ordinary_requests(base_url: str, world: IncidentWorld) -> dict[str, Callable[[], bool]]:
    """One call of each kind of ordinary request; each returns whether it answered right."""
    user, csrf = logged_in(base_url, USER_EMAIL)
    device = requests.Session()
    device.trust_env = False
    counter = iter(range(10**9))

    def link() -> bool:  # a web code, redeemed by a new printer: a whole pairing_code link
        code = user.post(base_url + "/api/v1/pairing/codes", headers={"X-CSRFToken": csrf},
                         timeout=ANSWER_TIMEOUT)
        if code.status_code != 201:
            return False
        redeemed = device.post(base_url + "/api/v1/pairing/redeem", timeout=ANSWER_TIMEOUT,
                               json={"code": code.json()["code"], "name": "Concurrent",
                                     "device_id": f"concurrent-{next(counter)}"})
        return redeemed.status_code == 201

    def device_me() -> bool:
        answer = device.get(base_url + "/api/v1/device/me", timeout=ANSWER_TIMEOUT,
                            headers={"Authorization": f"Bearer {world.device_token}"})
        return answer.status_code == 200

    def login() -> bool:
        browser = requests.Session()
        browser.trust_env = False
        return log_in(browser, base_url, USER_EMAIL).status_code == 302

    return {"pairing_code link (code + redeem)": link, "GET /api/v1/device/me": device_me,
            "login (GET + POST /login)": login}


def while_running(calls: dict[str, Callable[[], bool]], action: Callable[[], None],
                  settle: float = 1.0) -> tuple[dict[str, Timings], float, float]:
    """Call each request in a loop of its own, run ``action`` (the revoke) meanwhile;
    returns the timings and when the action started and ended."""
    timings = {name: Timings() for name in calls}
    stop = threading.Event()

    def loop(name: str, call: Callable[[], bool]) -> None:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                ok = call()
            except requests.RequestException:
                ok = False
            timings[name].calls.append((started, time.perf_counter() - started, ok))
            time.sleep(0.05)

    threads = [threading.Thread(target=loop, args=item, daemon=True) for item in calls.items()]
    for thread in threads:
        thread.start()
    time.sleep(settle)
    started = time.perf_counter()
    action()
    ended = time.perf_counter()
    time.sleep(settle)
    stop.set()
    for thread in threads:
        thread.join(ANSWER_TIMEOUT)
    return timings, started, ended


# --- the admin Incident pages -----------------------------------------------------------

@dataclass(frozen=True)
class PageTiming:
    seconds: float
    size_kb: float
    status: str  # the HTTP status, or what happened instead
    says: str = ""  # the page's headline


def timed(send: Callable[[], requests.Response]) -> tuple[PageTiming, requests.Response | None]:
    started = time.perf_counter()
    try:
        answer = send()
    except requests.RequestException as error:  # a worker killed mid-request: no answer
        return PageTiming(time.perf_counter() - started, 0,
                          f"no answer ({type(error).__name__})"), None
    seconds = time.perf_counter() - started
    headline = re.search(r"<h1>([^<]*)</h1>", answer.text)
    return PageTiming(seconds, len(answer.content) / 1024, str(answer.status_code),
                      headline.group(1).strip() if headline else ""), answer


def admin_pages(base_url: str, world: IncidentWorld, *, revoke: bool = True,
                ) -> dict[str, PageTiming]:
    """The list, the confirmation page, and (``revoke``) the POST that revokes."""
    admin, csrf = logged_in(base_url, ADMIN_EMAIL)
    window = {"strategy": "ip_match", "since": world.since.isoformat(),
              "until": world.until.isoformat()}
    pages = {}
    pages["GET /admin/incident (list)"], _ = timed(lambda: admin.get(
        base_url + "/admin/incident", params=window, timeout=ANSWER_TIMEOUT))
    pages["POST /admin/incident/revoke (confirmation)"], _ = timed(lambda: admin.post(
        base_url + "/admin/incident/revoke", data={**window, "csrf_token": csrf},
        timeout=ANSWER_TIMEOUT))
    if revoke:
        pages["POST /admin/incident/revoke confirm=yes"], _ = timed(lambda: admin.post(
            base_url + "/admin/incident/revoke", timeout=ANSWER_TIMEOUT,
            data={**window, "csrf_token": csrf, "confirm": "yes"}))
    return pages


def worker_peak_rss_mb(server: servers.RunningServer) -> float:
    """The largest peak RSS (VmHWM) among the gunicorn master's children."""
    peak = 0.0
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    for pid in children.read_text().split():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        found = re.search(r"VmHWM:\s+(\d+) kB", status)
        if found:
            peak = max(peak, int(found.group(1)) / 1024)
    return peak
