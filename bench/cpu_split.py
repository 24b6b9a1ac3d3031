"""Where each path's CPU goes: ``.venv/bin/python bench/run.py --cpu-split``.

A share of the ceiling says how much dearer a path is than ``/api/v1/ping``, not where the
extra cost lies. This drives each path with wrk (as the main run does, one world of 100
rows) and reads, before and after, the CPU time of every process that takes part: the
gunicorn workers, PostgreSQL's processes, Redis, wrk itself, and the machine's busy and
idle time (``/proc/<pid>/stat``, ``/proc/stat``). Divided by the answers wrk counted, that
is the CPU each request cost in each process. "idle" is CPU time nobody used while the
load ran: with two sync workers it is time both spent waiting (a commit's fsync), which a
path pays in throughput although no process burns it.

``--no-rate-limits`` runs the server with ``RATELIMIT_ENABLED=false`` (and
``ENV=development``, without which that is refused) to show what
Flask-Limiter's bookkeeping costs each path. Run it on a quiet machine: every process
named ``postgres`` or ``redis-server`` is counted, whoever it serves.
"""

from __future__ import annotations

import os
import resource
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import loadgen, measure, scenarios
from bench import server as bench_server
from bench.world import world

TICKS = os.sysconf("SC_CLK_TCK")
GROUPS = ("worker", "postgres", "redis", "wrk", "other", "idle")


def _process_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (0 when it has gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def _pids_by_name(*names: str) -> dict[str, list[int]]:
    """The processes of each name (``/proc/<pid>/comm``), from one walk of /proc."""
    pids: dict[str, list[int]] = {name: [] for name in names}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                name = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if name in pids:
                pids[name].append(int(entry.name))
    return pids


def _machine_seconds() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the whole machine since boot; iowait counts as idle."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    user, nice, system, idle, iowait, irq, softirq = values
    return (user + nice + system + irq + softirq) / TICKS, (idle + iowait) / TICKS


def _snapshot(workers: list[int]) -> dict[str, float]:
    named = _pids_by_name("postgres", "redis-server")
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy, idle = _machine_seconds()
    return {"worker": sum(_process_seconds(pid) for pid in workers),
            "postgres": sum(_process_seconds(pid) for pid in named["postgres"]),
            "redis": sum(_process_seconds(pid) for pid in named["redis-server"]),
            "wrk": children.ru_utime + children.ru_stime, "busy": busy, "idle": idle}


@dataclass
class Split:
    path: str
    rate: float
    micros: dict[str, float]  # CPU microseconds per answer, by GROUPS


def split_one(base_url: str, requests_file: Path, workers: list[int], path: str,
              seconds: float) -> Split:
    before = _snapshot(workers)
    result = loadgen.wrk_run(base_url, requests_file, seconds=seconds)
    after = _snapshot(workers)
    per = {key: (after[key] - before[key]) * 1e6 / max(1, result.requests) for key in before}
    named = per["worker"] + per["postgres"] + per["redis"] + per["wrk"]
    micros = {key: per[key] for key in ("worker", "postgres", "redis", "wrk", "idle")}
    micros["other"] = max(0.0, per["busy"] - named)  # kernel work not charged to a process
    unexpected = {k: n for k, n in result.counts.items()
                  if k not in scenarios.BY_NAME[path].expected}
    if unexpected:
        raise RuntimeError(f"{path}: unexpected answers {unexpected}")
    return Split(path, result.rate, micros)


def markdown(splits: list[Split], label: str) -> list[str]:
    """Medians over rounds, one row per path, and each path's extra cost over the ceiling."""
    paths = list(dict.fromkeys(s.path for s in splits))
    medians = {}
    for path in paths:
        mine = [s for s in splits if s.path == path]
        medians[path] = (statistics.median(s.rate for s in mine),
                         {g: statistics.median(s.micros[g] for s in mine) for g in GROUPS})
    ceiling_rate, ceiling = medians["ping"]
    lines = [f"CPU per answer ({label}; µs, medians of {len(splits) // len(paths)} rounds; "
             "+ is the extra over the ceiling's):", "",
             "| path | req/s | share | worker | PostgreSQL | Redis | wrk | other | idle |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for path in paths:
        rate, micros = medians[path]
        cells = []
        for group in GROUPS:
            extra = micros[group] - ceiling[group]
            cells.append(f"{micros[group]:,.0f}" if path == "ping"
                         else f"{micros[group]:,.0f} ({extra:+,.0f})")
        lines.append(f"| {scenarios.BY_NAME[path].title} | {rate:,.0f} | "
                     f"{rate / ceiling_rate:.2f} | " + " | ".join(cells) + " |")
    return lines


def run(args, settings_for) -> Path:
    """Measure every path on a fresh 100-row world of ``args.backends``' first backend."""
    backend = args.backends.split(",")[0]
    label = f"{backend} 100" + (", rate limits off" if args.no_rate_limits else "")
    splits: list[Split] = []
    with world(backend, 100) as w:
        settings = settings_for(backend, w.secret_key)
        if args.no_rate_limits:
            # Refused in production (tsd_server/config.py); ENV changes nothing else here,
            # as the secret key is given.
            settings.update(RATELIMIT_ENABLED=False, ENV="development")
        with bench_server.gunicorn(w.directory / "server", database_url=w.url,
                                   settings=settings) as server:
            target = measure.prepare(w, server, label)
            workers = measure.worker_pids(server.process.pid)
            loadgen.wrk_run(server.base_url, target.files["ping"], seconds=1)  # warm up
            for number in range(1, args.rounds + 1):
                for path in scenarios.ALL_PATHS:
                    split = split_one(server.base_url, target.files[path.name], workers,
                                      path.name, args.seconds)
                    splits.append(split)
                    print(f"  round {number} {path.name:<13} {split.rate:8.0f}/s  "
                          + "  ".join(f"{g} {split.micros[g]:5.0f}" for g in GROUPS))
            target.close()
    lines = [f"# CPU split, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC", "",
             *markdown(splits, label), ""]
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"cpu-split-{datetime.now(UTC):%Y%m%d-%H%M%S}.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"\nreport: {out}")
    return out
