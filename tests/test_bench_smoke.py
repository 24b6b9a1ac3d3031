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


def test_the_statement_bench_runs_on_postgresql():
    from tests.support import db_backends
    from tests.support.skips import skip_loudly

    if db_backends.find_postgres() is None:
        skip_loudly("PostgreSQL is NOT reachable: bench/statements.py was not run.",
                    "TSD_TEST_REQUIRE_POSTGRES")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "statements.py"),
                           "--repeat", "5", "--rounds", "1"], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| group")]
    assert len(rows) == 8, done.stdout
    assert all(float(row.split("|")[3].replace(",", "")) > 0 for row in rows), done.stdout
