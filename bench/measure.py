"""Measuring the running servers: rounds of max rate and half-load latency, memory, proof.

Worlds of one backend are measured interleaved: within a round, each path is measured on
every world before the next path starts, and every round measures the ceiling again, so
a ratio (or a growth figure) always compares numbers taken moments apart in one run. The
worlds take turns going first (``round_order``): the first measurement of a path follows
the previous one's load, whose after-effects (PostgreSQL flushing the WAL of a write path,
say) would otherwise always fall on the same world.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, text

from bench import loadgen, scenarios
from bench.loadgen import LoadResult
from bench.world import World
from tests.support.servers import RunningServer


@dataclass
class Target:
    """One world with its server and the requests file of each path."""

    world: World
    server: RunningServer
    label: str
    files: dict[str, Path] = field(default_factory=dict)
    engine: object | None = None  # PostgreSQL: for WAL positions

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()  # type: ignore[attr-defined]

    def wal_position(self) -> int | None:
        if self.engine is None:
            return None
        with self.engine.connect() as connection:  # type: ignore[attr-defined]
            return int(connection.execute(text(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')")).scalar_one())


def prepare(world: World, server: RunningServer, label: str) -> Target:
    cookie = scenarios.log_in(server.base_url)
    target = Target(world, server, label)
    for path in scenarios.ALL_PATHS:
        target.files[path.name] = loadgen.write_requests(
            world.directory / f"{path.name}.requests",
            scenarios.requests_for(path.name, world, cookie))
    target.files["mixed"] = loadgen.write_requests(world.directory / "mixed.requests",
                                                   scenarios.mixed(world, cookie))
    if world.backend == "postgresql":
        target.engine = create_engine(world.url, pool_size=1)
    return target


@dataclass
class Sample:
    path: str
    world: str
    round: int
    max: LoadResult
    half: LoadResult | None
    wal_bytes_per_request: float | None


def round_order(targets: list[Target], number: int) -> list[Target]:
    """The worlds in the order round ``number`` (from 1) measures them: rotated by one each
    round, so each goes first equally often over a whole number of turns."""
    shift = (number - 1) % len(targets) if targets else 0
    return targets[shift:] + targets[:shift]


def measure(targets: list[Target], *, rounds: int, seconds: float, half_load: bool = True,
            progress=print) -> list[Sample]:
    samples: list[Sample] = []
    for number in range(1, rounds + 1):
        for path in scenarios.ALL_PATHS:
            for target in round_order(targets, number):
                before = target.wal_position()
                peak = loadgen.wrk_run(target.server.base_url, target.files[path.name],
                                       seconds=seconds)
                after = target.wal_position()
                half = None
                if half_load:
                    # Start where wrk ended, so device codes are not polled again too soon.
                    half = loadgen.open_loop(target.server.base_url, target.files[path.name],
                                             rate=max(1.0, peak.rate / 2), seconds=seconds,
                                             offset=peak.requests)
                wal = (after - before) / peak.requests if before is not None and \
                    after is not None and peak.requests else None
                samples.append(Sample(path.name, target.label, number, peak, half, wal))
                progress(f"  round {number} {target.label:>18} {path.name:<13} "
                         f"{peak.rate:8.0f}/s  half-load p99 "
                         f"{half.p99_ms if half else float('nan'):6.1f} ms  {peak.counts}")
    return samples


@dataclass
class Summary:
    """The medians over rounds of one path in one world."""

    path: str
    world: str
    rate: float
    ratio: float | None  # path rate / ceiling rate of the same round, median over rounds
    p50_ms: float | None
    p99_ms: float | None
    wal_bytes_per_request: float | None
    unexpected: dict[str, int]
    counts: dict[str, int]


def summarise(samples: list[Sample]) -> list[Summary]:
    ceilings = {(s.world, s.round): s.max.rate for s in samples if s.path == "ping"}
    keys = list(dict.fromkeys((s.path, s.world) for s in samples))
    summaries = []
    for path, world in keys:
        mine = [s for s in samples if s.path == path and s.world == world]
        ratios = [s.max.rate / ceilings[(world, s.round)] for s in mine
                  if ceilings.get((world, s.round))]
        counts: dict[str, int] = {}
        for s in mine:
            for result in (s.max, s.half):
                for key, n in (result.counts if result else {}).items():
                    counts[key] = counts.get(key, 0) + n
        expected = scenarios.BY_NAME[path].expected
        halves = [s.half for s in mine if s.half is not None]
        wal = [s.wal_bytes_per_request for s in mine if s.wal_bytes_per_request is not None]
        summaries.append(Summary(
            path=path, world=world, rate=statistics.median(s.max.rate for s in mine),
            ratio=statistics.median(ratios) if ratios else None,
            p50_ms=statistics.median(h.p50_ms for h in halves) if halves else None,
            p99_ms=statistics.median(h.p99_ms for h in halves) if halves else None,
            wal_bytes_per_request=statistics.median(wal) if wal else None,
            unexpected={k: n for k, n in counts.items() if k not in expected},
            counts=counts))
    return summaries


# --- memory -------------------------------------------------------------------------------

def worker_pids(master: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{master}/task").iterdir():
        text_ = (task / "children").read_text().split()
        children.extend(int(pid) for pid in text_)
    return sorted(children)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class MemoryPoint:
    requests: int
    rss_kib: dict[int, int]


def memory_run(target: Target, *, total: int, chunk_seconds: float = 2.0,
               progress=print) -> list[MemoryPoint]:
    """Mixed load in chunks; worker RSS after each chunk (and the worker pids stay put)."""
    master = target.server.process.pid
    pids = worker_pids(master)
    loadgen.wrk_run(target.server.base_url, target.files["mixed"], seconds=chunk_seconds)
    points = [MemoryPoint(0, {pid: rss_kib(pid) for pid in pids})]
    done = 0
    while done < total:
        result = loadgen.wrk_run(target.server.base_url, target.files["mixed"],
                                 seconds=chunk_seconds)
        done += result.requests
        if worker_pids(master) != pids:
            raise RuntimeError("a gunicorn worker was replaced during the memory run")
        points.append(MemoryPoint(done, {pid: rss_kib(pid) for pid in pids}))
        progress(f"  memory: {done:>7} requests, RSS KiB {points[-1].rss_kib}")
    return points


def at_or_after(points: list[MemoryPoint], requests: int) -> MemoryPoint:
    return next((p for p in points if p.requests >= requests), points[-1])


# --- the load generators' own ceiling ---------------------------------------------------------

NGINX_LOCATION = ('location / { keepalive_timeout 0; default_type application/json; '
                  'return 200 \'{"status":"ok"}\'; }')


@dataclass
class GeneratorProof:
    wrk: LoadResult
    open_loop: LoadResult


def generator_ceiling(directory: Path, requests_file: Path, *, seconds: float,
                      open_loop_rate: float) -> GeneratorProof:
    """wrk and the open-loop generator against nginx answering a fixed JSON body.

    nginx does far less per request than the app, so what the generators reach there is
    (a lower bound of) their own ceiling; connections are closed per request as gunicorn
    does.
    """
    from bench.nginx import static_json

    with static_json(directory, NGINX_LOCATION) as server:
        time.sleep(0.2)
        peak = loadgen.wrk_run(server.base_url, requests_file, seconds=seconds)
        steady = loadgen.open_loop(server.base_url, requests_file, rate=open_loop_rate,
                                   seconds=seconds)
    return GeneratorProof(peak, steady)
