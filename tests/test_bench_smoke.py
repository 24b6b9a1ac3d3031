"""The benchmark still runs (bench/run.py --quick, --cpu-split), and its ceiling stays trivial.

No timing is asserted: the smoke run checks that every path answered the way the bench
means it to (a bench whose requests rot would measure error pages), not how fast.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench import loadgen, scenarios
from tests.support.sent_statements import SESSION, SINGLE, sent_statements

ROOT = Path(__file__).resolve().parents[1]


def test_worlds_take_turns_going_first():
    """Measured second, a world dodges the after-effects of the previous path's load; over
    a whole number of turns each world is first equally often."""
    from bench.measure import round_order

    worlds = ["before", "after"]
    assert [round_order(worlds, n) for n in (1, 2, 3, 4)] == [
        ["before", "after"], ["after", "before"], ["before", "after"], ["after", "before"]]
    three = ["a", "b", "c"]
    assert [round_order(three, n)[0] for n in range(1, 7)] == ["a", "b", "c"] * 2
    assert all(sorted(round_order(three, n)) == three for n in range(1, 7))


def test_ping_answers_ok_without_touching_the_database(app, client):
    with sent_statements(app) as sent:
        answer = client.get("/api/v1/ping")
    assert answer.status_code == 200
    assert answer.get_json() == {"status": "ok"}
    assert sent == {SESSION: [], SINGLE: []}


@pytest.mark.skipif(not loadgen.wrk_available(), reason="wrk is not installed (apt install wrk)")
def test_the_bench_runs_end_to_end_on_sqlite(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick",
                           "--out", str(tmp_path)], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    reports = list(tmp_path.glob("*.md"))
    assert len(reports) == 1
    report = reports[0].read_text()
    for path in scenarios.ALL_PATHS:
        rows = [line for line in report.splitlines() if line.startswith(f"| {path.title} |")]
        assert len(rows) == 1, path.title
        assert "unexpected answers" not in rows[0], rows[0]
        columns = [cell.strip() for cell in rows[0].split("|")]
        assert float(columns[3].replace(",", "")) > 0, rows[0]  # req/s: it answered


@pytest.mark.skipif(not loadgen.wrk_available(), reason="wrk is not installed (apt install wrk)")
def test_the_cpu_split_charges_every_path_to_its_workers(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--cpu-split",
                           "--backends", "sqlite", "--rounds", "1", "--seconds", "1",
                           "--out", str(tmp_path)], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = next(tmp_path.glob("cpu-split-*.md")).read_text()
    for path in scenarios.ALL_PATHS:
        rows = [line for line in report.splitlines() if line.startswith(f"| {path.title} |")]
        assert len(rows) == 1, report
        worker = rows[0].split("|")[4].split("(")[0]
        assert float(worker.replace(",", "")) > 0, rows[0]  # the workers did the work


def _run_on_postgresql(script: str, *arguments: str) -> list[list[str]]:
    """Run a one-process bench script on PostgreSQL; the cells of its table's rows."""
    from tests.support import db_backends
    from tests.support.skips import skip_loudly

    if db_backends.find_postgres() is None:
        skip_loudly(f"PostgreSQL is NOT reachable: bench/{script} was not run.",
                    "TSD_TEST_REQUIRE_POSTGRES")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), *arguments],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert lines, done.stdout
    return [line.split("|") for line in lines[1:]]  # after the header row


def test_the_request_cpu_bench_runs_on_postgresql():
    rows = {cells[1].strip(): cells
            for cells in _run_on_postgresql("request_cpu.py", "--repeat", "20", "--rounds", "1")}
    expected = {path.title: path.expected for path in scenarios.ALL_PATHS}
    expected["GET /api/v1/device/me, its statement answered from memory"] = ("200",)
    expected["GET /api/v1/device/me, its statement on a raw psycopg2 cursor"] = ("200",)
    expected["GET /api/v1/device/me, its statement's call timed"] = ("200",)
    assert rows.keys() == expected.keys(), rows
    for title, cells in rows.items():
        answered = dict(part.split(": ") for part in cells[4].strip().split(", "))
        assert answered and set(answered) <= set(expected[title]), (title, cells[4])
        assert float(cells[2].replace(",", "")) > 0, cells


def test_the_statement_bench_runs_on_postgresql():
    rows = _run_on_postgresql("statements.py", "--repeat", "5", "--rounds", "1")
    # 11, and the two transports where PostgreSQL has a Unix socket this user may use.
    transports = {"Core, a plain engine over loopback TCP",
                  "Core, a plain engine over the Unix socket"}
    variants = {cells[2].strip() for cells in rows}
    assert len(rows) == (13 if transports <= variants else 11), rows
    assert all(float(cells[3].replace(",", "")) > 0 for cells in rows), rows
    # PostgreSQL runs on this host in the test setup, so its CPU is read, not "–".
    assert all(cells[6].strip().replace(",", "").isdigit() for cells in rows), rows


def test_the_redis_storage_bench_runs():
    import redis

    from tests.support.skips import skip_loudly

    try:
        redis.Redis(socket_timeout=2).ping()
    except redis.ConnectionError:
        skip_loudly("Redis is NOT reachable at 127.0.0.1:6379: bench/redis_storage.py was "
                    "not run.")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "redis_storage.py"),
                           "--calls", "20", "--rounds", "1"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [line.split("|") for line in done.stdout.splitlines() if line.startswith("| ")][1:]
    assert [cells[1].strip() for cells in rows] == ["limits RedisStorage",
                                                    "FailFastRedisStorage"], done.stdout
    assert all(float(cells[2]) > 0 and float(cells[3]) >= 0 for cells in rows), done.stdout


def test_device_me_with_its_statement_from_memory_answers_the_same_and_sends_nothing(
        app, client, make_user, link_device):
    """bench/request_cpu.py splits device/me's CPU into its statement and the rest by
    answering the statement from memory: that must leave the answer as it was and send no
    statement, or the split would measure something else."""
    from bench.request_cpu import statement_from_memory
    from tsd_server import single_statement

    owner_id, _, _ = make_user()
    _, token = link_device(owner_id)
    headers = {"Authorization": f"Bearer {token}"}
    with sent_statements(app) as sent:
        expected = client.get("/api/v1/device/me", headers=headers)
    assert expected.status_code == 200
    assert sent[SINGLE], "the real call reads the device"
    real = single_statement.first
    answers = []
    call = statement_from_memory(
        app, [token], lambda: answers.append(client.get("/api/v1/device/me", headers=headers)))
    with sent_statements(app) as sent:
        call()
    assert answers[0].status_code == 200
    assert answers[0].get_json() == expected.get_json()
    assert sent == {SESSION: [], SINGLE: []}
    assert single_statement.first is real


def test_device_me_with_its_statement_on_a_raw_cursor_answers_the_same(
        app, client, make_user, link_device):
    """The raw-cursor variant must do device/me's work (the same answer, the UTC datetimes
    included), and an unknown token must still be refused."""
    if not app.config["DATABASE_URL"].startswith("postgresql"):
        pytest.skip("PostgreSQL only: the bench's raw cursor sends psycopg2's paramstyle")
    from bench.request_cpu import statement_on_raw_cursor

    owner_id, _, _ = make_user()
    _, token = link_device(owner_id)
    headers = {"Authorization": f"Bearer {token}"}
    expected = client.get("/api/v1/device/me", headers=headers)
    assert expected.status_code == 200
    answers = []
    for presented in (token, token[:-4] + "AAAA"):
        statement_on_raw_cursor(app, lambda presented=presented: answers.append(client.get(
            "/api/v1/device/me", headers={"Authorization": f"Bearer {presented}"})))()
    assert answers[0].status_code == 200
    assert answers[0].get_json() == expected.get_json()
    assert answers[1].status_code == 401


def test_the_incident_scale_bench_runs_on_sqlite(tmp_path):
    """bench/incident_scale.py --quick: every command and page answered as meant, the
    revokes revoked the world's active devices, and no ordinary request failed."""
    import redis

    from tests.support.skips import skip_loudly

    try:
        redis.Redis(socket_timeout=2).ping()
    except redis.ConnectionError:
        skip_loudly("Redis is NOT reachable at 127.0.0.1:6379: bench/incident_scale.py (two "
                    "gunicorn workers share their rate limits there) was not run.")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "incident_scale.py"), "--quick",
                           "--backends", "sqlite", "--before", "none", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = next(tmp_path.glob("incident-scale-*.md")).read_text()
    assert "## Problems" not in report and "failed" not in report, report
    tables: dict[str, list[list[str]]] = {}
    for part in report.split("\n## ")[1:]:
        title, _, body = part.partition("\n")
        tables[title] = [[cell.strip() for cell in line.split("|")[1:-1]]
                         for line in body.splitlines() if line.startswith("| sqlite |")]
    commands = {cells[2] for cells in tables["Command line"]}
    assert commands == {"incident affected (table)", "incident affected --format csv",
                        "incident affected --format json", "incident revoke (dry run)",
                        "incident revoke --yes", "discovery disable ip_match"}, report
    pages = {cells[3]: cells for cells in tables["Admin Incident pages (gunicorn, worker "
                                                 "timeout 30 s)"]}
    assert len(pages) == 3 and all(cells[4] == "200" for cells in pages.values()), report
    done_page = pages["POST /admin/incident/revoke confirm=yes"]
    revoked = int(done_page[7].split()[1])  # "Revoked N device(s)"
    assert revoked > 0 and int(done_page[9].replace(",", "")) == revoked, report
    during = tables["Ordinary requests while `incident revoke --yes` runs (gunicorn, 2 workers)"]
    # a link, a device/me and a login were each sent while the revoke ran
    assert len(during) == 3 and all("calls" in cells[6] for cells in during), report
