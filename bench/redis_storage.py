"""limits' RedisStorage beside the project's: ``.venv/bin/python bench/redis_storage.py``.

What ``tsd_server/redis_storage.py`` adds to every rate-limited request while Redis answers:
a clock read and a check before each storage call, and an exception handler around it.
Both storages take the same moving-window hit (the project's strategy) on one key of the
machine's Redis (127.0.0.1:6379, ``--uri``), with a limit out of reach, N times per round
(``--calls``, default 5,000); the rounds alternate between the two (``--rounds``, default
5) so both see the same machine. Reported per storage: the median µs per hit, wall clock
and this process's CPU. Redis's own time is in the wall figure only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from limits import parse
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tsd_server.redis_storage import FailFastRedisStorage  # noqa: E402

LIMIT = parse("1000000 per minute")


def one_round(limiter: MovingWindowRateLimiter, key: str, calls: int) -> tuple[float, float]:
    """µs per hit: (wall, process CPU)."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        if not limiter.hit(LIMIT, key):
            raise SystemExit("the limit was reached: raise LIMIT")
    return ((time.perf_counter() - wall) / calls * 1e6,
            (time.process_time() - cpu) / calls * 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    storages = {"limits RedisStorage": RedisStorage(args.uri, wrap_exceptions=True,
                                                    key_prefix="BENCH-LIB"),
                "FailFastRedisStorage": FailFastRedisStorage(args.uri, wrap_exceptions=True,
                                                             key_prefix="BENCH-OURS")}
    limiters = {name: MovingWindowRateLimiter(storage) for name, storage in storages.items()}
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in storages}
    for limiter in limiters.values():  # warm up: scripts loaded, connections open
        one_round(limiter, "bench", 200)
    for number in range(args.rounds):
        order = list(limiters) if number % 2 == 0 else list(reversed(limiters))
        for name in order:
            figures[name].append(one_round(limiters[name], "bench", args.calls))
    for storage in storages.values():
        storage.reset()

    print(f"{args.rounds} rounds of {args.calls:,} moving-window hits on {args.uri}, medians")
    print("| storage | µs per hit (wall) | µs per hit (CPU, this process) |")
    print("|---|---:|---:|")
    for name, rows in figures.items():
        wall = statistics.median(row[0] for row in rows)
        cpu = statistics.median(row[1] for row in rows)
        print(f"| {name} | {wall:.1f} | {cpu:.1f} |")


if __name__ == "__main__":
    main()
