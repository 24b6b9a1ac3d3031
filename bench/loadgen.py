"""The two load generators: wrk for the maximum rate, an open-loop Python one for latency.

Both read the same requests file (``write_requests``): one request per line, fields
separated by tabs (method, path, body, then "Name: value" headers), replayed in order and
wrapped around.

* ``wrk_run``: Debian's wrk with bench/wrk/requests.lua, closed loop (each connection sends
  the next request when the last answer came): the most the server answers per second.
* ``open_loop``: requests sent at a fixed rate whatever the server does (a second process,
  ``python -m bench.openloop``), latency measured from the moment each request was *due*,
  so a stalled server cannot hide its queue (no coordinated omission). wrk2 would do this
  but is not in Debian.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LUA = Path(__file__).with_name("wrk") / "requests.lua"
WRK = shutil.which("wrk") or "/usr/bin/wrk"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: str = ""
    headers: tuple[tuple[str, str], ...] = ()

    def line(self) -> str:
        fields = [self.method, self.path, self.body,
                  *(f"{name}: {value}" for name, value in self.headers)]
        if any("\t" in f or "\n" in f for f in fields):
            raise ValueError(f"tab or newline in a request field: {fields!r}")
        return "\t".join(fields)


def json_body(value: dict) -> str:
    return json.dumps(value, separators=(",", ":"))


def write_requests(path: Path, requests: Iterable[Request]) -> Path:
    path.write_text("".join(request.line() + "\n" for request in requests))
    return path


@dataclass
class LoadResult:
    """One run: answers per second, latency percentiles (ms) and answers by status/code."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    counts: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    # open loop only: the rate asked for and how late the generator itself got
    target_rate: float | None = None
    sent_rate: float | None = None
    max_send_lag_ms: float | None = None

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def share(self, *keys: str) -> float:
        """The fraction of answers whose status[:code] key is one of ``keys``."""
        total = sum(self.counts.values())
        return sum(self.counts.get(key, 0) for key in keys) / total if total else 0.0

    def to_json(self) -> dict:
        return {**self.__dict__, "rate": self.rate}


def wrk_available() -> bool:
    return Path(WRK).exists()


def wrk_run(base_url: str, requests_file: Path, *, seconds: float, connections: int = 4,
            threads: int = 1, timeout: float = 10.0) -> LoadResult:
    """Closed-loop maximum rate with wrk (``threads`` walk disjoint slices of the file)."""
    command = [WRK, f"--threads={threads}", f"--connections={connections}",
               f"--duration={max(1, round(seconds))}s", f"--timeout={int(timeout)}s",
               "--script", str(LUA), base_url, "--", str(requests_file)]
    done = subprocess.run(command, capture_output=True, text=True,  # noqa: S603 - our argv
                          timeout=seconds + 60)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRK_RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    data = json.loads(line.removeprefix("WRK_RESULT "))
    return LoadResult(requests=data["requests"], seconds=data["duration_us"] / 1e6,
                      p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000,
                      counts=data["counts"], errors=data["errors"])


def open_loop(base_url: str, requests_file: Path, *, rate: float, seconds: float,
              offset: int = 0) -> LoadResult:
    """Fixed-rate load from a separate Python process (``bench/openloop.py``)."""
    command = [sys.executable, "-m", "bench.openloop", base_url, str(requests_file),
               f"--rate={rate:.3f}", f"--seconds={seconds:.3f}", f"--offset={offset}"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,  # noqa: S603
                          timeout=seconds + 120)
    if done.returncode != 0:
        raise RuntimeError(f"open-loop generator failed:\n{done.stdout}\n{done.stderr}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return LoadResult(**data)


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, int(round(fraction * len(sorted_values))) - 1))
    return sorted_values[index]
