"""Incident response at the scale of a real incident: ``incident affected|revoke``,
``discovery disable``, the admin Incident pages, and what a revoke blocks.

    .venv/bin/python bench/incident_scale.py            # 1,000 / 10,000 / 50,000 devices
    .venv/bin/python bench/incident_scale.py --quick    # a smoke run: one small world

Each world (bench/incident_world.py) is seeded once per backend and size; every run that
changes it gets a fresh copy. The code under test runs side by side with ``--before``
(default HEAD: the committed tsd_server/, exported read-only with ``git archive``), the
two alternating which goes first. Writes a Markdown report to ``--out`` and stdout;
exits 1 if a command failed or a revoke revoked other than the world's active devices.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, text  # noqa: E402

from bench import incident_cli, incident_web  # noqa: E402
from bench.incident_world import IncidentWorld, Sizes, copy_of, drop_copy, seed  # noqa: E402
from bench.measure import round_order  # noqa: E402
from tests.support import db_backends  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SECRET = secrets.token_hex(32)
problems: list[str] = []


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small world (smoke run)")
    parser.add_argument("--backends", default="postgresql,sqlite")
    parser.add_argument("--sizes", default="1000,10000,50000",
                        help="devices linked in the window (comma list)")
    parser.add_argument("--background", type=int, default=200_000,
                        help="devices and audit rows outside the window")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each CLI command")
    parser.add_argument("--before", default="HEAD",
                        help="git revision of the 'before' code, or 'none'")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.background, args.repeat = "300", 3000, 1
    return args


@contextmanager
def world(backend: str, sizes: Sizes, directory: Path):
    if backend == "sqlite":
        path = directory / f"world-{sizes.affected}.sqlite3"
        url = f"sqlite:///{path}"
        db_backends.migrate(url)
        try:
            yield seed(backend, url, sizes)
        finally:
            path.unlink(missing_ok=True)
        return
    role = db_backends.find_postgres()
    if role is None:
        raise RuntimeError("PostgreSQL is not reachable on 127.0.0.1:5432")
    with db_backends.migrated_postgres_database(role, "tsd_incident") as url:
        yield seed(backend, url, sizes)


@contextmanager
def fresh(w: IncidentWorld, directory: Path, name: str):
    url = copy_of(w, directory, name)
    try:
        yield url
    finally:
        drop_copy(w, url)


def counts(url: str) -> dict[str, int]:
    """What a revoke (or a switch-off) left: devices marked for re-link, offers left."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {"needs_relink": conn.scalar(text(
                "SELECT count(*) FROM devices WHERE needs_relink")),
                "offers_left": conn.scalar(text("SELECT count(*) FROM ip_match_offers"))}
    finally:
        engine.dispose()


def env_for(url: str, directory: Path, code: Path) -> dict[str, str]:
    return incident_cli.environment(url, SECRET, directory / "instance", code)


def window_args(w: IncidentWorld) -> list[str]:
    return ["--strategy", "ip_match", "--since", w.since.isoformat(),
            "--until", w.until.isoformat()]


def checked(run: incident_cli.Run, what: str) -> incident_cli.Run:
    if run.returncode != 0:
        problems.append(f"{what}: exit {run.returncode}: {run.stderr[-500:]}")
    return run


def measure_cli(w: IncidentWorld, versions: dict[str, Path], directory: Path,
                repeat: int) -> list[dict]:
    """Wall time and peak RSS of each command, per version (medians over ``repeat``)."""
    window = window_args(w)
    commands = {"incident affected (table)": ["incident", "affected", *window],
                "incident affected --format csv": ["incident", "affected", *window,
                                                   "--format", "csv"],
                "incident affected --format json": ["incident", "affected", *window,
                                                    "--format", "json"],
                "incident revoke (dry run)": ["incident", "revoke", *window]}
    runs: dict[tuple[str, str], list[incident_cli.Run]] = {}
    names = list(versions)
    for number in range(1, repeat + 1):
        for version in round_order(names, number):
            code = versions[version]
            for title, arguments in commands.items():
                run = incident_cli.flask(arguments, env_for(w.url, directory, code), code)
                runs.setdefault((title, version), []).append(checked(run, f"{version} {title}"))
            with fresh(w, directory, f"revoke_{version}_{number}") as url:
                run = checked(incident_cli.flask([*commands["incident revoke (dry run)"],
                                                  "--yes"], env_for(url, directory, code), code),
                              f"{version} revoke --yes")
                expected = f"Revoked {w.expected['active']} device(s)"
                if run.returncode == 0 and expected not in run.stdout:
                    problems.append(f"{version} revoke --yes: {run.stdout[:200]!r}, "
                                    f"expected {expected!r}")
                runs.setdefault(("incident revoke --yes", version), []).append(run)
            with fresh(w, directory, f"disable_{version}_{number}") as url:
                run = checked(incident_cli.flask(
                    ["discovery", "disable", "ip_match", "--reason", "bench"],
                    env_for(url, directory, code), code), f"{version} discovery disable")
                if counts(url)["offers_left"]:
                    problems.append(f"{version} discovery disable left offers")
                runs.setdefault(("discovery disable ip_match", version), []).append(run)
    rows = []
    for title in [*commands, "incident revoke --yes", "discovery disable ip_match"]:
        row = {"command": title}
        for version in names:
            items = runs[(title, version)]
            row[version] = (statistics.median(r.seconds for r in items),
                            max(r.peak_rss_mb for r in items),
                            max(len(r.stdout) for r in items))
        rows.append(row)
    return rows


def measure_phases(w: IncidentWorld, versions: dict[str, Path], directory: Path) -> dict:
    found = {}
    for version, code in versions.items():
        with fresh(w, directory, f"phases_{version}") as url:
            done = subprocess.run(  # noqa: S603
                [sys.executable, str(ROOT / "bench" / "incident_phases.py"), url,
                 w.since.isoformat(), w.until.isoformat()], capture_output=True, text=True,
                env=env_for(url, directory, code), cwd=code, check=False)
            if done.returncode != 0:
                problems.append(f"{version} phases: {done.stderr[-500:]}")
                continue
            found[version] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def measure_blocking(w: IncidentWorld, versions: dict[str, Path], directory: Path) -> dict:
    """Ordinary requests against gunicorn while ``incident revoke --yes`` runs."""
    found = {}
    for version, code in versions.items():
        with fresh(w, directory, f"blocking_{version}") as url, \
                incident_web.gunicorn(directory / f"blocking-{version}", url=url,
                                      secret_key=SECRET, code=code) as server:
            calls = incident_web.ordinary_requests(server.base_url, w)
            revoke: dict[str, incident_cli.Run] = {}

            def action(url=url, code=code, revoke=revoke, version=version) -> None:
                revoke["run"] = checked(incident_cli.flask(
                    ["incident", "revoke", *window_args(w), "--yes"],
                    env_for(url, directory, code), code), f"{version} revoke under load")

            timings, started, ended = incident_web.while_running(calls, action)
            found[version] = {"revoke_s": ended - started, "requests": {
                name: (item.summary(0, started), item.summary(started, ended))
                for name, item in timings.items()}}
    return found


def measure_pages(w: IncidentWorld, versions: dict[str, Path], directory: Path) -> dict:
    found = {}
    for version, code in versions.items():
        with fresh(w, directory, f"pages_{version}") as url, \
                incident_web.gunicorn(directory / f"pages-{version}", url=url,
                                      secret_key=SECRET, code=code) as server:
            pages = incident_web.admin_pages(server.base_url, w)
            found[version] = {"pages": pages,
                              "worker_rss_mb": incident_web.worker_peak_rss_mb(server),
                              "committed": counts(url)["needs_relink"]}
    return found


def measure_killed_revoke(w: IncidentWorld, directory: Path) -> dict:
    """The current code's revoke POST on a server whose worker timeout (1 s) cuts it off:
    what the admin sees, and what the database kept."""
    with fresh(w, directory, "killed") as url, \
            incident_web.gunicorn(directory / "killed", url=url, secret_key=SECRET,
                                  code=ROOT, timeout=1) as server:
        admin, csrf = incident_web.logged_in(server.base_url, incident_web.ADMIN_EMAIL)
        window = {"strategy": "ip_match", "since": w.since.isoformat(),
                  "until": w.until.isoformat(), "csrf_token": csrf, "confirm": "yes"}
        page, _ = incident_web.timed(lambda: admin.post(
            server.base_url + "/admin/incident/revoke", data=window,
            timeout=incident_web.ANSWER_TIMEOUT))
        time.sleep(2)  # the killed worker's connection closes; its transaction rolls back
        return {"page": page, "committed": counts(url)["needs_relink"]}


def ratio(before: float, after: float) -> str:
    return f"{after / before:.2f}" if before else "–"


def report(results: list[dict], names: list[str], args: argparse.Namespace) -> str:
    lines = [f"# Incident response at scale ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)", "",
             f"Background: {args.background:,} devices and audit rows outside the window. "
             f"Versions: {', '.join(names)} (before = {args.before}). CLI: median of "
             f"{args.repeat} run(s), peak RSS the largest.", ""]
    lines += ["## Command line", "", "| backend | affected | command | "
              + " | ".join(f"{v} s | {v} RSS MB" for v in names)
              + (" | after/before time |" if len(names) == 2 else " |"), "|---" * (
                  3 + 2 * len(names) + (len(names) == 2)) + "|"]
    for result in results:
        for row in result["cli"]:
            cells = [f"{row[v][0]:.2f} | {row[v][1]:.0f}" for v in names]
            extra = f" {ratio(row[names[0]][0], row[names[1]][0])} |" if len(names) == 2 else ""
            lines.append(f"| {result['backend']} | {result['affected']:,} | {row['command']} | "
                         + " | ".join(cells) + " |" + extra)
    lines += ["", "## The revoke's transaction and locks (in process)", "",
              "| backend | affected | version | revoked | withdrawn | switches' lock held ms "
              "| transaction open s | whole revoke s |", "|---" * 8 + "|"]
    for result in results:
        for version, item in result["phases"].items():
            lines.append(f"| {result['backend']} | {result['affected']:,} | {version} | "
                         f"{item['revoked']:,} | {item['withdrawn']:,} | "
                         f"{item['switch_lock_ms']:.1f} | {item['transaction_s']:.2f} | "
                         f"{item['total_s']:.2f} |")
    lines += ["", "## Ordinary requests while `incident revoke --yes` runs (gunicorn, 2 workers)",
              "", "| backend | affected | version | revoke (CLI) s | request | before the revoke "
              "| started during the revoke |", "|---" * 7 + "|"]
    for result in results:
        for version, item in result["blocking"].items():
            for name, (idle, during) in item["requests"].items():
                lines.append(f"| {result['backend']} | {result['affected']:,} | {version} | "
                             f"{item['revoke_s']:.2f} | {name} | {idle} | {during} |")
    lines += ["", "## Admin Incident pages (gunicorn, worker timeout 30 s)", "",
              "| backend | affected | version | page | status | s | KB | headline | "
              "worker peak RSS MB | devices revoked in the database |", "|---" * 10 + "|"]
    for result in results:
        for version, item in result["pages"].items():
            for title, page in item["pages"].items():
                lines.append(f"| {result['backend']} | {result['affected']:,} | {version} | "
                             f"{title} | {page.status} | {page.seconds:.2f} | "
                             f"{page.size_kb:,.0f} | {page.says} | {item['worker_rss_mb']:.0f} "
                             f"| {item['committed']:,} |")
    killed = [r for r in results if r.get("killed")]
    if killed:
        lines += ["", "## The revoke POST cut off by a 1 s worker timeout (current code)", "",
                  "| backend | affected | answer | s | headline | devices revoked in the "
                  "database |", "|---" * 6 + "|"]
        for result in killed:
            page = result["killed"]["page"]
            lines.append(f"| {result['backend']} | {result['affected']:,} | {page.status} | "
                         f"{page.seconds:.2f} | {page.says} | "
                         f"{result['killed']['committed']:,} |")
    if problems:
        lines += ["", "## Problems", "", *[f"- {problem}" for problem in problems]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    sizes = [int(size) for size in args.sizes.split(",")]
    results = []
    with ExitStack() as stack:
        versions = {}
        if args.before != "none":
            versions["before"] = stack.enter_context(incident_cli.code_at(args.before))
        versions["after"] = ROOT
        names = list(versions)
        args.out.mkdir(parents=True, exist_ok=True)
        partial = args.out / f"incident-scale-{datetime.now(UTC):%Y%m%d-%H%M%S}.md"
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tsd-inc-")))
        for backend in backends:
            for size in sizes:
                started = time.perf_counter()
                with world(backend, Sizes(size, args.background), directory) as w:
                    print(f"{backend} {size:,}: seeded in {time.perf_counter() - started:.0f} s",
                          file=sys.stderr, flush=True)
                    result = {"backend": backend, "affected": size,
                              "cli": measure_cli(w, versions, directory, args.repeat),
                              "phases": measure_phases(w, versions, directory),
                              "blocking": measure_blocking(w, versions, directory),
                              "pages": measure_pages(w, versions, directory)}
                    if size == max(sizes):
                        result["killed"] = measure_killed_revoke(w, directory)
                    results.append(result)
                partial.write_text(report(results, names, args))  # kept if a later one fails
                print(f"{backend} {size:,}: done after {time.perf_counter() - started:.0f} s",
                      file=sys.stderr, flush=True)
    text_report = report(results, names, args)
    partial.write_text(text_report)
    print(text_report)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
