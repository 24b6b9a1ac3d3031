"""Benchmark the hot paths against the app's own ceiling: ``.venv/bin/python bench/run.py``.

For each backend (PostgreSQL in a fresh database dropped afterwards, and SQLite) it seeds a
world with 100 and one with 100,000 linked devices, live announcements and audit rows,
starts gunicorn (2 workers, the project's gunicorn.conf.py) on each, and drives them from
this machine's loopback: wrk for each path's maximum rate, the open-loop generator at half
of it for p50/p99. Every hot path is reported as a share of GET /api/v1/ping measured in the
same round on the same server. Then the worker memory over 100,000 requests, EXPLAIN
ANALYZE of every hot statement, and the generators' own ceiling. docs/performance.md says
how to read the report; ``--soak`` is the 10-minute announce run (bench/soak.py),
``--profile PATH`` samples the workers with py-spy while one path is under load, and
``--cpu-split`` charges each path's CPU per answer to the processes that spent it
(bench/cpu_split.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import explain, loadgen, measure, report, scenarios  # noqa: E402
from bench import server as bench_server  # noqa: E402
from bench.world import REDIS_SETTINGS, SETTINGS, world  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="postgresql,sqlite",
                        help="comma list of postgresql, sqlite (default both)")
    parser.add_argument("--sizes", default="100,100000",
                        help="rows of devices/announcements/audit per world (default 100,100000)")
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement (default 5)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; medians reported")
    parser.add_argument("--memory-requests", type=int, default=100_000,
                        help="requests of the memory run on the largest PostgreSQL world "
                             "(0 skips it)")
    parser.add_argument("--no-explain", action="store_true", help="skip EXPLAIN ANALYZE")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: SQLite, 100 rows, 1 round of 1 s, nothing else")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where reports are written")
    parser.add_argument("--soak", action="store_true", help="the 10-minute announce soak")
    parser.add_argument("--soak-minutes", type=float, default=10.0)
    parser.add_argument("--soak-rate", type=float, default=100.0)
    parser.add_argument("--before-without", metavar="COMMITS", dest="baseline",
                        help="comma list of commits: also run the app without their changes "
                             "to tsd_server/, side by side (before/after the fixes)")
    parser.add_argument("--profile", metavar="PATH", choices=[p.name for p in scenarios.ALL_PATHS],
                        help="py-spy both workers while PATH is under load (PostgreSQL, 100 rows)")
    parser.add_argument("--cpu-split", action="store_true",
                        help="CPU per answer by process (workers, PostgreSQL, Redis, wrk, "
                             "idle) for every path, on the first backend's 100-row world")
    parser.add_argument("--no-rate-limits", action="store_true",
                        help="with --cpu-split: RATELIMIT_ENABLED=false, to show the "
                             "limiter's share")
    args = parser.parse_args(argv)
    if args.quick:
        args.backends, args.sizes, args.seconds, args.rounds = "sqlite", "100", 1.0, 1
        args.memory_requests, args.no_explain = 0, True
    return args


def machine_lines(when: str) -> list[str]:
    load = os.getloadavg()
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return [f"- load average {when}: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
            f"({os.cpu_count()} CPUs, {cpu})"]


@dataclass(frozen=True)
class Variant:
    """One server to measure: which code, and how many rows in its tables."""

    label: str
    size: int
    code: Path = ROOT


def server_settings(backend: str, secret_key: str) -> dict:
    """The bench settings, with rate limits in Redis: two workers on ``memory://`` would
    each count on their own, and production refuses to start that way (gunicorn.conf.py).
    ``backend`` names the database only."""
    return {**SETTINGS, **REDIS_SETTINGS, "SECRET_KEY": secret_key,
            "RATELIMIT_KEY_PREFIX": f"tsd-bench-{backend}-{secret_key[:8]}"}


def run_backend(backend: str, variants: list[Variant], args, lines: list[str], data: dict,
                progress) -> float:
    """Measure one backend's servers interleaved; returns the highest ceiling rate seen."""
    with ExitStack() as stack:
        targets = []
        for variant in variants:
            progress(f"{backend}: {variant.label}: seeding {variant.size:,} rows")
            w = stack.enter_context(world(backend, variant.size))
            server = stack.enter_context(bench_server.gunicorn(
                w.directory / "server", database_url=w.url, code=variant.code,
                settings=server_settings(backend, w.secret_key)))
            targets.append(measure.prepare(w, server, f"{backend} {variant.label}"))
        if not args.quick:
            progress(f"{backend}: warming up")
            measure.measure(targets, rounds=1, seconds=1, half_load=False,
                            progress=lambda _: None)
        samples = measure.measure(targets, rounds=args.rounds, seconds=args.seconds,
                                  progress=progress)
        summaries = measure.summarise(samples)
        data[backend] = {"samples": [{**s.__dict__, "max": s.max.to_json(),
                                      "half": s.half.to_json() if s.half else None}
                                     for s in samples],
                         "summaries": [s.__dict__ for s in summaries]}
        lines += [f"## {backend}", "", *report.results_table(summaries, backend), ""]
        first, last = targets[0].label, targets[-1].label
        if args.baseline and len(targets) > 1:
            lines += [f"Before (without {args.baseline}) and after, side by side in this run:",
                      "",
                      *report.before_after_table(summaries, first, last), ""]
        elif len(targets) > 1:
            lines += [f"Growth ({first} rows → {last} rows, same run, interleaved):", "",
                      *report.growth_table(summaries, first, last), ""]
        largest = targets[-1]
        if backend == "postgresql" and args.memory_requests:
            points = measure.memory_run(largest, total=args.memory_requests, progress=progress)
            data[backend]["memory"] = [p.__dict__ for p in points]
            lines += [*report.memory_lines(points, largest.label), ""]
        if backend == "postgresql" and not args.no_explain:
            progress(f"{backend}: EXPLAIN ANALYZE")
            lines += [*explain.markdown(explain.explain_hot_paths(largest.world),
                                        largest.label), ""]
        for target in targets:
            target.close()
        return max(s.rate for s in summaries if s.path == "ping")


def variants(args, baseline: Path | None) -> list[Variant]:
    sizes = [int(size) for size in args.sizes.split(",")]
    if baseline is None:
        return [Variant(f"{size:,}", size) for size in sizes]
    return [Variant(f"before {sizes[0]:,}", sizes[0], baseline),
            Variant(f"after {sizes[0]:,}", sizes[0])]


def benchmark(args) -> Path:
    progress = print
    started = datetime.now(UTC)
    lines = [f"# tsd-server benchmark, {started:%Y-%m-%d %H:%M} UTC", "",
             *machine_lines("before"),
             f"- gunicorn 2 sync workers; {args.rounds} rounds of {args.seconds:g} s per "
             "measurement; medians", "", "Settings changed for the bench:", "",
             *report.bullet_settings(SETTINGS), "",
             "Rate limits in Redis (two workers; on SQLite too):", "",
             *report.bullet_settings(REDIS_SETTINGS), ""]
    data: dict = {"args": {k: str(v) for k, v in vars(args).items()}}
    ceiling = 0.0
    with ExitStack() as stack:
        baseline = stack.enter_context(bench_server.tree_without(
            args.baseline.split(","))) if args.baseline else None
        for backend in args.backends.split(","):
            ceiling = max(ceiling, run_backend(backend, variants(args, baseline), args, lines,
                                               data, progress))
    if not args.quick:
        with tempfile.TemporaryDirectory() as scratch:
            file = loadgen.write_requests(Path(scratch) / "ping.requests", [
                loadgen.Request("GET", "/api/v1/ping", "", (("X-Forwarded-For", "11.0.0.1"),))])
            proof = measure.generator_ceiling(Path(scratch), file, seconds=args.seconds,
                                              open_loop_rate=ceiling)
        lines += [*report.proof_lines(proof, ceiling), ""]
    lines += [*machine_lines("after"), ""]
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    path = args.out / f"{stamp}.md"
    path.write_text("\n".join(lines))
    (args.out / f"{stamp}.json").write_text(json.dumps(data, indent=1, default=str))
    print("\n".join(lines))
    print(f"\nreport: {path}")
    return path


def profile(args) -> None:
    """py-spy (from the venv) on both workers while one path is under load."""
    py_spy = Path(sys.executable).with_name("py-spy")
    if not py_spy.exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    args.out.mkdir(parents=True, exist_ok=True)
    with world("postgresql", 100) as w, bench_server.gunicorn(
            w.directory / "server", database_url=w.url,
            settings=server_settings("postgresql", w.secret_key)) as server:
        target = measure.prepare(w, server, "postgresql 100")
        pids = measure.worker_pids(server.process.pid)
        seconds = max(5, int(args.seconds))
        outputs = [args.out / f"profile-{args.profile}-{pid}.txt" for pid in pids]
        commands = [[str(py_spy), "record", "--pid", str(pid), "--format", "raw", "--duration",
                     str(seconds), "--output", str(out)]
                    for pid, out in zip(pids, outputs, strict=True)]
        spies = [subprocess.Popen(command, stdout=subprocess.DEVNULL,  # noqa: S603
                                  stderr=subprocess.DEVNULL) for command in commands]
        time.sleep(0.5)
        result = loadgen.wrk_run(server.base_url, target.files[args.profile], seconds=seconds)
        for spy in spies:
            spy.wait(timeout=60)
        print(f"{args.profile}: {result.rate:.0f} req/s under py-spy; {result.counts}")
        target.close()
    from bench.profile_summary import summarise_raw

    print(summarise_raw(outputs))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not loadgen.wrk_available():
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    if args.soak:
        from bench import soak

        soak.run(args)
    elif args.profile:
        profile(args)
    elif args.cpu_split:
        from bench import cpu_split

        cpu_split.run(args, server_settings)
    else:
        benchmark(args)


if __name__ == "__main__":
    main()
